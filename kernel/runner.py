"""Runs one component as a process: `python -m services.<name> [serve|migrate]`.

With no DATABASE_URL in local mode it starts (or reuses) the embedded PostgreSQL under the temp dir.
SIGTERM or SIGINT stops it gracefully. With WORKERS > 1 the process serves through workers of its own
(kernel/workers.py); migrations never run when serving, only with `migrate` (once, not per worker).
"""

import asyncio
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable

import uvloop

from kernel import logs, metrics, migrations, workers
from kernel.localdb import shared_local_postgres
from kernel.server import GrpcServer
from kernel.settings import Settings

log = logging.getLogger("kernel.runner")

# build(settings) -> (server, cleanup): wires a component's domain, data access and servicers.
Builder = Callable[[Settings], Awaitable[tuple[GrpcServer, Callable[[], Awaitable[None]]]]]


async def serve(components: list[tuple[Settings, Builder]]) -> None:
    """Serves one or more components in this process until SIGTERM or SIGINT, then stops them gracefully."""
    running = []
    for settings, build in components:
        server, cleanup = await build(settings)
        await server.start(settings.listen_address)
        running.append((settings, server, cleanup))
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    link = workers.worker_link()
    if link is None:
        metrics.serve(components[0][0].metrics_port, components[0][0].host)  # one registry per process, so one endpoint
    else:
        link.serving(stopping.set)  # the supervisor serves the metrics of all its workers
    await stopping.wait()
    log.info("shutting down", extra={"fields": {"grace_seconds": components[0][0].shutdown_grace_seconds}})
    await asyncio.gather(*(server.stop(settings.shutdown_grace_seconds) for settings, server, _ in running))
    for _, _, cleanup in running:
        await cleanup()


def main(component: str, build: Builder, argv: list[str] | None = None) -> None:
    """`python -m services.<component> [serve|migrate]`."""
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else "serve"
    if command not in ("serve", "migrate"):
        raise SystemExit(f"usage: python -m services.{component} [serve|migrate]")
    run_components([component], {component: build}, migrate_only=command == "migrate")


def run_components(names: list[str], builders: dict[str, Builder], migrate_only: bool = False) -> None:
    """Runs the named components in this process, on the embedded PostgreSQL when DATABASE_URL is unset."""
    settings = {name: Settings.from_env(name) for name in names}
    first = settings[names[0]]
    logs.configure("+".join(names), first.log_level, with_pid=workers.is_worker())
    local_db = None
    if not first.database_url:  # never in a worker: its supervisor passes the database it resolved
        local_db = shared_local_postgres(first.run_dir)
        settings = {name: dataclasses.replace(s, database_url=local_db.url) for name, s in settings.items()}
    exit_code = 0
    try:
        if migrate_only:
            for name in names:
                migrations.upgrade(name, settings[name].database_url)
        elif first.workers > 1 and not workers.is_worker():
            env = {**os.environ, "DATABASE_URL": first.database_url if local_db is None else local_db.url}
            exit_code = workers.supervise(list(settings.values()), env)
        else:
            # uvloop (libuv) costs less per call than asyncio's own loop, and grpc.aio runs on it.
            uvloop.run(serve([(settings[name], builders[name]) for name in names]))
    finally:
        if local_db is not None and local_db.started_here:
            local_db.stop()
    if exit_code:
        raise SystemExit(exit_code)
