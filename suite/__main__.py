"""`make run`: the embedded PostgreSQL, migrations, demo data, every component as its own process.

Ports come from AUTH_PORT, BOOKS_PORT, REDEMPTION_PORT, POOLS_PORT, GATEWAY_PORT (metrics on each gRPC
port + 1000) and LOCAL_PG_PORT, and are checked free before anything starts. Ctrl-C (or SIGTERM) stops the
components gracefully and then the database.
REPLICAS=N starts N processes of each gRPC service (clients balance round robin over them).
"""

import asyncio
import logging
import os
import signal
from pathlib import Path

from kernel import logs
from kernel.localdb import local_postgres_for, shared_local_postgres
from kernel.settings import ROOT, Settings
from suite import ports as suite_ports
from suite.launch import start_suite
from suite.processes import Suite, available_services, console_built, gateway_available


def _banner(suite: Suite, demo_summary: str) -> str:
    venv_grpcurl = ROOT / ".venv" / "bin" / "grpcurl"
    grpcurl = str(venv_grpcurl) if venv_grpcurl.exists() else "grpcurl"
    lines = ["", "Coupon Book Service is running. Ctrl-C stops everything.", ""]
    if any(c.name == "gateway" for c in suite.components):
        if console_built():
            lines.append(
                f"  Web console   http://127.0.0.1:{suite.ports['gateway']}/    (demo users below; docs/console.md)"
            )
        else:
            lines.append("  Web console   not built: `make run` builds it (Node.js and npm needed; docs/console.md)")
        lines.append("")
    for component in suite.components:
        kind = "http" if component.name == "gateway" else "grpc"
        lines.append(f"  {component.label:<13} {kind}://{component.address}    log: {component.log_path}")
    if any(suite.replica_count(name) > 1 for name in suite.replicas):
        lines += ["", "Replicas: every client balances round robin over them, e.g. the CLI:"]
        flags = " ".join(f"--{name}={suite.target(name)}" for name in suite.replicas)
        lines.append(f"  python -m cli {flags} --help")
    lines.append(demo_summary)
    auth, redemption = suite.ports["auth"], suite.ports["redemption"]
    login = '\'{"email":"alice@example.com","password":"demo123"}\''
    lines += [
        "",
        "Try it with grpcurl (demo users: admin@example.com / admin123, alice@example.com / demo123):",
        f"  {grpcurl} -plaintext 127.0.0.1:{auth} list",
        f"  TOKEN=$({grpcurl} -plaintext -d {login} 127.0.0.1:{auth} coupons.auth.v1.AuthService/Login"
        " | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')",
        f'  {grpcurl} -plaintext -H "authorization: Bearer $TOKEN" -d \'{{"user_id":"me"}}\' '
        f"127.0.0.1:{redemption} coupons.redemption.v1.RedemptionService/ListUserCoupons",
    ]
    if any(c.name == "gateway" for c in suite.components):
        port = suite.ports["gateway"]
        lines += [
            "",
            "And with curl through the gateway:",
            f"  TOKEN=$(curl -s -X POST http://127.0.0.1:{port}/api/v1/auth/login -d {login}"
            " | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')",
            f'  curl -s http://127.0.0.1:{port}/api/v1/users/me/coupons -H "authorization: Bearer $TOKEN"',
            f"  curl -s http://127.0.0.1:{port}/openapi.json | head -c 300",
        ]
    lines += ["", "A full walk-through (create a book, generate, assign, lock, redeem, history): docs/try-it.md"]
    return "\n".join(lines) + "\n"


def _replicas() -> int:
    raw = os.environ.get("REPLICAS", "").strip() or "1"
    if not raw.isdigit() or not 1 <= int(raw) <= 20:
        raise SystemExit(f"REPLICAS must be a whole number from 1 to 20, got {raw!r}")
    return int(raw)


def _check_ports(settings: Settings) -> dict[str, int]:
    """Every port from its variable, checked free before anything starts (a clear error naming the variable)."""
    names = available_services() + (["gateway"] if gateway_available() else [])
    wanted = suite_ports.from_env(names)
    local_pg = None
    if not settings.database_url:
        database = local_postgres_for(settings.run_dir)
        local_pg = None if database.running() else database.port  # this RUN_DIR's database, already up: reused
    suite_ports.check(wanted, local_pg, settings.host)
    return wanted


async def run() -> None:
    settings = Settings.from_env("auth")
    logs.configure("suite", settings.log_level)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    ports = _check_ports(settings)
    database = None
    database_url = settings.database_url
    if not database_url:
        database = shared_local_postgres(settings.run_dir)
        database_url = database.url
    suite = None
    try:
        suite, summary = await start_suite(database_url, Path(settings.run_dir), ports, replicas=_replicas())
        print(_banner(suite, summary), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        print("Stopping...", flush=True)
    finally:
        if suite is not None:
            suite.stop()
        if database is not None and database.started_here:
            database.stop()
        print("Stopped.", flush=True)


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
