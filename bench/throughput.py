"""Sections 1–3: the hot operations (redeem, random assignment) at 32 and 64 closed-loop callers, with one
redemption worker and with one per core, beside the trivial RPC (health Check) on the same server under
the same load generator and the database's own ceiling for the same statements (pgbench); redeem through
the gateway; CPU per operation of every process; p99 of an open loop at half the saturation rate."""

import math

from bench import checks, pgbench
from bench.core import Bench
from bench.load import RunResult, median

SECTION = "1. Hot operations"
CPU_SECTION = "2. CPU per operation"
OPEN_SECTION = "3. Open loop"


def _codes_per_caller(bench: Bench, callers: int) -> int:
    # enough codes for ~1,500 redeems/s (measured: 400–750/s) through settle, warm-up, window and tail
    cfg = bench.config
    return max(150, math.ceil(1500 * (cfg.warmup + cfg.seconds + 2.5) / callers))


def _print(name: str, run: int, result: RunResult) -> None:
    print(
        f"  {name} run {run + 1}: {result.throughput:,.0f}/s p50 {result.p50:.1f} ms p99 {result.p99:.1f} ms "
        f"{result.outcomes}" + (f" exhausted {result.exhausted_callers}" if result.exhausted_callers else ""),
        flush=True,
    )


async def _health(bench: Bench, name: str, run: int) -> RunResult:
    result = bench.load(
        name,
        kind="health",
        target=bench.stack.address("redemption"),
        callers=[{} for _ in range(32)],
        seconds=bench.config.seconds,
        warmup=bench.config.warmup,
    )
    _print(name, run, result)
    return result


async def redeem_run(
    bench: Bench, name: str, run: int, callers: int, transport: str = "grpc", **open_loop
) -> RunResult:
    book_id, work = await bench.held_codes(name, callers, _codes_per_caller(bench, callers))
    result = bench.load(
        name,
        kind="redeem",
        transport=transport,
        target=bench.stack.address("gateway" if transport == "http" else "redemption"),
        callers=work,
        seconds=bench.config.seconds,
        warmup=bench.config.warmup,
        **open_loop,
    )
    successes = result.outcomes.get("OK" if transport == "grpc" else "200", 0)
    bench.record_check(f"{name} run {run + 1}", checks.check_book(bench.db, book_id, redemptions=successes))
    _print(name, run, result)
    return result


async def _assign(bench: Bench, name: str, run: int, callers: int, book_id: str, **open_loop) -> RunResult:
    before = checks.book_totals(bench.db, book_id)["assigned_events"]
    users = bench.stack.new_users(callers)
    result = bench.load(
        name,
        kind="assign",
        target=bench.stack.address("redemption"),
        book_id=book_id,
        callers=[{"token": bench.stack.token(u)} for u in users],
        seconds=bench.config.seconds,
        warmup=bench.config.warmup,
        **open_loop,
    )
    found = checks.check_book(
        bench.db, book_id, assignments=before + result.outcomes.get("OK", 0), skip=("redeemed_history_mismatch",)
    )
    bench.record_check(f"{name} run {run + 1}", found)
    _print(name, run, result)
    return result


async def _assign_book(bench: Bench, runs: int) -> str:
    cfg = bench.config
    per_run = 1500 * (cfg.warmup + cfg.seconds + 2.5) * len(cfg.concurrencies) * len(cfg.workers)
    book_id = await bench.create_book("assign-throughput", allow_self_claim=True)
    await bench.generate(book_id, math.ceil(per_run * runs))
    bench.db.execute("ANALYZE redemption.coupons")
    return book_id


async def throughput(bench: Bench) -> None:
    cfg = bench.config
    print(
        f"Hot operations: health Check, redeem and random assignment at {cfg.concurrencies} callers with "
        f"WORKERS={cfg.workers}; pgbench ceilings",
        flush=True,
    )
    runs: dict[str, list[RunResult]] = {}
    ceilings: dict[str, list[float]] = {"redeem": [], "assign": []}
    book_id = await _assign_book(bench, cfg.runs)
    per_core = max(cfg.workers)
    for run in range(cfg.runs):  # interleaved, so drift over time hits every variant alike
        for workers in cfg.workers:
            await bench.restart("redemption", workers)
            name = f"health_32_w{workers}"
            runs.setdefault(name, []).append(await _health(bench, name, run))
            for callers in cfg.concurrencies:
                name = f"redeem_grpc_{callers}_w{workers}"
                profiling = cfg.profile and run == 0 and workers == per_core and callers == 32
                spy = bench.profile(name, cfg.warmup + cfg.seconds) if profiling else None
                runs.setdefault(name, []).append(await redeem_run(bench, name, run, callers))
                if spy is not None:
                    spy.wait()
                name = f"assign_grpc_{callers}_w{workers}"
                runs.setdefault(name, []).append(await _assign(bench, name, run, callers, book_id))
            if workers == per_core and bench.stack.has("gateway"):
                name = f"redeem_gateway_32_w{workers}"
                runs.setdefault(name, []).append(await redeem_run(bench, name, run, 32, transport="http"))
        for operation in ceilings:
            ceilings[operation].append(await pgbench.run(bench, operation, run))
    _figures(bench, runs, ceilings)
    await _open_loop(bench, book_id)


def _figures(bench: Bench, runs: dict[str, list[RunResult]], ceilings: dict[str, list[float]]) -> None:
    cfg = bench.config
    per_core = max(cfg.workers)
    ceiling = {
        operation: bench.figure(
            key=f"pgbench.{operation}",
            section=SECTION,
            label=f"pgbench {operation}: the service's statement, {pgbench.CLIENTS} clients (-j 2, -M prepared)",
            value=median(values),
            unit="calls/s",
            runs=[round(v, 1) for v in values],
        )
        for operation, values in ceilings.items()
    }
    for workers in cfg.workers:
        trivial = bench.closed_loop_figures(
            f"health.w{workers}",
            SECTION,
            f"health Check (trivial RPC), 32 callers, WORKERS={workers}",
            runs[f"health_32_w{workers}"],
        )
        for operation in ("redeem", "assign"):
            for callers in cfg.concurrencies:
                label = f"{operation} gRPC, {callers} callers, WORKERS={workers}"
                figure = bench.closed_loop_figures(
                    f"{operation}.w{workers}.{callers}", SECTION, label, runs[f"{operation}_grpc_{callers}_w{workers}"]
                )
                bench.ratio(
                    figure,
                    trivial,
                    ">= 0.4 of the trivial RPC" if callers == 32 else "/ trivial RPC",
                    0.4 if callers == 32 and workers == per_core else None,
                )
                of_db = bench.figure(
                    key=f"{operation}.w{workers}.{callers}.of_pgbench",
                    section=SECTION,
                    label=f"{label}: throughput / pgbench {operation}",
                    value=figure.value,
                    unit="calls/s",
                )
                bench.ratio(
                    of_db,
                    ceiling[operation],
                    ">= 0.35 of pgbench" if callers == 32 else "",
                    0.35 if callers == 32 and workers == per_core else None,
                )
    if f"redeem_gateway_32_w{per_core}" in runs:
        gateway = bench.closed_loop_figures(
            "redeem.gateway.32",
            SECTION,
            f"redeem through the gateway (HTTP/JSON), 32 callers, WORKERS={per_core}",
            runs[f"redeem_gateway_32_w{per_core}"],
        )
        bench.ratio(gateway, bench.get(f"redeem.w{per_core}.32.throughput"), ">= 0.7 of direct gRPC", 0.7)
    else:
        bench.notes.append("The gateway did not start: the gateway redeem figures are missing.")
    _cpu_figures(bench)


def _cpu_figures(bench: Bench) -> None:
    """CPU per operation of the service (all its processes) against CPU per trivial call, same workers."""
    for workers in bench.config.workers:
        trivial = _median_cpu(bench, f"health_32_w{workers}", "redemption")
        base = bench.figure(
            key=f"cpu.health.w{workers}",
            section=CPU_SECTION,
            label=f"redemption CPU per health Check, WORKERS={workers}",
            value=trivial,
            unit="ms",
        )
        for operation in ("redeem", "assign"):
            for callers in bench.config.concurrencies:
                name = f"{operation}_grpc_{callers}_w{workers}"
                figure = bench.figure(
                    key=f"cpu.{name}",
                    section=CPU_SECTION,
                    label=f"redemption CPU per {operation}, {callers} callers, WORKERS={workers}",
                    value=_median_cpu(bench, name, "redemption"),
                    unit="ms",
                )
                if figure.value is not None and base.value:
                    figure.ratio = figure.value / base.value
                    figure.target = "<= 2.5x the trivial RPC"
                    figure.met = figure.ratio <= 2.5


def _median_cpu(bench: Bench, run_name: str, component: str) -> float | None:
    values = [s.per_operation_ms().get(component) for s in bench.cpu.get(run_name, [])]
    values = [v for v in values if v is not None]
    return median(values) if values else None


async def _open_loop(bench: Bench, book_id: str) -> None:
    """p99 at an offered load of half the saturation rate (the best closed-loop throughput), per-core workers."""
    cfg = bench.config
    per_core = max(cfg.workers)
    print(f"Open loop at {cfg.open_loop_fraction:g} of saturation, WORKERS={per_core}", flush=True)
    await bench.restart("redemption", per_core)
    for operation in ("redeem", "assign"):
        saturation = max(bench.get(f"{operation}.w{per_core}.{c}.throughput").value for c in cfg.concurrencies)
        rate = cfg.open_loop_fraction * saturation
        results = []
        for run in range(cfg.runs):
            name = f"{operation}_open_w{per_core}"
            if operation == "redeem":
                results.append(await redeem_run(bench, name, run, 32, rate=rate))
            else:
                results.append(await _assign(bench, name, run, 32, book_id, rate=rate))
        label = f"{operation} at {rate:,.0f} calls/s offered ({cfg.open_loop_fraction:g} of {saturation:,.0f}/s)"
        achieved = bench.figure(
            key=f"open.{operation}.throughput",
            section=OPEN_SECTION,
            label=f"{label}: achieved",
            value=median([r.throughput for r in results]),
            unit="calls/s",
            runs=[round(r.throughput, 1) for r in results],
        )
        achieved.ratio = achieved.value / rate if rate else None
        for stat in ("p50", "p99"):
            values = [getattr(r, stat) for r in results]
            figure = bench.figure(
                key=f"open.{operation}.{stat}",
                section=OPEN_SECTION,
                label=f"{label}: {stat}",
                value=median(values),
                unit="ms",
                runs=[round(v, 2) for v in values],
            )
            if stat == "p99":
                figure.target, figure.met = "< 30 ms", figure.value < 30
