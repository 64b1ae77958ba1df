"""A fresh, throw-away stack for the benchmarks: an embedded PostgreSQL in a temp dir (fsync and
synchronous_commit on, as shipped) and every component as its own process on free ports, as `make run`
starts them. The demo data is not loaded: the bench makes its own books, users and tokens.

A component that cannot start (e.g. a service still being built) is left out with a note, and the
scenarios that need it are skipped; the others still run.
"""

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg

from kernel import migrations
from kernel.components import DEFAULT_PORTS, SERVICES
from kernel.context import ADMIN, SERVICE
from kernel.localdb import LocalPostgres, bin_dir, free_port
from kernel.settings import Settings
from kernel.tokens import SigningKey, TokenIssuer
from suite.processes import Suite, available_services, gateway_available, wait_http, wait_serving

log = logging.getLogger("bench")


class BenchSuite(Suite):
    """The suite's process runner, with each component's metrics endpoint on its own free port."""

    def start(self, name, module):
        self.extra_env["METRICS_PORT"] = str(free_port())
        try:
            return super().start(name, module)
        finally:
            self.extra_env.pop("METRICS_PORT", None)


class MemoryWatch:
    """Peak RSS of each component: of its largest process (a supervisor or one of its workers) and of all
    its processes together. Sampled every 0.2 s, and each process's own high-water mark (VmHWM) read too,
    whichever is larger; workers started later (a restart with other WORKERS) are found at each sample."""

    def __init__(self, suite: Suite):
        self.suite = suite
        self.peak: dict[str, tuple[int, int]] = {}  # component -> (largest process, all together)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()

    def _sample(self):
        from bench.cpu import process_tree

        for component in list(self.suite.components):
            now, highest = 0, 0  # all its processes now; the highest any of them ever reached
            for process in process_tree(component.process.pid if component.process else None):
                with contextlib.suppress(psutil.Error):
                    rss = process.memory_info().rss
                    now, highest = now + rss, max(highest, rss)
                with contextlib.suppress(OSError, ValueError):
                    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            highest = max(highest, int(line.split()[1]) * 1024)
            largest, total = self.peak.get(component.name, (0, 0))
            self.peak[component.name] = (max(largest, highest), max(total, now))

    def _run(self):
        while not self._stop.wait(0.2):
            self._sample()

    def stop(self) -> dict[str, tuple[int, int]]:
        self._sample()
        self._stop.set()
        self._thread.join(2)
        return dict(self.peak)


@dataclass
class Stack:
    database: LocalPostgres
    database_url: str
    suite: Suite
    run_dir: Path
    issuer: TokenIssuer
    admin_id: str
    notes: list[str] = field(default_factory=list)
    memory: MemoryWatch | None = None

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.suite.ports[name]}"

    def has(self, name: str) -> bool:
        return any(c.name == name and c.process and c.process.poll() is None for c in self.suite.components)

    def pid(self, name: str) -> int | None:
        for c in self.suite.components:
            if c.name == name and c.process:
                return c.process.pid
        return None

    def token(self, user_id: str, role: str = "USER") -> str:
        return self.issuer.issue(user_id, role)

    def admin_metadata(self) -> tuple:
        return (("authorization", f"Bearer {self.token(self.admin_id, ADMIN)}"),)

    def service_metadata(self) -> tuple:
        """The books service's own credential, for the ledger's internal methods."""
        return (("authorization", f"Bearer {self.token('service:books', SERVICE)}"),)

    def new_users(self, count: int) -> list[str]:
        """Accounts straight into auth.users (the ledger assigns only to existing accounts)."""
        with self.connect() as conn:
            return [
                row[0]
                for row in conn.execute(
                    """INSERT INTO auth.users (email, name, role, password_hash)
                SELECT 'bench-' || gen_random_uuid() || '@example.com', '', 'USER', '' FROM generate_series(1, %s)
                RETURNING id::text""",
                    (count,),
                )
            ]

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.database_url, autocommit=True)

    def pg_settings(self) -> dict[str, str]:
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
                (
                    [
                        "fsync",
                        "synchronous_commit",
                        "full_page_writes",
                        "wal_level",
                        "shared_buffers",
                        "max_connections",
                        "server_version",
                    ],
                ),
            ).fetchall()
        return dict(rows)


async def _start_component(suite: Suite, name: str, module: str, notes: list[str]) -> bool:
    component = suite.start(name, module)
    try:
        if name == "gateway":
            await wait_http(component, timeout=60)
        else:
            await wait_serving(component, timeout=60)
        return True
    except RuntimeError as error:
        notes.append(f"{name} did not start ({error}); scenarios that need it are skipped.")
        if component.process and component.process.poll() is None:
            component.process.kill()
            component.process.wait()
        suite.components.remove(component)
        return False


async def _wait_gateway_routes(port: int, backends: list[str], timeout: float = 60.0) -> None:
    """The gateway answers before it has read every backend's descriptors: wait until it routes them."""
    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    report = (await response.json()).get("backends", {})
                    if all(report.get(name, {}).get("routed") for name in backends):
                        return
            await asyncio.sleep(0.3)
    raise RuntimeError(f"the gateway did not route {backends} within {timeout:.0f} s")


async def start_stack() -> Stack:
    base = Path(tempfile.mkdtemp(prefix="coupons-bench-"))
    base.chmod(0o755)
    database = LocalPostgres(base / "pgdata")
    url = database.start()
    run_dir = base / "run"
    run_dir.mkdir()
    notes: list[str] = []
    suite = BenchSuite(
        database_url=url,
        run_dir=run_dir,
        ports={name: free_port() for name in DEFAULT_PORTS},
    )
    try:
        services = available_services()
        for name in services:
            try:
                migrations.upgrade(name, url)
            except Exception as error:  # noqa: BLE001 - a service being built may not migrate yet
                notes.append(f"{name} migrations failed ({type(error).__name__}: {error}); {name} is left out.")
                services.remove(name)
        for name in services:  # auth first: the others fetch its signing keys
            await _start_component(suite, name, f"services.{name}", notes)
        if gateway_available():
            if await _start_component(suite, "gateway", "gateway", notes):
                routed = [c.name for c in suite.components if c.name in SERVICES]
                await _wait_gateway_routes(suite.ports["gateway"], routed)
        settings = Settings.from_env("auth")
        key = SigningKey.from_pem((run_dir / "keys" / "jwt-ed25519.pem").read_bytes())
        issuer = TokenIssuer(key, settings.jwt_issuer, settings.jwt_audience, ttl_seconds=3 * 3600)
    except BaseException:
        suite.stop()
        database.stop()
        shutil.rmtree(base, ignore_errors=True)
        raise
    stack = Stack(database, url, suite, base, issuer, str(uuid.uuid4()), notes)
    stack.memory = MemoryWatch(suite)
    stack.memory.start()
    return stack


def stop_stack(stack: Stack) -> None:
    stack.suite.stop()
    stack.database.stop()
    shutil.rmtree(stack.run_dir, ignore_errors=True)


def pgbench_path() -> Path:
    return bin_dir() / "pgbench"


def postgres_version() -> str:
    return subprocess.run([str(bin_dir() / "postgres"), "--version"], capture_output=True, text=True).stdout.strip()


def cpu_count() -> int:
    return os.cpu_count() or 1
