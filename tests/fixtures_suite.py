"""The whole suite as separate processes, started the way `make run` starts it, on free ports."""

import contextlib
import random
import socket

import pytest

from kernel.components import COMPONENTS as REGISTRY
from suite.launch import start_suite
from suite.processes import REPLICA_PORT_STEP
from tests.support import TEST_CLIENT_LIMIT

COMPONENTS = tuple(c.name for c in REGISTRY)


def _free(port: int) -> bool:
    with contextlib.closing(socket.socket()) as probe:
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _ephemeral_ports_start() -> int:
    """Where the kernel starts picking source ports for outgoing connections (Linux's default: 32768)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            return int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_suite_ports(replicas: dict[str, int] | None = None) -> dict[str, int]:
    """A free base port per component such that every replica's port (base + 10 i) and metrics port (+1000)
    is free too, and no two components share one. All below the ephemeral range: a port free when probed
    there can be taken as the source port of any outgoing connection (PgBouncer's, a client's) before the
    component binds it, which one CI run saw as a gateway exiting at start."""
    highest = _ephemeral_ports_start() - 1000 - REPLICA_PORT_STEP * max((replicas or {}).values(), default=1) - 1
    ports: dict[str, int] = {}
    taken: set[int] = set()
    for name in COMPONENTS:
        while True:
            base = random.randint(20000, highest)
            wanted = [base + REPLICA_PORT_STEP * i for i in range((replicas or {}).get(name, 1))]
            wanted += [port + 1000 for port in wanted]
            if not taken.intersection(wanted) and all(_free(port) for port in wanted):
                break
        ports[name] = base
        taken.update(wanted)
    return ports


async def start_test_suite(database_url: str, run_dir, ports: dict[str, int], extra_env=None, **options):
    """start_suite for tests: every process signs in from 127.0.0.1 (see tests.support.TEST_CLIENT_LIMIT), and
    each service is one process (WORKERS=1) unless the test says otherwise. (Webhooks may go to loopback,
    as in every ENVIRONMENT=local suite.)"""
    env = {"LOGIN_MAX_FAILURES_PER_CLIENT": str(TEST_CLIENT_LIMIT), "WORKERS": "1", **(extra_env or {})}
    return await start_suite(database_url, run_dir, ports, extra_env=env, **options)


@pytest.fixture(scope="session")
async def running_suite(database_url, tmp_path_factory):
    suite, summary = await start_test_suite(database_url, tmp_path_factory.mktemp("suite-run"), free_suite_ports())
    yield suite
    suite.stop()
    exits = {c.name: c.process.returncode for c in suite.components}
    assert all(code == 0 for code in exits.values()), f"unclean exits: {exits}"


@pytest.fixture(scope="session")
def gateway_base(running_suite) -> str:
    return f"http://127.0.0.1:{running_suite.ports['gateway']}"
