"""The whole suite as separate processes, started the way `make run` starts it, on free ports."""

import contextlib
import random
import socket

import pytest

from suite.launch import start_suite

COMPONENTS = ("auth", "books", "redemption", "pools", "gateway")


def _free(port: int) -> bool:
    with contextlib.closing(socket.socket()) as probe:
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_suite_ports() -> dict[str, int]:
    """A free port per component whose metrics port (+1000) is free too."""
    ports: dict[str, int] = {}
    while len(ports) < len(COMPONENTS):
        port = random.randint(20000, 39000)
        if port not in ports.values() and _free(port) and _free(port + 1000):
            ports[COMPONENTS[len(ports)]] = port
    return ports


@pytest.fixture(scope="session")
async def running_suite(database_url, tmp_path_factory):
    # Every test signs in from 127.0.0.1 into one database, whose per-client count the in-process servers
    # fill too: the per-client limit is tested on a server of its own (tests/test_auth_hardening.py).
    suite, summary = await start_suite(
        database_url,
        tmp_path_factory.mktemp("suite-run"),
        free_suite_ports(),
        extra_env={"LOGIN_MAX_FAILURES_PER_CLIENT": "100000"},
    )
    yield suite
    suite.stop()
    exits = {c.name: c.process.returncode for c in suite.components}
    assert all(code == 0 for code in exits.values()), f"unclean exits: {exits}"


@pytest.fixture(scope="session")
def gateway_base(running_suite) -> str:
    return f"http://127.0.0.1:{running_suite.ports['gateway']}"
