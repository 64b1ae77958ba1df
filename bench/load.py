"""Closed-loop load generator: several client processes, each running many concurrent callers.

Every caller sends one request, waits for the answer, and sends the next (closed loop). Each call's
latency and outcome are recorded; a run reports the calls that completed inside the measurement window
(after a warm-up), so connection set-up and the ramp do not count.

The worker processes are started once (spawn: no inherited gRPC state) and reused for every run.
Each reports its own CPU time, so the report can show how much of the machine the generator took.
"""

import asyncio
import multiprocessing
import os
import statistics
import time
from dataclasses import dataclass, field

# A job is a plain dict (picklable): kind, target, per-caller work, timing. See _caller for the kinds.


@dataclass
class RunResult:
    calls: int  # completed inside the window
    seconds: float  # the window
    latencies_ms: list[float]
    outcomes: dict[str, int]  # every call of the run, window or not: outcome -> count
    client_cpu_seconds: float
    exhausted_callers: int = 0  # callers that ran out of work before the window ended
    all_latencies_ms: list[float] = field(default_factory=list)

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


def _grpc_call(kind: str, job: dict, stubs: list, work, pb):
    """The coroutine factory for one call of this kind."""
    if kind == "health":
        from grpc_health.v1 import health_pb2

        request = health_pb2.HealthCheckRequest()
        return lambda stub, _item: stub.Check(request, timeout=job["timeout"])
    if kind in ("redeem", "hot"):
        metadata = (("authorization", f"Bearer {work['token']}"),)
        return lambda stub, code: stub.RedeemCoupon(
            pb.RedeemCouponRequest(code=code), metadata=metadata, timeout=job["timeout"]
        )
    if kind == "assign":
        metadata = (("authorization", f"Bearer {work['token']}"),)
        request = pb.AssignRandomCouponRequest(book_id=job["book_id"], user_id="me")
        return lambda stub, _item: stub.AssignRandomCoupon(request, metadata=metadata, timeout=job["timeout"])
    raise ValueError(kind)


async def _run_worker(job: dict) -> dict:
    import grpc

    kind = job["kind"]
    callers = job["callers"]  # this process's share: a list of per-caller work dicts
    start_at, window_end = job["start_at"], job["window_end"]
    records: list[tuple[float, float, str]] = []  # (end time, latency ms, outcome)
    exhausted = 0

    if job["transport"] == "http":
        import aiohttp

        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=job["timeout"]))
        base = f"http://{job['target']}"

        async def call_http(work, code):
            headers = {"authorization": f"Bearer {work['token']}", "content-type": "application/json"}
            async with session.post(f"{base}/api/v1/coupons/redeem/{code}", data=b"{}", headers=headers) as reply:
                await reply.read()
                return str(reply.status)

        channels = []
    else:
        from grpc_health.v1 import health_pb2_grpc

        from coupons.redemption.v1 import redemption_pb2 as pb
        from coupons.redemption.v1 import redemption_pb2_grpc

        channels = [
            grpc.aio.insecure_channel(job["target"], options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(job.get("channels", 2))
        ]
        if kind == "health":
            stubs = [health_pb2_grpc.HealthStub(c) for c in channels]
        else:
            stubs = [redemption_pb2_grpc.RedemptionServiceStub(c) for c in channels]
        for c in channels:
            await c.channel_ready()

    async def caller(index: int, work: dict):
        nonlocal exhausted
        items = work.get("items")
        limit = work.get("calls")  # fixed number of calls instead of a time window
        if job["transport"] == "http":
            send = lambda item: call_http(work, item)  # noqa: E731
        else:
            make = _grpc_call(kind, job, stubs, work, pb)
            stub = stubs[index % len(stubs)]
            send = lambda item: make(stub, item)  # noqa: E731
        delay = start_at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        done = 0
        position = 0
        while True:
            if limit is not None and done >= limit:
                return
            if limit is None and time.time() >= window_end:
                return
            if items is not None:
                if position >= len(items):
                    exhausted += 1
                    return
                item = items[position]
                position += 1
            else:
                item = None
            began = time.perf_counter()
            try:
                result = await send(item)
                outcome = result if isinstance(result, str) else "OK"
            except grpc.aio.AioRpcError as error:
                outcome = error.code().name
            except Exception as error:  # noqa: BLE001 - counted, not fatal
                outcome = type(error).__name__
            ended = time.perf_counter()
            records.append((time.time(), (ended - began) * 1000.0, outcome))
            done += 1
            if kind == "hot":
                return

    cpu_before = os.times()
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
    }


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
        **extra,
    ) -> RunResult:
        """Runs `callers` (one work dict each) spread over the client processes.

        With `seconds` the run is a time window after `warmup`; without it every caller does its own
        fixed `calls` (or one call for kind "hot") and every call counts.
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
                    **extra,
                }
            )
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
            exhausted_callers=sum(r["exhausted"] for r in replies),
            all_latencies_ms=[r[1] for r in records],
        )


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")
