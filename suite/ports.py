"""The ports `make run` listens on, from the same variables the components read, checked before anything starts.

Each component listens on `<NAME>_PORT` (defaults in kernel.settings.DEFAULT_PORTS) and each gRPC service
serves metrics on that port + 1000; the embedded PostgreSQL listens on LOCAL_PG_PORT. A port that is taken
(or given twice) stops `make run` with the variable to change, before a database or a process is started.
"""

from kernel.ports import is_free
from kernel.settings import DEFAULT_PORTS, _int

METRICS_OFFSET = 1000  # suite.processes.Component.metrics_port


def variable(name: str) -> str:
    return f"{name.upper()}_PORT"


def from_env(names: list[str]) -> dict[str, int]:
    """Each component's port: its <NAME>_PORT, or the default."""
    return {name: _int(variable(name), DEFAULT_PORTS[name]) for name in names}


def wanted(ports: dict[str, int], local_pg_port: int | None) -> list[tuple[int, str]]:
    """(port, what listens there and which variable sets it), for every listener of the suite."""
    listeners = []
    for name, port in ports.items():
        listeners.append((port, f"{variable(name)} ({name})"))
        if name != "gateway":  # the gateway serves no metrics
            listeners.append((port + METRICS_OFFSET, f"{variable(name)} + {METRICS_OFFSET} ({name} metrics)"))
    if local_pg_port is not None:
        listeners.append((local_pg_port, "LOCAL_PG_PORT (the embedded PostgreSQL)"))
    return listeners


def problems(ports: dict[str, int], local_pg_port: int | None, host: str = "127.0.0.1") -> list[str]:
    """What keeps the suite from listening where it is told to, one sentence each; empty when all is well."""
    found: list[str] = []
    claimed: dict[int, str] = {}
    for port, what in wanted(ports, local_pg_port):
        if not 0 < port < 65536:
            found.append(f"{what}: {port} is not a port number (1-65535)")
        elif port in claimed:
            found.append(f"{what}: port {port} is also {claimed[port]}")
        elif not is_free(port, host):
            found.append(f"{what}: port {port} on {host} is already in use")
        claimed.setdefault(port, what)
    return found


def check(ports: dict[str, int], local_pg_port: int | None, host: str = "127.0.0.1") -> None:
    """Stops with every problem and the variables to set, before anything is started."""
    found = problems(ports, local_pg_port, host)
    if found:
        raise SystemExit(
            "make run cannot start:\n"
            + "".join(f"  - {line}\n" for line in found)
            + "Set the variable named to a free port, e.g. `AUTH_PORT=51051 make run`; a second suite beside a "
            'running one needs its own ports, LOCAL_PG_PORT and RUN_DIR (docs/operations.md, "Running").'
        )
