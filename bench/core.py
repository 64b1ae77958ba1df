"""What every section of the bench shares: its settings, its figures, the calls that set a run up, one
load-generator run with its CPU measured, and restarting a service with another number of workers.

Books, codes and assignments are made through the services' own APIs; only what the API cannot do fast
enough for a benchmark is done in SQL, and said so where it happens (pgbench's numeric codes, the COPY
ceiling, 10,000 pool members with one bcrypt hash).
"""

import asyncio
import logging
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from bench import checks
from bench.cpu import CpuMeter, CpuShare
from bench.load import LoadGenerator, RunResult, median
from bench.stack import Stack, cpu_count
from coupons.books.v1 import books_pb2, books_pb2_grpc
from coupons.redemption.v1 import redemption_pb2, redemption_pb2_grpc
from suite.processes import wait_serving

log = logging.getLogger("bench")

BULK_ASSIGN_CODES = 20_000  # codes per BulkAssign call when the bench hands out codes


@dataclass
class Config:
    runs: int = 3
    seconds: float = 3.0  # measurement window of a closed-loop run
    warmup: float = 1.0
    pgbench_seconds: int = 6
    processes: int = 4  # load-generator client processes
    channels: int = 4  # gRPC channels (connections) per client process: spread over a service's workers
    concurrencies: tuple[int, ...] = (32, 64)
    workers: tuple[int, ...] = (1, cpu_count())  # redemption's WORKERS in the throughput runs
    open_loop_fraction: float = 0.5  # offered load of the open-loop runs, as a fraction of saturation
    generation_codes: int = 1_000_000
    # each a million codes through the API and a million rows by COPY (~75 s); one run keeps `make bench` under
    # 20 minutes with the events section (the target, 1.3x of COPY, has a wide margin: 0.84x)
    generation_runs: int = 1
    assignment_sizes: tuple[int, ...] = (1_000, 100_000, 1_000_000)
    assignment_callers: int = 8
    assignment_calls_per_caller: int = 25  # 200 calls a run: a fifth of the smallest book
    hot_attempts: int = 256
    hot_max_redemptions: int = 100
    pool_members: int = 10_000
    codes_per_member: int = 10
    soak_seconds: float = 600.0
    soak_operations: int = 1_000_000  # the soak ends at whichever comes first
    profile: bool = False


@dataclass
class Figure:
    key: str
    section: str
    label: str
    value: float | None
    unit: str
    runs: list[float] = field(default_factory=list)
    target: str = ""
    ratio: float | None = None
    met: bool | None = None
    note: str = ""


class Bench:
    def __init__(self, stack: Stack, generator: LoadGenerator, config: Config):
        self.stack = stack
        self.generator = generator
        self.config = config
        self.figures: list[Figure] = []
        self.violations: list[dict] = []  # every run's check, with its name
        self.cpu: dict[str, list[CpuShare]] = {}
        self.notes: list[str] = list(stack.notes)
        self.details: dict[str, object] = {}
        self.meter = CpuMeter(stack)
        self.workers: dict[str, int] = {}  # WORKERS of the services this bench restarted
        self.db = stack.connect()
        self.channels = {
            name: grpc.aio.insecure_channel(stack.address(name))
            for name in ("books", "redemption", "pools")
            if stack.has(name)
        }
        self.books = books_pb2_grpc.BookServiceStub(self.channels["books"])
        self.ledger = redemption_pb2_grpc.LedgerInternalServiceStub(self.channels["redemption"])

    async def close(self):
        for channel in self.channels.values():
            await channel.close()
        self.db.close()

    def figure(self, **kwargs) -> Figure:
        figure = Figure(**kwargs)
        self.figures.append(figure)
        return figure

    def get(self, key: str) -> Figure | None:
        return next((f for f in self.figures if f.key == key), None)

    def record_check(self, name: str, found: dict[str, int]) -> None:
        self.violations.append({"run": name, **found})
        if not checks.clean(found):
            log.error("integrity violation in %s: %s", name, found)
            print(f"  !! integrity violation in {name}: {found}", flush=True)

    async def create_book(self, name: str, **rules) -> str:
        book = books_pb2.Book(name=f"bench {name} {uuid.uuid4().hex[:6]}", code_pattern="B-{}", code_length=10, **rules)
        request = books_pb2.CreateBookRequest(book=book, request_id=str(uuid.uuid4()))
        for attempt in range(30):
            try:
                created = await self.books.CreateBook(request, metadata=self.stack.admin_metadata())
                return created.id
            except grpc.aio.AioRpcError as error:
                # right after a restart of redemption, books' channel to it may still be backing off
                if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == 29:
                    raise
                await asyncio.sleep(0.5)
        raise AssertionError("unreachable")

    async def generate(self, book_id: str, count: int) -> float:
        """GenerateCodes end to end (the call until its last progress message); seconds."""
        started = time.perf_counter()
        last = None
        async for progress in self.books.GenerateCodes(
            books_pb2.GenerateCodesRequest(book_id=book_id, count=count),
            metadata=self.stack.admin_metadata(),
            timeout=900,
        ):
            last = progress
        seconds = time.perf_counter() - started
        if last is None or last.generated != count or not last.done:
            raise RuntimeError(f"GenerateCodes stopped at {last}")
        return seconds

    async def bulk_assign(self, book_id: str, users: list[str], each: int) -> dict[str, list[str]]:
        reply = await self.ledger.BulkAssign(
            redemption_pb2.BulkAssignRequest(
                book_id=book_id,
                distribution_id=f"bench-{uuid.uuid4().hex[:8]}",
                assignments=[redemption_pb2.UserCodeCount(user_id=u, count=each) for u in users],
            ),
            metadata=self.stack.service_metadata(),
            timeout=600,
        )
        return {a.user_id: list(a.codes) for a in reply.assignments}

    async def held_codes(self, name: str, callers: int, per_caller: int, **rules) -> tuple[str, list[dict]]:
        """A fresh book whose codes are held by `callers` new users, `per_caller` each: their work dicts."""
        book_id = await self.create_book(name, **rules)
        users = self.stack.new_users(callers)
        await self.generate(book_id, callers * per_caller)
        held: dict[str, list[str]] = {}
        group = max(1, BULK_ASSIGN_CODES // per_caller)  # a distribution's size, not one huge call
        for start in range(0, len(users), group):
            held.update(await self.bulk_assign(book_id, users[start : start + group], per_caller))
        return book_id, [{"token": self.stack.token(u), "items": held[u]} for u in users]

    def load(self, name: str, **kwargs) -> RunResult:
        """One load-generator run with the CPU of every process measured: over the measurement window when
        the run has one (calls in the window ÷ CPU in it), else over the whole run (every call)."""
        kwargs.setdefault("processes", self.config.processes)
        kwargs.setdefault("channels", self.config.channels)
        marks: dict[str, tuple[dict[str, float], float]] = {}
        timers: list[threading.Timer] = []

        def mark(label: str) -> None:
            marks[label] = (self.meter.snapshot(), time.monotonic())

        def on_window(start: float, end: float) -> None:
            for label, at in (("start", start), ("end", end)):
                timers.append(threading.Timer(max(0.0, at - time.time()), mark, (label,)))
                timers[-1].start()

        whole: list[CpuShare] = []
        with self.meter.measure(whole):
            result = self.generator.run(on_window=on_window, **kwargs)
        for timer in timers:
            timer.join()
        if len(marks) == 2 and result.window_cpu_seconds is not None:
            (before, began), (after, ended) = marks["start"], marks["end"]
            share = CpuShare(ended - began, self.meter.delta(before, after), operations=result.calls)
            client = result.window_cpu_seconds
        else:
            share, client = whole[0], result.client_cpu_seconds
            share.operations = sum(result.outcomes.values())
        share.by["load generator"] = client
        share.by["other processes"] = max(0.0, share.by["other processes"] - client)
        self.cpu.setdefault(name, []).append(share)
        return result

    def closed_loop_figures(
        self, key: str, section: str, label: str, runs: list[RunResult], target: str = ""
    ) -> Figure:
        """Throughput, p50 and p99 (medians over the runs); returns the throughput figure."""
        throughput = self.figure(
            key=f"{key}.throughput",
            section=section,
            label=f"{label}: throughput",
            value=median([r.throughput for r in runs]),
            unit="calls/s",
            runs=[round(r.throughput, 1) for r in runs],
            target=target,
        )
        for stat in ("p50", "p99"):
            values = [getattr(r, stat) for r in runs]
            self.figure(
                key=f"{key}.{stat}",
                section=section,
                label=f"{label}: {stat}",
                value=median(values),
                unit="ms",
                runs=[round(v, 2) for v in values],
            )
        errors: dict[str, int] = {}
        for r in runs:
            for outcome, n in r.outcomes.items():
                if outcome not in ("OK", "200"):
                    errors[outcome] = errors.get(outcome, 0) + n
        if errors:
            throughput.note = f"non-success outcomes over all runs: {errors}"
        exhausted = sum(r.exhausted_callers for r in runs)
        if exhausted:
            throughput.note += f" {exhausted} callers ran out of codes before the window ended."
        return throughput

    def ratio(self, figure: Figure, of: Figure | None, target: str = "", at_least: float | None = None) -> None:
        """Sets figure's ratio to `of` (and whether it meets `at_least`)."""
        if of is None or not of.value or figure.value is None:
            return
        figure.ratio = figure.value / of.value
        figure.target = target
        if at_least is not None:
            figure.met = figure.ratio >= at_least

    async def restart(self, name: str, workers: int) -> None:
        """Stops a service and starts it again with WORKERS=workers, on the same port (unless it runs so)."""
        if self.workers.get(name) == workers:
            return
        suite = self.stack.suite
        (old,) = [c for c in suite.components if c.name == name]
        if old.process and old.process.poll() is None:
            old.process.send_signal(signal.SIGTERM)
            try:
                old.process.wait(30)
            except subprocess.TimeoutExpired:
                old.process.kill()
                old.process.wait()
        suite.components.remove(old)
        suite.extra_env["WORKERS"] = str(workers)
        try:
            component = suite.start(name, f"services.{name}")
        finally:
            suite.extra_env.pop("WORKERS")
        await wait_serving(component, timeout=60)
        await asyncio.sleep(1.0)  # the first worker answered; let the others finish starting too
        self.workers[name] = workers
        self.details.setdefault("restarts", []).append({"service": name, "workers": workers})

    def finish(self) -> None:
        """Peak memory of every service process, and the checks over the whole ledger."""
        peaks = self.stack.memory.stop() if self.stack.memory else {}
        for name, (largest, total) in peaks.items():
            self.figure(
                key=f"memory.{name}",
                section="8. Peak memory (RSS)",
                label=f"{name}: largest process (all its processes together: {total / (1 << 20):,.0f} MiB)",
                unit="MiB",
                value=largest / (1 << 20),
                target="< 200 MiB",
                met=largest < 200 << 20,
            )
        found = checks.check_everything(self.db)
        self.record_check("whole ledger at the end", found)
        runs = len(self.violations)
        bad = [v for v in self.violations if not checks.clean({k: n for k, n in v.items() if k != "run"})]
        self.figure(
            key="integrity",
            section="Integrity",
            label=f"runs checked in the database: {runs}",
            unit="runs with a violation",
            value=len(bad),
            target="0 over-redemptions, 0 double assignments",
            met=not bad,
            note="; ".join(str(v) for v in bad),
        )

    def profile(self, name: str, seconds: float) -> subprocess.Popen | None:
        """py-spy record of the redemption server and its workers for `seconds`, as raw collapsed stacks
        (text: grep-able, and flamegraph.pl draws them) in /tmp/bench-<name>.txt."""
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        pid = self.stack.pid("redemption")
        if pid is None or not Path(spy).exists():
            return None
        output = f"/tmp/bench-{name}.txt"
        self.notes.append(f"py-spy profile of the redemption server during {name}: {output}")
        return subprocess.Popen(
            [spy, "record", "-d", str(int(seconds + 1)), "-p", str(pid), "--subprocesses", "--nonblocking"]
            + ["--format", "raw", "-o", output],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
