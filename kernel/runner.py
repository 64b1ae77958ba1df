"""Runs one component as a process: `python -m services.<name> [serve|migrate]`.

With no DATABASE_URL in local mode it starts (or reuses) the embedded PostgreSQL under the temp dir.
SIGTERM or SIGINT stops it gracefully.
"""

import asyncio
import dataclasses
import logging
import signal
import sys
from typing import Awaitable, Callable

from kernel import logs, metrics, migrations
from kernel.localdb import shared_local_postgres
from kernel.server import GrpcServer
from kernel.settings import Settings

log = logging.getLogger("kernel.runner")

# build(settings) -> (server, cleanup): wires a component's domain, data access and servicers.
Builder = Callable[[Settings], Awaitable[tuple[GrpcServer, Callable[[], Awaitable[None]]]]]


async def serve(settings: Settings, build: Builder) -> None:
    server, cleanup = await build(settings)
    await server.start(settings.listen_address)
    metrics.serve(settings.metrics_port)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info("shutting down", extra={"fields": {"grace_seconds": settings.shutdown_grace_seconds}})
    await server.stop(settings.shutdown_grace_seconds)
    await cleanup()


def main(component: str, build: Builder, argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else "serve"
    settings = Settings.from_env(component)
    logs.configure(component, settings.log_level)
    local_db = None
    if not settings.database_url:
        local_db = shared_local_postgres(settings.run_dir)
        settings = dataclasses.replace(settings, database_url=local_db.url)
    try:
        if command == "migrate":
            migrations.upgrade(component, settings.database_url)
        elif command == "serve":
            asyncio.run(serve(settings, build))
        else:
            raise SystemExit(f"usage: python -m services.{component} [serve|migrate]")
    finally:
        if local_db is not None and local_db.started_here:
            local_db.stop()
