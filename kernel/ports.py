"""Whether a port is free to listen on, asked before anything binds it (make run, a service's supervisor)."""

import contextlib
import socket


def is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen there now (SO_REUSEADDR, as gRPC, aiohttp and PostgreSQL bind).

    A socket bound with SO_REUSEPORT (another service's workers) counts as taken: the probe does not set it."""
    address = host.strip("[]")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with contextlib.closing(socket.socket(family)) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
            return True
        except OSError:
            return False
