"""Brings the suite up the way `make run` does: migrate, demo data, one process per component (or per
replica of a gRPC service)."""

import asyncio
import dataclasses
from collections.abc import Mapping
from pathlib import Path

from kernel import migrations
from kernel.settings import Settings, switch
from services.auth.demo import load_demo_users
from suite import demo
from suite.processes import (
    CONSOLE_DIR,
    Component,
    Suite,
    available_services,
    console_built,
    gateway_available,
    wait_http,
    wait_serving,
)


def _start_replicas(suite: Suite, names: list[str]) -> list[Component]:
    return [
        suite.start(name, f"services.{name}", replica) for name in names for replica in range(suite.replica_count(name))
    ]


async def start_suite(
    database_url: str,
    run_dir: Path,
    ports: dict[str, int] | None = None,
    extra_env: dict[str, str] | None = None,
    replicas: int | Mapping[str, int] = 1,
) -> tuple[Suite, str]:
    """Starts every component and loads the demo data; returns the suite and the demo summary.

    replicas: processes per gRPC service, one number for all or per service name (1 when not named);
    every client gets the replicas of a service as one round-robin target (Suite.target).
    On failure the components already started are stopped before the error goes up.
    """
    services = available_services()
    counts = dict.fromkeys(services, replicas) if isinstance(replicas, int) else dict(replicas)
    if any(count < 1 for count in counts.values()) or set(counts) - set(services):
        raise ValueError(f"replicas must be at least 1 per service of {services}, got {replicas!r}")
    extra_env = dict(extra_env or {})
    if console_built():
        extra_env.setdefault("GATEWAY_STATIC_DIR", str(CONSOLE_DIR))
    suite = Suite(database_url=database_url, run_dir=run_dir, extra_env=extra_env, replicas=counts)
    if ports:
        suite.ports.update(ports)
    try:
        # auth first: every other service signs in and fetches the token keys there as it starts, and a
        # channel that finds auth not listening yet waits out a reconnect backoff (a second or more). It
        # boots while the other schemas migrate and the demo users are written.
        first = []
        for name in services:
            await asyncio.to_thread(migrations.upgrade, name, database_url)  # the caller's loop keeps running
            if name == "auth":
                first = _start_replicas(suite, ["auth"])
        # The demo users are written from here, with the connection settings the processes get.
        base = Settings.from_env("auth")
        prepared = switch(
            "DB_PREPARED_STATEMENTS", extra_env.get("DB_PREPARED_STATEMENTS", ""), base.db_prepared_statements
        )
        settings = dataclasses.replace(base, database_url=database_url, db_prepared_statements=prepared)
        await load_demo_users(settings)
        for component in first:
            await wait_serving(component)
        for component in _start_replicas(suite, [name for name in services if name != "auth"]):
            await wait_serving(component)
        if gateway_available():
            await wait_http(suite.start("gateway", "gateway"))
        summary = await demo.load(suite)
    except BaseException:
        suite.stop()
        raise
    return suite, summary
