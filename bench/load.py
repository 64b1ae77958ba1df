"""Load generator: several client processes, each running many concurrent callers.

Closed loop: every caller sends one request, waits for the answer, and sends the next. Open loop (a
`rate`): calls leave at a fixed pace whatever the answers do. Each call's latency and outcome are
recorded; a run reports the calls that completed inside the measurement window (after a warm-up), so
connection set-up and the ramp do not count.

The worker processes are started once (spawn: no inherited gRPC state) and reused for every run.
Each reports its own CPU time, so the report can show how much of the machine the generator took.
"""

import asyncio
import multiprocessing
import os
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# A job is a plain dict (picklable): kind, target, per-caller work, timing. See _grpc_call for the kinds.


@dataclass
class RunResult:
    calls: int  # completed inside the window
    seconds: float  # the window
    latencies_ms: list[float]
    outcomes: dict[str, int]  # every call of the run, window or not: outcome -> count
    client_cpu_seconds: float
    exhausted_callers: int = 0  # callers that ran out of work before the window ended
    window_cpu_seconds: float | None = None  # the load generator's CPU over the window alone, when measured
    all_latencies_ms: list[float] = field(default_factory=list)
    ended_at: list[float] = field(default_factory=list)  # wall-clock end of each call inside the window
    window_start: float = 0.0

    @property
    def throughput(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def percentile(self, q: float, every_call: bool = False) -> float:
        values = sorted(self.all_latencies_ms if every_call else self.latencies_ms)
        if not values:
            return float("nan")
        index = min(len(values) - 1, max(0, int(round(q / 100 * len(values) + 0.5)) - 1))
        return values[index]

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p99(self) -> float:
        return self.percentile(99)


def _grpc_call(kind: str, job: dict, work, pb):
    """The coroutine factory `send(stub, item)` for one call of this kind."""
    if kind == "health":
        from grpc_health.v1 import health_pb2

        request = health_pb2.HealthCheckRequest()
        return lambda stub, _item: stub.Check(request, timeout=job["timeout"])
    metadata = (("authorization", f"Bearer {work['token']}"),)
    if kind in ("redeem", "hot"):
        return lambda stub, code: stub.RedeemCoupon(
            pb.RedeemCouponRequest(code=code), metadata=metadata, timeout=job["timeout"]
        )
    if kind == "lock":
        return lambda stub, code: stub.LockCoupon(
            pb.LockCouponRequest(code=code), metadata=metadata, timeout=job["timeout"]
        )
    if kind == "unlock":
        return lambda stub, code: stub.UnlockCoupon(
            pb.UnlockCouponRequest(code=code), metadata=metadata, timeout=job["timeout"]
        )
    if kind == "assign":
        request = pb.AssignRandomCouponRequest(book_id=work.get("book_id") or job["book_id"], user_id="me")
        return lambda stub, _item: stub.AssignRandomCoupon(request, metadata=metadata, timeout=job["timeout"])
    raise ValueError(kind)


# The soak's mix, in turn for each caller: a redeem; a lock, an unlock and a redeem of one code; a random
# assignment. Each call is recorded as "<kind>:<outcome>".
MIXED_ROUND = (("redeem", True), ("lock", True), ("unlock", False), ("redeem", False), ("assign", None))


async def _outcome(call) -> str:
    import grpc

    try:
        result = await call
        return result if isinstance(result, str) else "OK"
    except grpc.aio.AioRpcError as error:
        return error.code().name
    except Exception as error:  # noqa: BLE001 - counted, not fatal
        return type(error).__name__


async def _run_worker(job: dict) -> dict:
    import grpc

    kind = job["kind"]
    callers = job["callers"]  # this process's share: a list of per-caller work dicts
    start_at, window_end = job["start_at"], job["window_end"]
    records: list[tuple[float, float, str]] = []  # (end time, latency ms, outcome)
    exhausted = 0
    kinds = sorted({k for k, _ in MIXED_ROUND}) if kind == "mixed" else [kind]

    if job["transport"] == "http":
        import aiohttp

        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=job["timeout"]))
        base = f"http://{job['target']}"

        def senders(work: dict) -> dict:
            headers = {"authorization": f"Bearer {work['token']}", "content-type": "application/json"}

            async def redeem(_stub, code):
                async with session.post(f"{base}/api/v1/coupons/redeem/{code}", data=b"{}", headers=headers) as reply:
                    await reply.read()
                    return str(reply.status)

            return {"redeem": redeem}

        stubs: list = [None]
        channels = []
    else:
        from grpc_health.v1 import health_pb2_grpc

        from coupons.redemption.v1 import redemption_pb2 as pb
        from coupons.redemption.v1 import redemption_pb2_grpc

        channels = [
            grpc.aio.insecure_channel(job["target"], options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(job.get("channels", 2))
        ]
        stub_class = health_pb2_grpc.HealthStub if kind == "health" else redemption_pb2_grpc.RedemptionServiceStub
        stubs = [stub_class(c) for c in channels]
        for c in channels:
            await c.channel_ready()

        def senders(work: dict) -> dict:
            return {k: _grpc_call(k, job, work, pb) for k in kinds}

    async def caller(index: int, work: dict):
        nonlocal exhausted
        items = iter(work.get("items") or ())
        limit = work.get("calls")  # fixed number of calls instead of a time window
        send, stub = senders(work), stubs[index % len(stubs)]
        delay = start_at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        done = 0
        item = None
        while (done < limit) if limit is not None else (time.time() < window_end):
            op, new_item = MIXED_ROUND[done % len(MIXED_ROUND)] if kind == "mixed" else (kind, "items" in work)
            if new_item:
                item = next(items, None)
                if item is None:
                    exhausted += 1
                    return
            began = time.perf_counter()
            outcome = await _outcome(send[op](stub, item))
            label = f"{op}:{outcome}" if kind == "mixed" else outcome
            records.append((time.time(), (time.perf_counter() - began) * 1000.0, label))
            done += 1
            if kind == "hot":
                return

    async def open_loop():
        """Calls at a fixed rate whatever the answers' pace; a latency counts from the call's scheduled
        time, so time spent queued behind a slow answer is not hidden (no coordinated omission)."""
        nonlocal exhausted
        interval = 1.0 / job["rate"]
        work = [(senders(w), iter(w.get("items") or ())) for w in callers]
        first = start_at + random.random() * interval  # processes do not tick together
        in_flight: set = set()

        async def one(send, stub, item, scheduled: float):
            outcome = await _outcome(send[kind](stub, item))
            records.append((time.time(), (time.perf_counter() - scheduled) * 1000.0, outcome))

        n = 0
        while (due := first + n * interval) < window_end:
            if (delay := due - time.time()) > 0:
                await asyncio.sleep(delay)
            send, items = work[n % len(work)]
            item = next(items, None) if kind in ("redeem", "lock", "unlock") else None
            if item is None and kind in ("redeem", "lock", "unlock"):
                exhausted += 1
            else:
                scheduled = time.perf_counter() + (due - time.time())
                task = asyncio.create_task(one(send, stubs[n % len(stubs)], item, scheduled))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            n += 1
        await asyncio.gather(*in_flight)

    cpu_before = os.times()
    window_cpu: dict[str, float] = {}  # this process's CPU seconds at the window's start and end
    loop = asyncio.get_running_loop()
    for mark, at in (("start", job["window_start"]), ("end", window_end)):
        if at != float("inf"):
            loop.call_later(max(0.0, at - time.time()), lambda mark=mark: window_cpu.update({mark: _cpu_seconds()}))
    if job.get("rate"):
        await open_loop()
    else:
        await asyncio.gather(*(caller(i, w) for i, w in enumerate(callers)))
    cpu_after = os.times()
    for c in channels:
        await c.close()
    if job["transport"] == "http":
        await session.close()
    return {
        "records": records,
        "exhausted": exhausted,
        "cpu": (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system),
        "window_cpu": window_cpu["end"] - window_cpu["start"] if len(window_cpu) == 2 else None,
    }


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _worker_main(connection) -> None:
    try:
        import uvloop  # noqa: F401 - not a dependency; used only if present
    except ImportError:
        pass
    while True:
        job = connection.recv()
        if job is None:
            return
        try:
            connection.send(asyncio.run(_run_worker(job)))
        except Exception as error:  # noqa: BLE001 - reported to the parent
            connection.send({"error": f"{type(error).__name__}: {error}"})


class LoadGenerator:
    """A fixed set of client processes that run jobs on request."""

    def __init__(self, processes: int):
        context = multiprocessing.get_context("spawn")
        self.connections = []
        self.processes = []
        for _ in range(processes):
            parent, child = context.Pipe()
            process = context.Process(target=_worker_main, args=(child,), daemon=True)
            process.start()
            self.connections.append(parent)
            self.processes.append(process)

    def close(self) -> None:
        for connection in self.connections:
            try:
                connection.send(None)
            except (BrokenPipeError, OSError):
                pass
        for process in self.processes:
            process.join(5)
            if process.is_alive():
                process.kill()

    def run(
        self,
        *,
        kind: str,
        target: str,
        callers: list[dict],
        transport: str = "grpc",
        seconds: float | None = None,
        warmup: float = 1.0,
        processes: int | None = None,
        timeout: float = 30.0,
        settle: float = 1.0,
        rate: float | None = None,
        on_window: Callable[[float, float], None] | None = None,
        **extra,
    ) -> RunResult:
        """Runs `callers` (one work dict each) spread over the client processes.

        With `seconds` the run is a time window after `warmup`; without it every caller does its own
        fixed `calls` (or one call for kind "hot") and every call counts. With `rate` (calls per second,
        over all processes) the run is an open loop: the processes call at that pace, taking the callers'
        work in turn, however long the answers take. `on_window(start, end)` is told the window's wall-clock
        bounds once the run is under way (to measure the machine over the window alone).
        """
        count = min(processes or len(self.connections), len(callers))
        shares = [callers[i::count] for i in range(count)]
        start_at = time.time() + settle
        window_start = start_at + (warmup if seconds else 0.0)
        window_end = window_start + seconds if seconds else float("inf")
        for connection, share in zip(self.connections[:count], shares, strict=True):
            connection.send(
                {
                    "kind": kind,
                    "target": target,
                    "transport": transport,
                    "callers": share,
                    "start_at": start_at,
                    "window_start": window_start,
                    "window_end": window_end,
                    "timeout": timeout,
                    "rate": rate / count if rate else None,
                    **extra,
                }
            )
        if on_window is not None and seconds:
            on_window(window_start, window_end)
        replies = [connection.recv() for connection in self.connections[:count]]
        errors = [r["error"] for r in replies if "error" in r]
        if errors:
            raise RuntimeError("load generator failed: " + "; ".join(errors))
        records = [r for reply in replies for r in reply["records"]]
        outcomes: dict[str, int] = {}
        for _, _, outcome in records:
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if seconds:
            inside = [r for r in records if window_start <= r[0] <= window_end]
            window = seconds
        else:
            inside = records
            window = (max(r[0] for r in records) - start_at) if records else 0.0
        return RunResult(
            calls=len(inside),
            seconds=window,
            latencies_ms=[r[1] for r in inside],
            outcomes=outcomes,
            client_cpu_seconds=sum(r["cpu"] for r in replies),
            window_cpu_seconds=None
            if any(r["window_cpu"] is None for r in replies)
            else sum(r["window_cpu"] for r in replies),
            exhausted_callers=sum(r["exhausted"] for r in replies),
            all_latencies_ms=[r[1] for r in records],
            ended_at=[r[0] for r in inside],
            window_start=window_start,
        )


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")
