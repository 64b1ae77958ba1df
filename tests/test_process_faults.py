"""Process faults, proven against the suite as `make run` starts it: `kill -9` of redemption, of the gateway and
of pools under load, clients retrying by request_id, then the database checked for what was acknowledged; and a
60 s soak of mixed traffic checked for leaked advisory locks, growing processes and ledger integrity.

The module runs a suite of its own (its own ports and RUN_DIR, beside the session's, on the same database), so
the processes it kills are its own and no other test sees them go. The figures of each experiment are printed
straight to the terminal (no `-s` needed).
"""

import asyncio
import collections
import json
import os
import random
import signal
import time
import uuid
from dataclasses import dataclass, field

import aiohttp
import grpc
import psycopg
import pytest

from coupons.auth.v1 import auth_pb2, auth_pb2_grpc
from coupons.books.v1 import books_pb2, books_pb2_grpc
from coupons.pools.v1 import pools_pb2, pools_pb2_grpc
from coupons.redemption.v1 import redemption_pb2 as pb
from coupons.redemption.v1 import redemption_pb2_grpc
from services.pools.domain import DISTRIBUTION_NAMESPACE
from suite.processes import Component, Suite, wait_http, wait_serving
from tests.fixtures_suite import free_suite_ports, start_test_suite

# What a client following gRPC conventions retries, with the same request_id.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED, grpc.StatusCode.DEADLINE_EXCEEDED}
# ... and over HTTP: 409 ABORTED, 503 UNAVAILABLE, 504 DEADLINE_EXCEEDED (plus any connection failure).
RETRYABLE_HTTP = {409, 503, 504}
# A client that reconnects promptly once the server is back (gRPC's default backoff grows to 120 s).
CLIENT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.use_local_subchannel_pool", 1),
]
USERS = 8
CALL_TIMEOUT = 3.0


@dataclass
class User:
    user_id: str
    token: str

    @property
    def metadata(self) -> tuple:
        return (("authorization", f"Bearer {self.token}"),)


@dataclass
class Faults:
    suite: Suite
    database_url: str
    users: list[User]
    admin: User
    service: tuple  # the books service's SERVICE token, for LedgerInternalService
    channels: list = field(default_factory=list)

    def channel(self, name: str) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.suite.ports[name]}", options=CLIENT_OPTIONS)
        self.channels.append(channel)
        return channel

    def component(self, name: str) -> Component:
        """The live process of a component (a restarted one replaces the killed one)."""
        return [c for c in self.suite.components if c.name == name][-1]

    async def kill(self, name: str) -> float:
        """kill -9, no warning: in-flight calls, connections and transactions are cut where they stand."""
        process = self.component(name).process
        os.kill(process.pid, signal.SIGKILL)
        await asyncio.to_thread(process.wait)
        return time.monotonic()

    async def restart(self, name: str) -> tuple[float, float]:
        """A new process on the same port; (spawned, ready) times."""
        spawned = time.monotonic()
        component = self.suite.start(name, "gateway" if name == "gateway" else f"services.{name}")
        await (wait_http(component) if name == "gateway" else wait_serving(component))
        return spawned, time.monotonic()

    async def book(self, count: int, **rules) -> tuple[str, list[str]]:
        """A fresh book in the ledger (PutBookRules) with `count` new codes (AddCodes)."""
        internal = redemption_pb2_grpc.LedgerInternalServiceStub(self.channel("redemption"))
        book_id = str(uuid.uuid4())
        await internal.PutBookRules(
            pb.PutBookRulesRequest(rules=pb.BookRules(book_id=book_id, version=1, **rules)), metadata=self.service
        )
        codes = [f"KILL-{book_id[:8].upper()}-{i:06d}" for i in range(count)]
        await internal.AddCodes(pb.AddCodesRequest(book_id=book_id, codes=codes), metadata=self.service)
        return book_id, codes

    async def held_codes(self, per_user: int) -> tuple[str, dict[str, list[str]]]:
        """A fresh book with per_user codes held by each user: (book_id, {user_id: codes})."""
        book_id, _ = await self.book(per_user * len(self.users))
        reply = await redemption_pb2_grpc.LedgerInternalServiceStub(self.channel("redemption")).BulkAssign(
            pb.BulkAssignRequest(
                book_id=book_id, assignments=[pb.UserCodeCount(user_id=u.user_id, count=per_user) for u in self.users]
            ),
            metadata=self.service,
        )
        return book_id, {a.user_id: list(a.codes) for a in reply.assignments}

    def query(self, sql: str, *params) -> list[tuple]:
        with psycopg.connect(self.database_url) as conn:
            return conn.execute(sql, params).fetchall()


def _report(capsys, title: str, figures: dict) -> None:
    """The experiment's figures, straight to the terminal and into the captured output."""
    lines = [f"\n[fault] {title}"] + [f"    {key:<28} {value}" for key, value in figures.items()]
    with capsys.disabled():
        print("\n".join(lines), flush=True)


@pytest.fixture(scope="module")
async def faults(database_url, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("fault-suite")
    suite, _ = await start_test_suite(
        database_url,
        run_dir,
        free_suite_ports(),
        # Cheap bcrypt for the accounts registered below; small pools (plus overflow under load), as this
        # suite runs beside the session's on one database server.
        extra_env={"BCRYPT_ROUNDS": "4", "DB_POOL_SIZE": "4"},
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{suite.ports['auth']}") as channel:
            auth = auth_pb2_grpc.AuthServiceStub(channel)
            sessions = [
                await auth.Register(
                    auth_pb2.RegisterRequest(email=f"fault-{uuid.uuid4().hex[:10]}@example.com", password="fault-pw-1")
                )
                for _ in range(USERS)
            ]
            admin = await auth.Login(auth_pb2.LoginRequest(email="admin@example.com", password="admin123"))
            secret = (run_dir / "keys" / "service-books.secret").read_text().strip()
            service = await auth_pb2_grpc.AuthInternalServiceStub(channel).IssueServiceToken(
                auth_pb2.IssueServiceTokenRequest(service="books", secret=secret)
            )
        harness = Faults(
            suite,
            database_url,
            [User(s.user.id, s.access_token) for s in sessions],
            User(admin.user.id, admin.access_token),
            (("authorization", f"Bearer {service.access_token}"),),
        )
        yield harness
        for channel in harness.channels:
            await channel.close()
    finally:
        suite.stop()
    live = [c for c in suite.components if c.process.returncode != -signal.SIGKILL]
    exits = {c.name: c.process.returncode for c in live}
    assert all(code == 0 for code in exits.values()), f"unclean exits: {exits}"


def _ledger_figures(faults: Faults, book_id: str, acknowledged: set[str]) -> dict:
    """What the database says about a book's redemptions, against what clients were told."""
    rows = faults.query(
        "SELECT c.code, c.state, c.redemption_count, "
        "(SELECT count(*) FROM redemption.history h WHERE h.code = c.code AND h.event = 'REDEEMED_EVENT') "
        "FROM redemption.coupons c WHERE c.book_id = %s",
        book_id,
    )
    redeemed = {code for code, state, count, events in rows if count > 0 or events > 0}
    return {
        "acknowledged": len(acknowledged),
        "redeemed in the ledger": len(redeemed),
        "lost (acked, not in ledger)": len(acknowledged - redeemed),
        "unacknowledged but redeemed": len(redeemed - acknowledged),
        "doubled (count or events >1)": sum(1 for _, _, count, events in rows if count > 1 or events > 1),
        "count != history events": sum(1 for _, _, count, events in rows if count != events),
    }


def _assert_exact(figures: dict) -> None:
    assert figures["lost (acked, not in ledger)"] == 0, figures
    assert figures["unacknowledged but redeemed"] == 0, figures  # every attempt was retried to its answer
    assert figures["doubled (count or events >1)"] == 0, figures
    assert figures["count != history events"] == 0, figures


async def _redeem_under_a_kill(faults: Faults, name: str, redeem, held: dict) -> tuple[dict, set[str]]:
    """Workers redeem their codes (each retried to an answer with one request_id) while `name` is killed
    with -9 and restarted; they stop a few acknowledgements after it is back. Returns the figures."""
    seen: collections.Counter = collections.Counter()
    acknowledged: dict[str, float] = {}
    interrupted: set[str] = set()  # codes with at least one failed attempt
    back = asyncio.Event()

    async def worker(user: User, codes: list[str]) -> None:
        after = 0
        for code in codes:
            if back.is_set() and after >= 5:
                return
            request_id, attempt = f"kill-{name}-{code}", 0
            while True:
                status = await redeem(user, code, request_id)
                seen[status] += 1
                if status == "OK":
                    acknowledged[code] = time.monotonic()
                    after += back.is_set()
                    break
                interrupted.add(code)
                attempt += 1
                await asyncio.sleep(min(0.02 * 2**attempt, 0.3))

    async def chaos() -> tuple[float, float, float]:
        while len(acknowledged) < 60:  # under way
            await asyncio.sleep(0.02)
        killed_at.append(time.time())
        killed = await faults.kill(name)
        spawned, ready = await faults.restart(name)
        back.set()
        return killed, spawned, ready

    killed_at: list[float] = []
    started = time.monotonic()
    async with asyncio.timeout(90):
        *_, (killed, spawned, ready) = await asyncio.gather(
            *(worker(u, held[u.user_id]) for u in faults.users), chaos()
        )
    first_after = min(t for t in acknowledged.values() if t > killed)
    # An interrupted redeem whose transaction had committed before the kill: its retry got the stored answer.
    replayed = faults.query(
        "SELECT count(*) FROM redemption.history WHERE event = 'REDEEMED_EVENT' AND code = ANY(%s) "
        "AND created_at < to_timestamp(%s)",
        sorted(interrupted),
        killed_at[0],
    )[0][0]
    figures = {
        "statuses seen": dict(seen),
        "acked before the kill": sum(1 for t in acknowledged.values() if t < killed),
        "interrupted, then retried": len(interrupted),
        "... committed before the kill": f"{replayed} (their retry got the stored answer)",
        "new process: spawn to SERVING": f"{ready - spawned:.2f} s",
        "recovery: kill to first ack": f"{first_after - killed:.2f} s",
        "run": f"{time.monotonic() - started:.1f} s, {USERS} parallel clients",
    }
    return figures, set(acknowledged)


async def test_kill_9_of_redemption_under_parallel_redeems_loses_and_doubles_nothing(faults, capsys):
    book_id, held = await faults.held_codes(200)
    stubs = [redemption_pb2_grpc.RedemptionServiceStub(faults.channel("redemption")) for _ in range(2)]

    async def redeem(user: User, code: str, request_id: str) -> str:
        try:
            await random.choice(stubs).RedeemCoupon(
                pb.RedeemCouponRequest(code=code, request_id=request_id), metadata=user.metadata, timeout=CALL_TIMEOUT
            )
            return "OK"
        except grpc.aio.AioRpcError as error:
            assert error.code() in RETRYABLE, f"{error.code().name}: {error.details()}"
            return error.code().name

    figures, acknowledged = await _redeem_under_a_kill(faults, "redemption", redeem, held)
    figures |= _ledger_figures(faults, book_id, acknowledged)
    _report(capsys, "kill -9 redemption under parallel RedeemCoupon (gRPC), retried by request_id", figures)
    assert figures["statuses seen"].get("UNAVAILABLE", 0) > 0, "the kill met no call; nothing was tested"
    assert figures["acked before the kill"] > 0
    _assert_exact(figures)


async def test_kill_9_of_the_gateway_under_parallel_http_redeems_loses_and_doubles_nothing(faults, capsys):
    book_id, held = await faults.held_codes(200)
    timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as http:

        async def redeem(user: User, code: str, request_id: str) -> str:
            url = f"http://127.0.0.1:{faults.suite.ports['gateway']}/api/v1/coupons/redeem/{code}"
            headers = {"authorization": f"Bearer {user.token}"}
            try:
                async with http.post(url, json={"request_id": request_id}, headers=headers) as response:
                    body = await response.text()
                    if response.status == 200:
                        return "OK"
                    assert response.status in RETRYABLE_HTTP, f"{response.status}: {body}"
                    return f"HTTP {response.status}"
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as error:
                # refused, reset, cut mid-answer
                return type(error).__name__

        figures, acknowledged = await _redeem_under_a_kill(faults, "gateway", redeem, held)
    figures |= _ledger_figures(faults, book_id, acknowledged)
    _report(capsys, "kill -9 gateway under parallel POST /api/v1/coupons/redeem (HTTP), retried by request_id", figures)
    statuses = figures["statuses seen"]
    assert set(statuses) - {"OK", "HTTP 409", "HTTP 503", "HTTP 504"}, "the kill met no request; nothing was tested"
    assert figures["acked before the kill"] > 0
    _assert_exact(figures)


@pytest.mark.parametrize("moment", ["during the ledger's transaction", "after the ledger committed"])
async def test_kill_9_of_pools_during_a_20000_code_distribution_distributes_once(faults, capsys, moment):
    members, per_member = faults.users, 20_000 // len(faults.users)
    book_id, _ = await faults.book(20_000)
    admin = faults.admin.metadata
    stub = pools_pb2_grpc.PoolServiceStub(faults.channel("pools"))
    pool = await stub.CreatePool(
        pools_pb2.CreatePoolRequest(pool=pools_pb2.Pool(name=f"Kill pool {uuid.uuid4().hex[:8]}")), metadata=admin
    )
    await stub.AddPoolMembers(
        pools_pb2.AddPoolMembersRequest(pool_id=pool.id, user_ids=[u.user_id for u in members]), metadata=admin
    )
    request_id = f"distribute-{uuid.uuid4().hex}"
    trace = (("x-request-id", request_id),)  # every attempt, and pools' calls to the ledger, log under it
    distribution_id = str(uuid.uuid5(DISTRIBUTION_NAMESPACE, request_id))
    request = pools_pb2.DistributeRequest(
        pool_id=pool.id, book_id=book_id, mode=pools_pb2.EQUAL, codes_per_member=per_member, request_id=request_id
    )
    seen: collections.Counter = collections.Counter()

    async def distribute() -> pools_pb2.Distribution:
        attempt = 0
        while True:
            try:
                answer = await stub.Distribute(request, metadata=admin + trace, timeout=30)
                seen["OK"] += 1
                return answer
            except grpc.aio.AioRpcError as error:
                seen[error.code().name] += 1
                assert error.code() in RETRYABLE, f"{error.code().name}: {error.details()}"
                attempt += 1
                await asyncio.sleep(min(0.05 * 2**attempt, 0.5))

    def ledger_assigned() -> int:
        return faults.query(
            "SELECT count(*) FROM redemption.coupons WHERE book_id = %s AND state <> 'AVAILABLE'", book_id
        )[0][0]

    started = time.monotonic()
    call = asyncio.create_task(distribute())
    while not faults.query("SELECT 1 FROM pools.distributions WHERE id = %s AND state = 'PENDING'", distribution_id):
        assert not call.done(), "the distribution ended before its plan was seen"
        await asyncio.sleep(0.01)
    planned = time.monotonic()
    ledger_log = faults.suite.run_dir / "logs" / "redemption.log"

    def bulk_assigns() -> list[str]:
        """How the ledger answered each BulkAssign of this distribution, from its access log."""
        return [
            line["code"]
            for line in map(json.loads, ledger_log.read_text().splitlines())
            if line.get("request_id") == request_id and line.get("method", "").endswith("/BulkAssign")
        ]

    async def logged(deadline: float) -> list[str]:
        while not bulk_assigns() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return bulk_assigns()

    if moment == "during the ledger's transaction":
        await asyncio.sleep(0.3)  # the ledger is at work on the BulkAssign (~2 s for 20,000 codes)
        killed = await faults.kill("pools")
        # Its caller gone, the interrupted call finishes or rolls back, and logs which.
        interrupted = await logged(time.monotonic() + 10)
    else:  # pools is held just before it records DONE (its UPDATE waits on this row lock), then killed
        with psycopg.connect(faults.database_url) as holder:
            holder.execute("SELECT 1 FROM pools.distributions WHERE id = %s FOR UPDATE", (distribution_id,))
            interrupted = await logged(time.monotonic() + 30)
            assert interrupted == ["OK"], "the ledger did not commit while pools was held"
            killed = await faults.kill("pools")
    at_kill = ledger_assigned()
    spawned, ready = await faults.restart("pools")
    async with asyncio.timeout(60):
        done = await call
    recovered = time.monotonic()
    replay = await stub.Distribute(request, metadata=admin, timeout=30)  # once more, for good measure

    events = faults.query(
        "SELECT code, count(*) FROM redemption.history WHERE book_id = %s AND event = 'ASSIGNED_EVENT' GROUP BY code",
        book_id,
    )
    by_user = dict(
        faults.query(
            "SELECT user_id::text, count(*) FROM redemption.coupons WHERE book_id = %s AND user_id IS NOT NULL "
            "GROUP BY user_id",
            book_id,
        )
    )
    holdings = dict(faults.query("SELECT user_id::text, held FROM redemption.holdings WHERE book_id = %s", book_id))
    distributions = faults.query(
        "SELECT id::text, state, assigned FROM pools.distributions WHERE pool_id = %s AND book_id = %s",
        pool.id,
        book_id,
    )
    tagged = faults.query(
        "SELECT count(DISTINCT code), count(*) FROM redemption.history WHERE distribution_id = %s", distribution_id
    )[0]
    figures = {
        "kill after plan committed": f"{killed - planned:.2f} s",
        "ledger at the kill (log)": interrupted or "not reached",
        "ledger at the kill": "committed" if at_kill == 20_000 else f"rolled back ({at_kill} assigned)",
        "ledger's BulkAssign answers": bulk_assigns(),
        "pools' answers (attempts)": dict(seen),
        "new process: spawn to SERVING": f"{ready - spawned:.2f} s",
        "recovery: kill to answer": f"{recovered - killed:.2f} s",
        "distributions recorded": [(state, assigned) for _, state, assigned in distributions],
        "codes assigned (ledger)": sum(by_user.values()),
        "ASSIGNED events / codes": f"{sum(n for _, n in events)} / {len(events)}",
        "codes assigned twice": sum(1 for _, n in events if n > 1),
        "holdings = ledger per user": holdings == by_user,
        "run": f"{recovered - started:.1f} s",
    }
    _report(capsys, f"kill -9 pools {moment}: a 20,000-code EQUAL distribution to {len(members)} members", figures)
    assert seen["UNAVAILABLE"] > 0, "the kill did not interrupt the call; nothing was tested"
    # All or nothing, and the ledger's log says which: the interrupted call rolled back (CANCELLED), or it
    # committed (OK) and the retry was answered from its record, or it had not reached the ledger at all.
    assert (interrupted, at_kill) in ((["CANCELLED"], 0), (["OK"], 20_000), ([], 0)), (interrupted, at_kill)
    if moment == "after the ledger committed":
        assert at_kill == 20_000
    assert bulk_assigns() == [*interrupted, "OK"]
    assert done.id == replay.id == distribution_id and done.assigned == replay.assigned == 20_000
    assert distributions == [(distribution_id, "DONE", 20_000)]
    assert len(events) == 20_000 and all(n == 1 for _, n in events)
    assert tagged == (20_000, 20_000)
    assert by_user == holdings == {u.user_id: per_member for u in members}


# ------------------------------------------------------------------------------------------------ soak

SOAK_SECONDS = 60
WARM_UP_SECONDS = 12
SOAK_WORKERS = 6
RSS_GROWTH_LIMIT = 0.20


def _rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


async def test_a_60_s_soak_leaves_no_locks_flat_processes_and_a_consistent_ledger(faults, capsys):
    """Mixed traffic at modest concurrency for 60 s: random assignments, redeems over gRPC and over HTTP,
    lock-unlock-lock-redeem, stats and listings; then the database and the processes are checked."""
    admin = faults.admin.metadata
    books = books_pb2_grpc.BookServiceStub(faults.channel("books"))
    book = await books.CreateBook(
        books_pb2.CreateBookRequest(
            book=books_pb2.Book(name=f"Soak {uuid.uuid4().hex[:8]}", code_pattern="SOAK-{}", code_length=10)
        ),
        metadata=admin,
    )
    async for _ in books.GenerateCodes(books_pb2.GenerateCodesRequest(book_id=book.id, count=40_000), metadata=admin):
        pass
    ledger = redemption_pb2_grpc.RedemptionServiceStub(faults.channel("redemption"))
    pools = pools_pb2_grpc.PoolServiceStub(faults.channel("pools"))
    auth = auth_pb2_grpc.AuthServiceStub(faults.channel("auth"))
    gateway = f"http://127.0.0.1:{faults.suite.ports['gateway']}"
    seen: collections.Counter = collections.Counter()
    operations: collections.Counter = collections.Counter()
    latencies: list[float] = []
    stop = asyncio.Event()

    async def call(kind: str, coroutine):
        started = time.monotonic()
        try:
            result = await coroutine
            seen["OK"] += 1
            return result
        except grpc.aio.AioRpcError as error:
            seen[error.code().name] += 1
            raise AssertionError(f"{kind}: {error.code().name}: {error.details()}") from None
        finally:
            latencies.append(time.monotonic() - started)

    async def worker(index: int, http: aiohttp.ClientSession) -> None:
        user = faults.users[index % len(faults.users)]
        rng = random.Random(index)
        while not stop.is_set():
            coupon = await call(
                "assign",
                ledger.AssignRandomCoupon(
                    pb.AssignRandomCouponRequest(book_id=book.id, user_id=user.user_id, request_id=uuid.uuid4().hex),
                    metadata=admin,
                    timeout=CALL_TIMEOUT,
                ),
            )
            operations["random assign"] += 1
            choice = rng.random()
            if choice < 0.35:
                await call(
                    "redeem",
                    ledger.RedeemCoupon(
                        pb.RedeemCouponRequest(code=coupon.code, request_id=uuid.uuid4().hex),
                        metadata=user.metadata,
                        timeout=CALL_TIMEOUT,
                    ),
                )
                operations["redeem (gRPC)"] += 1
            elif choice < 0.65:
                for step in ("lock", "unlock"):
                    method = ledger.LockCoupon if step == "lock" else ledger.UnlockCoupon
                    kind = pb.LockCouponRequest if step == "lock" else pb.UnlockCouponRequest
                    await call(step, method(kind(code=coupon.code), metadata=user.metadata, timeout=CALL_TIMEOUT))
                locked = await call(
                    "lock",
                    ledger.LockCoupon(
                        pb.LockCouponRequest(code=coupon.code), metadata=user.metadata, timeout=CALL_TIMEOUT
                    ),
                )
                await call(
                    "redeem",
                    ledger.RedeemCoupon(
                        pb.RedeemCouponRequest(code=coupon.code, lock_id=locked.lock_id, request_id=uuid.uuid4().hex),
                        metadata=user.metadata,
                        timeout=CALL_TIMEOUT,
                    ),
                )
                operations["lock-unlock-lock-redeem"] += 1
            elif choice < 0.9:
                started = time.monotonic()
                async with http.post(
                    f"{gateway}/api/v1/coupons/redeem/{coupon.code}",
                    json={"request_id": uuid.uuid4().hex},
                    headers={"authorization": f"Bearer {user.token}"},
                ) as response:
                    body = await response.text()
                    seen["OK" if response.status == 200 else f"HTTP {response.status}"] += 1
                    latencies.append(time.monotonic() - started)
                    assert response.status == 200, f"{response.status}: {body}"
                operations["redeem (HTTP)"] += 1
            else:
                operations["kept"] += 1
            if rng.random() < 0.1:  # the other services see traffic too
                await call("stats", books.GetBookStats(books_pb2.GetBookStatsRequest(id=book.id), metadata=admin))
                await call("pools", pools.ListPools(pools_pb2.ListPoolsRequest(page_size=10), metadata=admin))
                await call("me", auth.GetMe(auth_pb2.GetMeRequest(), metadata=user.metadata))
                operations["stats, pools, me"] += 1

    names = ("auth", "books", "redemption", "pools", "gateway")
    pids = {name: faults.component(name).process.pid for name in names}
    samples: list[tuple[float, dict[str, int]]] = []

    async def sampler(started: float) -> None:
        while not stop.is_set():
            samples.append((time.monotonic() - started, {n: _rss_kib(p) for n, p in pids.items()}))
            try:
                await asyncio.wait_for(stop.wait(), 5)
            except TimeoutError:
                pass
        samples.append((time.monotonic() - started, {n: _rss_kib(p) for n, p in pids.items()}))

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT)) as http:
        started = time.monotonic()
        tasks = [asyncio.create_task(worker(i, http)) for i in range(SOAK_WORKERS)]
        watcher = asyncio.create_task(sampler(started))
        done, _ = await asyncio.wait(tasks, timeout=SOAK_SECONDS, return_when=asyncio.FIRST_EXCEPTION)
        stop.set()
        for task in done:
            task.result()  # a worker that failed fails the test with its own error
        await asyncio.gather(*tasks)
        await watcher
        elapsed = time.monotonic() - started

    advisory = faults.query(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )[0][0]
    warm = next(rss for t, rss in samples if t >= WARM_UP_SECONDS)
    end = samples[-1][1]
    growth = {name: (end[name] - warm[name]) / warm[name] for name in names}
    rows = faults.query(
        "SELECT c.code, c.state, c.user_id::text, c.redemption_count, "
        "count(h.id) FILTER (WHERE h.event = 'ASSIGNED_EVENT'), "
        "count(h.id) FILTER (WHERE h.event = 'REDEEMED_EVENT'), "
        "count(DISTINCT h.user_id) FILTER (WHERE h.event = 'ASSIGNED_EVENT') "
        "FROM redemption.coupons c LEFT JOIN redemption.history h ON h.code = c.code "
        "WHERE c.book_id = %s GROUP BY c.code",
        book.id,
    )
    held = collections.Counter(user for _, state, user, *_ in rows if user)
    holdings = dict(faults.query("SELECT user_id::text, held FROM redemption.holdings WHERE book_id = %s", book.id))
    stats = await books.GetBookStats(books_pb2.GetBookStatsRequest(id=book.id), metadata=admin)
    states = collections.Counter(state for _, state, *_ in rows)
    latencies.sort()
    figures = {
        "duration": f"{elapsed:.1f} s, {SOAK_WORKERS} workers",
        "operations": dict(operations),
        "statuses seen": dict(seen),
        "calls/s": f"{len(latencies) / elapsed:.0f} (p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.0f} ms)",
        "advisory locks left": advisory,
        "RSS after warm-up (KiB)": json.dumps(warm),
        "RSS at the end (KiB)": json.dumps(end),
        "RSS change": {name: f"{g:+.1%}" for name, g in growth.items()},
        "ledger states": dict(states),
        "codes assigned twice": sum(1 for r in rows if r[4] > 1 or r[6] > 1),
        "count != REDEEMED events": sum(1 for r in rows if r[3] != r[5]),
        "holdings = coupons held": holdings == dict(held),
        "book stats = ledger": (stats.total, stats.available, stats.redeemed)
        == (len(rows), states["AVAILABLE"], states["REDEEMED"]),
    }
    _report(capsys, "60 s soak: random assign, redeem (gRPC/HTTP), lock-unlock-lock-redeem, reads", figures)
    assert set(seen) == {"OK"}, seen
    assert advisory == 0
    assert all(g <= RSS_GROWTH_LIMIT for g in growth.values()), growth
    assert figures["codes assigned twice"] == 0 and figures["count != REDEEMED events"] == 0
    assert all(r[4] == (r[1] != "AVAILABLE") for r in rows)  # every held code was assigned exactly once
    assert figures["holdings = coupons held"] and figures["book stats = ledger"]
    assert operations["random assign"] > 500  # the soak did real work
