"""`make run` (python -m suite) listens where the *_PORT variables and LOCAL_PG_PORT say, refuses a taken port
(or one given twice) by naming its variable, before anything starts."""

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kernel.localdb import local_postgres_for
from kernel.settings import ROOT
from tests.fixtures_suite import free_suite_ports


@contextlib.contextmanager
def _held_port(port: int = 0):
    """A port something else listens on."""
    with contextlib.closing(socket.socket()) as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        yield holder.getsockname()[1]


def _suite_env(run_dir: Path, ports: dict[str, int], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_PORT") and not k.endswith("_ADDR")}
    env.update({f"{name.upper()}_PORT": str(port) for name, port in ports.items()}, RUN_DIR=str(run_dir), **extra)
    return env


def _refused(env: dict[str, str]) -> str:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "suite"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert time.monotonic() - started < 20  # refused up front, nothing waited for
    assert "Traceback" not in done.stderr
    return done.stderr


@pytest.mark.parametrize("component", ["redemption", "gateway"])
def test_a_taken_port_is_refused_naming_its_variable_before_anything_starts(database_url, tmp_path, component):
    ports = free_suite_ports()
    with _held_port() as taken:
        ports[component] = taken
        message = _refused(_suite_env(tmp_path, ports, DATABASE_URL=database_url))
    assert f"{component.upper()}_PORT ({component}): port {taken} on 127.0.0.1 is already in use" in message
    assert not (tmp_path / "logs").exists()  # no component was started


def test_a_taken_metrics_port_names_the_service_variable(database_url, tmp_path):
    ports = free_suite_ports()
    with _held_port() as taken:
        ports["auth"] = taken - 1000
        message = _refused(_suite_env(tmp_path, ports, DATABASE_URL=database_url))
    assert f"AUTH_PORT + 1000 (auth metrics): port {taken}" in message


def test_a_taken_local_database_port_is_refused_before_the_database_starts(tmp_path):
    env = _suite_env(tmp_path, free_suite_ports())
    env.pop("DATABASE_URL", None)
    with _held_port() as taken:
        env["LOCAL_PG_PORT"] = str(taken)
        message = _refused(env)
    assert f"LOCAL_PG_PORT (the embedded PostgreSQL): port {taken} on 127.0.0.1 is already in use" in message
    assert not (local_postgres_for(str(tmp_path)).data_dir / "PG_VERSION").exists()  # never initialised


def test_one_port_given_twice_is_refused(database_url, tmp_path):
    ports = free_suite_ports()
    ports["pools"] = ports["books"]
    message = _refused(_suite_env(tmp_path, ports, DATABASE_URL=database_url))
    assert f"POOLS_PORT (pools): port {ports['books']} is also BOOKS_PORT (books)" in message


def test_make_run_takes_every_port_from_its_variable(monkeypatch, tmp_path):
    """What `python -m suite` starts listens where AUTH_PORT... say (the suite on other ports beside
    another: tests/test_process_faults.py runs one beside the session's)."""
    from suite.__main__ import _check_ports
    from suite.processes import Suite

    ports = free_suite_ports()
    for name, port in ports.items():
        monkeypatch.setenv(f"{name.upper()}_PORT", str(port))
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/unused")
    monkeypatch.setenv("RUN_DIR", str(tmp_path))
    from kernel.settings import Settings

    assert _check_ports(Settings.from_env("auth")) == ports
    env = Suite("postgresql://unused", tmp_path, ports=dict(ports)).environment()
    assert all(env[f"{name.upper()}_PORT"] == str(port) for name, port in ports.items())


async def test_a_component_exiting_at_start_is_reported_with_its_logs_last_lines(tmp_path):
    """CI keeps what a failed test printed, not the run's log files: the error carries the reason."""
    from suite.processes import Suite, wait_http

    suite = Suite("postgresql://unused", tmp_path, ports=free_suite_ports())
    suite.extra_env["GATEWAY_MAX_BODY_BYTES"] = "lots"
    with pytest.raises(RuntimeError) as refused:
        await wait_http(suite.start("gateway", "gateway"), timeout=30)
    assert "gateway exited with 1" in str(refused.value)
    assert "GATEWAY_MAX_BODY_BYTES must be a number, got 'lots'" in str(refused.value)
