"""A real PgBouncer for tests: Debian's package (installed when missing), run in transaction mode in front of
the test PostgreSQL on a free port, with its admin console for SHOW POOLS / SHOW STATS / SHOW CLIENTS.

Clients need no password (auth_type trust, as the embedded server has); the server's own password, if its
URL has one, goes into the auth file so PgBouncer can sign in to PostgreSQL with it.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from kernel.localdb import free_port
from tests.debian import ensure_package


def _binary() -> str | None:
    return shutil.which("pgbouncer") or next(
        (path for path in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(path, os.X_OK)), None
    )


def ensure_pgbouncer() -> str:
    """The pgbouncer binary; installs Debian's package first when it is missing (tests.debian)."""
    return ensure_package("pgbouncer", _binary)


@dataclass
class PgBouncer:
    server_url: str  # the PostgreSQL behind it
    port: int
    process: subprocess.Popen
    log_path: Path
    default_pool_size: int

    def url(self, database: str) -> str:
        """The URL of a database through the pooler (same user and password as the server's URL)."""
        return (
            make_url(self.server_url)
            .set(host="127.0.0.1", port=self.port, database=database)
            .render_as_string(hide_password=False)
        )

    def show(self, what: str) -> list[dict]:
        """SHOW <what> on the admin console (simple query protocol only, hence a ClientCursor)."""
        user = make_url(self.server_url).username or "postgres"
        with psycopg.connect(host="127.0.0.1", port=self.port, dbname="pgbouncer", user=user, autocommit=True) as conn:
            cursor = psycopg.ClientCursor(conn)
            cursor.execute(f"SHOW {what}")
            names = [column.name for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def stats(self, database: str) -> dict:
        return next(row for row in self.show("STATS") if row["database"] == database)


@contextlib.contextmanager
def running_pgbouncer(server_url: str, work_dir: Path, default_pool_size: int = 5):
    """PgBouncer in transaction mode on a free loopback port, for every database of server_url's server."""
    binary = ensure_pgbouncer()
    server = make_url(server_url)
    user = server.username or "postgres"
    work_dir.mkdir(parents=True, exist_ok=True)
    auth_file = work_dir / "userlist.txt"
    auth_file.write_text(f'"{user}" "{server.password or ""}"\n')
    port = free_port()
    config = work_dir / "pgbouncer.ini"
    config.write_text(
        "\n".join(
            [
                "[databases]",
                f"* = host={server.host or '127.0.0.1'} port={server.port or 5432}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {port}",
                "unix_socket_dir =",
                "pool_mode = transaction",
                "auth_type = trust",
                f"auth_file = {auth_file}",
                f"admin_users = {user}",
                f"default_pool_size = {default_pool_size}",
                "max_client_conn = 500",
                "ignore_startup_parameters = extra_float_digits",
                "log_connections = 0",
                "log_disconnections = 0",
                "",
            ]
        )
    )
    command = [binary, str(config)]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root; it switches to this user after reading its files
        work_dir.chmod(0o755)
        auth_file.chmod(0o644)
        command[1:1] = ["-u", "nobody"]
    log_path = work_dir / "pgbouncer.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log)
    bouncer = PgBouncer(server_url, port, process, log_path, default_pool_size)
    try:
        _wait_listening(bouncer)
        yield bouncer
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # immediate shutdown: the suite using it has stopped
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_listening(bouncer: PgBouncer, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if bouncer.process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited with {bouncer.process.returncode}: {bouncer.log_path.read_text()}")
        with contextlib.closing(socket.socket()) as probe:
            if probe.connect_ex(("127.0.0.1", bouncer.port)) == 0:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"pgbouncer did not listen within {timeout:.0f} s: {bouncer.log_path.read_text()}")
        time.sleep(0.05)
