"""Section 9: the soak. 32 callers, each in turn redeeming a code, locking, unlocking and redeeming another,
and claiming a random code, for `soak_seconds` or `soak_operations` calls, whichever comes first. Judged by
the p99 of the last minute against the first, each service process's RSS at the start and the end, the
advisory locks left in pg_locks afterwards, and the ledger's checks."""

import contextlib
import math
import threading
import time

import psutil

from bench import checks
from bench.core import Bench
from bench.cpu import process_tree
from bench.load import MIXED_ROUND, RunResult

SECTION = "9. Soak"
CALLERS = 32


class RssSampler:
    """Each service process's RSS (supervisor and workers apart) every few seconds, with the time."""

    def __init__(self, bench: Bench, every: float = 5.0):
        self.bench, self.every = bench, every
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for component in self.bench.stack.suite.components:
            for process in process_tree(component.process.pid if component.process else None):
                with contextlib.suppress(psutil.Error):
                    found[f"{component.name} pid {process.pid}"] = process.memory_info().rss
        return found

    def _run(self):
        while not self._stop.wait(self.every):
            self.samples.append((time.time(), self.sample()))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join(self.every + 1)
        self.samples.append((time.time(), self.sample()))


def _p99(result: RunResult, start: float, end: float) -> float:
    values = sorted(lat for lat, at in zip(result.latencies_ms, result.ended_at, strict=True) if start <= at < end)
    return values[min(len(values) - 1, int(0.99 * len(values)))] if values else float("nan")


async def soak(bench: Bench) -> None:
    cfg = bench.config
    await bench.restart("redemption", max(cfg.workers))
    measured = bench.get(f"redeem.w{max(cfg.workers)}.32.throughput")
    rate = measured.value if measured and measured.value else 1500.0
    calls = min(cfg.soak_operations, math.ceil(1.25 * rate * (cfg.soak_seconds + cfg.warmup + 2)))
    rounds = math.ceil(calls / len(MIXED_ROUND))
    codes_per_round = sum(1 for _, new in MIXED_ROUND if new)
    per_caller = math.ceil(rounds * codes_per_round / CALLERS)
    print(
        f"Soak: {cfg.soak_seconds:g} s or {cfg.soak_operations:,} calls of the mix at {CALLERS} callers "
        f"({per_caller:,} held codes a caller, {rounds:,} random claims at most)",
        flush=True,
    )
    held_book, work = await bench.held_codes("soak-held", CALLERS, per_caller)
    claim_book = await bench.create_book("soak-claims", allow_self_claim=True)
    await bench.generate(claim_book, rounds + 1000)
    bench.db.execute("ANALYZE redemption.coupons")
    for caller in work:
        caller["book_id"] = claim_book
    with RssSampler(bench) as rss:
        result = bench.load(
            "soak",
            kind="mixed",
            target=bench.stack.address("redemption"),
            callers=work,
            seconds=cfg.soak_seconds,
            warmup=cfg.warmup,
            timeout=60,
        )
    minute = min(60.0, cfg.soak_seconds / 4)
    start, end = result.window_start, result.window_start + result.seconds
    if result.ended_at:
        end = min(end, max(result.ended_at))  # callers that ran out of codes end the soak early
    first, last = _p99(result, start, start + minute), _p99(result, end - minute, end + 1)
    by_kind: dict[str, int] = {}
    for outcome, n in result.outcomes.items():
        by_kind[outcome] = by_kind.get(outcome, 0) + n
    print(f"  {result.calls:,} calls in {end - start:.0f} s; p99 first {first:.1f} ms last {last:.1f} ms; {by_kind}")
    advisory = bench.db.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()[0]
    claims = by_kind.get("assign:OK", 0)
    bench.record_check(
        "soak held book", checks.check_book(bench.db, held_book, redemptions=by_kind.get("redeem:OK", 0))
    )
    bench.record_check(
        "soak claim book",
        checks.check_book(bench.db, claim_book, assignments=claims, skip=("redeemed_history_mismatch",)),
    )
    failures = {k: n for k, n in by_kind.items() if not k.endswith(":OK")}
    label = f"{result.calls:,} mixed calls in {end - start:.0f} s, {CALLERS} callers"
    bench.figure(
        key="soak.throughput",
        section=SECTION,
        label=f"{label}: throughput",
        value=result.calls / (end - start),
        unit="calls/s",
        note=f"calls by kind and outcome: {by_kind}",
    )
    bench.figure(key="soak.p99.first", section=SECTION, label=f"p99, first {minute:g} s", value=first, unit="ms")
    drift = bench.figure(key="soak.p99.last", section=SECTION, label=f"p99, last {minute:g} s", value=last, unit="ms")
    drift.ratio = last / first if first else None
    drift.target, drift.met = "<= 1.2x the first", drift.ratio is not None and drift.ratio <= 1.2
    bench.figure(
        key="soak.advisory",
        section=SECTION,
        label="advisory locks in pg_locks afterwards",
        value=advisory,
        unit="locks",
        target="0",
        met=advisory == 0,
    )
    bench.figure(
        key="soak.failures",
        section=SECTION,
        label="calls that failed",
        value=sum(failures.values()),
        unit="calls",
        target="0",
        met=not failures,
        note=str(failures) if failures else "",
    )
    _rss_figures(bench, rss.samples, start)


def _rss_figures(bench: Bench, samples: list[tuple[float, dict[str, int]]], window_start: float) -> None:
    """RSS of each process at the start of the window (the first sample after it) and at the end."""
    after = [s for at, s in samples if at >= window_start]
    if len(after) < 2:
        return
    first, last = after[0], after[-1]
    for process in sorted(set(first) & set(last)):
        growth = last[process] / first[process] - 1
        bench.figure(
            key=f"soak.rss.{process}",
            section=SECTION,
            label=f"RSS {process}: start → end",
            value=last[process] / (1 << 20),
            unit="MiB",
            ratio=1 + growth,
            target=f"< 10% growth (from {first[process] / (1 << 20):,.0f} MiB)",
            met=growth < 0.10,
        )
    gone = sorted(set(first) ^ set(last))
    if gone:
        bench.notes.append(f"processes that came or went during the soak: {gone}")
