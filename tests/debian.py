"""Debian packages a test needs (PgBouncer, Chromium), installed with apt-get when missing.

As root, or with `sudo -n`; a test skips only when there is no apt-get or no way to run it as root, and a
failed install fails it.
"""

import os
import shutil
import subprocess
from collections.abc import Callable

import pytest

INSTALL_TIMEOUT_SECONDS = 600


def _apt_get(*args: str) -> subprocess.CompletedProcess:
    command = ["apt-get", "-o", "DPkg::Lock::Timeout=300", *args]
    if os.geteuid() != 0:
        command = ["sudo", "-n", *command]
    return subprocess.run(
        command,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_SECONDS,
    )


def ensure_package(package: str, find: Callable[[], str | None]) -> str:
    """What find() returns (the package's binary), after installing the package when find() found nothing."""
    found = find()
    if found:
        return found
    if shutil.which("apt-get") is None:
        pytest.skip(f"{package} is not installed and there is no apt-get to install it: install {package}")
    if os.geteuid() != 0 and (
        shutil.which("sudo") is None or subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode
    ):
        pytest.skip(f"{package} is not installed and apt-get needs root: sudo apt-get install {package}")
    done = _apt_get("install", "-y", "--no-install-recommends", package)
    if done.returncode != 0 and "Unable to locate package" in done.stderr + done.stdout:
        _apt_get("update")  # a fresh image without package lists
        done = _apt_get("install", "-y", "--no-install-recommends", package)
    installed = find()
    assert done.returncode == 0 and installed, f"apt-get install {package} failed:\n{done.stdout}\n{done.stderr}"
    return installed
