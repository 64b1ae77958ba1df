"""Brings the suite up the way `make run` does: migrate, demo data, one process per component."""

import dataclasses
from pathlib import Path

from kernel import migrations
from kernel.settings import Settings
from services.auth.demo import load_demo_users
from suite import demo
from suite.processes import Suite, available_services, gateway_available, wait_http, wait_serving


async def start_suite(
    database_url: str, run_dir: Path, ports: dict[str, int] | None = None, extra_env: dict[str, str] | None = None
) -> tuple[Suite, str]:
    """Starts every component and loads the demo data; returns the suite and the demo summary.

    On failure the components already started are stopped before the error goes up.
    """
    suite = Suite(database_url=database_url, run_dir=run_dir, extra_env=dict(extra_env or {}))
    if ports:
        suite.ports.update(ports)
    try:
        services = available_services()
        for name in services:
            migrations.upgrade(name, database_url)
        settings = dataclasses.replace(Settings.from_env("auth"), database_url=database_url)
        await load_demo_users(settings)
        for name in services:
            suite.start(name, f"services.{name}")
        for component in suite.components:
            await wait_serving(component)
        if gateway_available():
            await wait_http(suite.start("gateway", "gateway"))
        summary = await demo.load(suite)
    except BaseException:
        suite.stop()
        raise
    return suite, summary
