"""`make run`: the embedded PostgreSQL, migrations, demo data, every component as its own process.

Ctrl-C (or SIGTERM) stops the components gracefully and then the database.
"""

import asyncio
import dataclasses
import logging
import signal
from pathlib import Path

from kernel import logs, migrations
from kernel.localdb import shared_local_postgres
from kernel.settings import ROOT, Settings
from services.auth.demo import load_demo_users
from suite import demo
from suite.processes import Suite, available_services, gateway_available, wait_http, wait_serving


def _banner(suite: Suite, token_hint: str) -> str:
    grpcurl = ROOT / ".venv" / "bin" / "grpcurl"
    grpcurl = str(grpcurl) if grpcurl.exists() else "grpcurl"
    lines = ["", "Coupon Book Service is running. Ctrl-C stops everything.", ""]
    for component in suite.components:
        kind = "http" if component.name == "gateway" else "grpc"
        lines.append(f"  {component.name:<11} {kind}://{component.address}    log: {component.log_path}")
    auth = suite.ports["auth"]
    lines += [
        "",
        "Try it (demo users: admin@example.com / admin123, alice@example.com / demo123):",
        f"  {grpcurl} -plaintext 127.0.0.1:{auth} list",
        f"  {grpcurl} -plaintext -d '{{\"email\":\"alice@example.com\",\"password\":\"demo123\"}}' "
        f"127.0.0.1:{auth} coupons.auth.v1.AuthService/Login",
        f"  TOKEN=$({grpcurl} -plaintext -d '{{\"email\":\"alice@example.com\",\"password\":\"demo123\"}}' "
        f"127.0.0.1:{auth} coupons.auth.v1.AuthService/Login | python3 -c 'import json,sys; "
        f"print(json.load(sys.stdin)[\"access_token\"])')",
        f"  {grpcurl} -plaintext -H \"authorization: Bearer $TOKEN\" 127.0.0.1:{auth} coupons.auth.v1.AuthService/GetMe",
    ]
    lines += token_hint.splitlines()
    if any(c.name == "gateway" for c in suite.components):
        port = suite.ports["gateway"]
        lines += [
            f"  curl -s -X POST http://127.0.0.1:{port}/api/v1/auth/login -H 'content-type: application/json' "
            "-d '{\"email\":\"alice@example.com\",\"password\":\"demo123\"}'",
        ]
    return "\n".join(lines) + "\n"


async def run() -> None:
    settings = Settings.from_env("auth")
    logs.configure("suite", settings.log_level)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    database = None
    database_url = settings.database_url
    if not database_url:
        database = shared_local_postgres(settings.run_dir)
        database_url = database.url
    suite = Suite(database_url=database_url, run_dir=Path(settings.run_dir))
    try:
        services = available_services()
        for name in services:
            migrations.upgrade(name, database_url)
        await load_demo_users(dataclasses.replace(settings, database_url=database_url))
        for name in services:
            suite.start(name, f"services.{name}")
        if gateway_available():
            suite.start("gateway", "gateway")
        for component in suite.components:
            if component.name == "gateway":
                await wait_http(component)
            else:
                await wait_serving(component)
        hint = await demo.load(suite)
        print(_banner(suite, hint), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        print("Stopping...", flush=True)
    finally:
        suite.stop()
        if database is not None and database.started_here:
            database.stop()
        print("Stopped.", flush=True)


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
