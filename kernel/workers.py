"""WORKERS > 1: several processes serve one service's port (SO_REUSEPORT), under a small supervisor.

`python -m services.<name>` with WORKERS=N > 1 is the supervisor. It checks the ports are free first (its
workers bind with SO_REUSEPORT, which by itself would not say that a port is taken), then spawns N
workers: fresh interpreters (`python -m services <names> serve`, never a fork: forking next to gRPC's
threads can crash the child) given the resolved DATABASE_URL, so the embedded database is resolved once.
It serves the workers' metrics, aggregated, on METRICS_PORT (prometheus_client's multiprocess mode, one
directory per service under RUN_DIR/metrics, emptied at start). SIGTERM and SIGINT are forwarded: each
worker stops gracefully on its own (NOT_SERVING, drain, in-flight calls finish; kernel/server.py).
A worker that exits otherwise is replaced after a backoff: 0.5 s, doubled after each replacement that
exited before it served, at most 30 s. A worker that exits before it served at the start stops them all.

Each worker holds one end of a socket pair with the supervisor: it writes a byte once it serves, and it
stops gracefully when the supervisor's end closes (the supervisor was killed), so none outlives it.

Only the first worker (index 0, and its replacements) runs the service's background jobs (retention
purges, the events service's feed readers and webhook dispatcher): the workers are there to serve calls.
One dispatcher makes full rounds where N would split them, N idle pollers would query the database N
times as often, and under a saturating load the jobs take one process's share of the CPU, not N's, so
they trail the calls instead of slowing them. More background capacity comes with more replicas.
"""

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import uvloop
from prometheus_client import CollectorRegistry, multiprocess, start_http_server

from kernel.ports import is_free
from kernel.settings import Settings

log = logging.getLogger("kernel.workers")

LINK_ENV = "COUPONS_WORKER_LINK_FD"  # set only in a worker: its end of the socket pair
INDEX_ENV = "COUPONS_WORKER_INDEX"  # set only in a worker: 0 to WORKERS - 1, kept by its replacements
FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
_SERVING = b"1"


def is_worker() -> bool:
    """Whether this process is one of a supervisor's workers (which share their port with SO_REUSEPORT)."""
    return LINK_ENV in os.environ


def runs_background_jobs() -> bool:
    """Whether this process runs its service's background jobs: a process of its own, or the first worker."""
    return os.environ.get(INDEX_ENV, "0") == "0"


class WorkerLink:
    """A worker's end of its socket pair with the supervisor."""

    def __init__(self, fd: int):
        self.socket = socket.socket(fileno=fd)

    def serving(self, stop: Callable[[], None]) -> None:
        """Tells the supervisor this worker serves; stop() runs when the supervisor goes away."""
        self.socket.sendall(_SERVING)
        loop = asyncio.get_running_loop()

        def supervisor_gone() -> None:
            loop.remove_reader(self.socket.fileno())
            log.warning("supervisor gone, stopping")
            stop()

        loop.add_reader(self.socket.fileno(), supervisor_gone)


def worker_link() -> WorkerLink | None:
    fd = os.environ.get(LINK_ENV)
    return WorkerLink(int(fd)) if fd else None


def port_problems(components: list[Settings]) -> list[str]:
    """Why the workers could not listen where they are told to, one sentence each."""
    wanted = [(s.port, f"{s.component.upper()}_PORT ({s.component})") for s in components]
    if components[0].metrics_port:
        wanted.append((components[0].metrics_port, f"METRICS_PORT ({components[0].component} metrics)"))
    host = components[0].host
    found = []
    for port, what in wanted:
        if port == 0:
            found.append(f"{what}: WORKERS > 1 share one port, so it cannot be 0 (any free port)")
        elif not is_free(port, host):
            found.append(f"{what}: port {port} on {host} is already in use")
    return found


@dataclasses.dataclass
class _Worker:
    process: asyncio.subprocess.Process
    link: socket.socket  # the supervisor's end

    async def serving(self) -> bool:
        """True once the worker reports serving; False when it exits first."""
        return await asyncio.get_running_loop().sock_recv(self.link, 1) == _SERVING


class Supervisor:
    def __init__(self, components: list[Settings], env: dict[str, str]):
        first = components[0]
        names = [s.component for s in components]
        self.count = first.workers
        self.command = [sys.executable, "-m", "services", ",".join(names), "serve"]
        self.metrics_port, self.host = first.metrics_port, first.host
        # Per service and port: two supervisors of one service (REPLICAS) share a RUN_DIR.
        self.metrics_dir = Path(first.run_dir) / "metrics" / f"{'+'.join(names)}-{first.port}"
        self.env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir)}
        self.workers: list[_Worker] = []
        self.stopping = asyncio.Event()
        self.forwarded: set[int] = set()  # the signals passed on to the workers

    async def run(self) -> int:
        """Runs the workers until SIGTERM or SIGINT; 0 when every one of them stopped cleanly."""
        shutil.rmtree(self.metrics_dir, ignore_errors=True)  # files of an earlier run's workers would be counted
        self.metrics_dir.mkdir(parents=True)
        if self.metrics_port:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=str(self.metrics_dir))
            start_http_server(self.metrics_port, addr=self.host, registry=registry)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop, signum)
        for index in range(self.count):
            self.workers.append(await self._spawn(index))
        if self.stopping.is_set():  # a signal during the spawns reached only the workers already there
            self._stop(signal.SIGTERM)
        started = all(await asyncio.gather(*(worker.serving() for worker in self.workers)))
        if started:
            pids = [worker.process.pid for worker in self.workers]
            log.info("workers serving", extra={"fields": {"workers": self.count, "pids": pids}})
        elif not self.stopping.is_set():
            log.error("a worker exited before it served (see its lines above); stopping the others")
            self._stop(signal.SIGTERM)
        stopped_early = not started and self.stopping.is_set()  # a signal came before they all served
        codes = await asyncio.gather(*(self._keep(index) for index in range(self.count)))
        log.info("workers stopped", extra={"fields": {"exit_codes": codes}})
        # A worker stopped by the forwarded signal before it installed its handler ends with -signal: a clean
        # stop all the same.
        clean = all(code in (0, None) or -code in self.forwarded for code in codes)
        return 0 if clean and (started or stopped_early) else 1

    async def _spawn(self, index: int) -> _Worker:
        mine, theirs = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command,
                env={**self.env, LINK_ENV: str(theirs.fileno()), INDEX_ENV: str(index)},
                pass_fds=(theirs.fileno(),),
            )
        finally:
            theirs.close()
        mine.setblocking(False)
        log.info("worker started", extra={"fields": {"worker": index, "pid": process.pid}})
        return _Worker(process, mine)

    async def _keep(self, index: int) -> int | None:
        """Replaces worker `index` whenever it exits until the supervisor stops; its last exit code
        (None when the stop came while it was being replaced)."""
        failures = 0  # replacements in a row that exited before they served
        while True:
            worker = self.workers[index]
            code = await worker.process.wait()
            worker.link.close()
            if self.stopping.is_set():
                return code
            multiprocess.mark_process_dead(worker.process.pid, str(self.metrics_dir))
            delay = min(FIRST_BACKOFF_SECONDS * 2**failures, MAX_BACKOFF_SECONDS)
            fields = {"worker": index, "pid": worker.process.pid, "exit_code": code, "replaced_in_seconds": delay}
            log.warning("worker exited", extra={"fields": fields})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            if self.stopping.is_set():
                return None
            self.workers[index] = await self._spawn(index)
            if self.stopping.is_set():  # the stop came while it was being spawned
                self.workers[index].process.terminate()
            failures = 0 if await self.workers[index].serving() else failures + 1

    def _stop(self, signum: int) -> None:
        if not self.stopping.is_set():
            log.info("stopping workers", extra={"fields": {"signal": signal.Signals(signum).name}})
        self.stopping.set()
        self.forwarded.add(signum)
        for worker in self.workers:
            if worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signum)


def supervise(components: list[Settings], env: dict[str, str]) -> int:
    """Checks the ports, then runs the supervisor (on uvloop, as the workers); its exit code."""
    problems = port_problems(components)
    if problems:
        raise SystemExit(
            f"{components[0].component} cannot start:\n"
            + "".join(f"  - {line}\n" for line in problems)
            + "Set the variable named to a free port."
        )
    return uvloop.run(Supervisor(components, env).run())
