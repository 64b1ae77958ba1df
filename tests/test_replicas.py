"""Two replicas of redemption and of pools, each its own process (suite.launch, as `REPLICAS=2 make run`):
the ledger's concurrency properties hold across replicas, and every kind of client spreads its calls over
both (client-side round robin on one target naming both, as the manifests' dns:/// headless Services do).

Which replica served what is read from each replica's own /metrics (coupons_rpcs_total).
"""

import asyncio
import collections
import contextlib
import subprocess
import sys
import uuid

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coupons.pools.v1 import pools_pb2
from coupons.redemption.v1 import redemption_pb2 as pb
from kernel.grpc_clients import channel, target
from kernel.settings import ROOT
from tests.fixtures_suite import free_suite_ports, start_test_suite
from tests.suite_clients import CallsPerReplica, SuiteClient, outcome, settled

REPLICAS = {"redemption": 2, "pools": 2}
SINGLE_USE_REFUSALS = {"ABORTED/CONCURRENT_OPERATION", "FAILED_PRECONDITION/COUPON_ALREADY_REDEEMED"}


@pytest.fixture(scope="module")
async def replica_suite(database_url, tmp_path_factory):
    suite, _ = await start_test_suite(
        database_url,
        tmp_path_factory.mktemp("replicas-run"),
        free_suite_ports(REPLICAS),
        # Small pools per process: this suite runs beside the session's other servers on one database.
        extra_env={"DB_POOL_SIZE": "2", "DB_MAX_OVERFLOW": "3"},
        replicas=REPLICAS,
    )
    yield suite
    await asyncio.to_thread(suite.stop)  # never block the loop the session's in-process servers run on
    exits = {c.label: c.process.returncode for c in suite.components}
    assert all(code == 0 for code in exits.values()), f"unclean exits: {exits}"


@pytest.fixture(scope="module")
async def client(replica_suite, database_url):
    client = SuiteClient(replica_suite, database_url)
    yield client
    await client.close()


async def both_served(calls: CallsPerReplica, method: str, total: int | None = None) -> None:
    served = await calls.served(method, total)
    assert len(served) == 2 and min(served) > 0, f"{method} per replica: {served}"
    if total is not None:
        assert sum(served) == total, f"{method} per replica: {served}, expected {total} in all"


def test_targets():
    assert target("127.0.0.1:50053") == "dns:///127.0.0.1:50053"
    assert target("dns:///redemption-headless.coupons.svc.cluster.local:50053").startswith("dns:///")
    assert target("ipv4:127.0.0.1:50053,127.0.0.1:50063") == "ipv4:127.0.0.1:50053,127.0.0.1:50063"
    assert target("127.0.0.1:50053, 127.0.0.1:50063") == "ipv4:127.0.0.1:50053,127.0.0.1:50063"
    assert target("[::1]:50053,[::1]:50063") == "ipv6:[::1]:50053,[::1]:50063"
    assert target("unix:/run/coupons.sock") == "unix:/run/coupons.sock"
    with pytest.raises(ValueError, match="dns:///"):
        target("redemption-a:50053,redemption-b:50053")


async def test_a_channel_balances_round_robin_over_every_address_and_skips_a_stopped_one():
    hits = collections.Counter()
    servers, ports = [], []
    for index in range(2):

        class Health(health_pb2_grpc.HealthServicer):
            async def Check(self, request, context, index=index):
                hits[index] += 1
                return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(Health(), server)
        ports.append(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        servers.append(server)
    ch = channel(",".join(f"127.0.0.1:{port}" for port in ports))
    try:
        stub = health_pb2_grpc.HealthStub(ch)
        for _ in range(10):
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert sum(hits.values()) == 10 and min(hits.values()) >= 4, hits  # 5/5 once both are connected
        await servers[1].stop(0)
        before = hits[0]
        for _ in range(6):
            with contextlib.suppress(grpc.aio.AioRpcError):  # a call already on its way to the stopped one
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=5, wait_for_ready=True)
        assert hits[0] >= before + 5
    finally:
        await ch.close()
        await servers[0].stop(0)


async def test_parallel_redeems_of_the_same_codes_via_both_replicas(client, replica_suite):
    """16 redeems at once of each of 12 single-use codes, half over gRPC and half through the gateway:
    exactly one success per code; then a three-use code under 24 settled callers: exactly three."""
    book_id, codes = await client.book(12)
    holder = client.caller()
    await asyncio.gather(*(client.assign(code, holder) for code in codes))
    gateway = f"http://127.0.0.1:{replica_suite.ports['gateway']}"

    async def over_http(http: aiohttp.ClientSession, code: str) -> str:
        async with http.post(f"{gateway}/api/v1/coupons/redeem/{code}", headers=dict(holder.metadata)) as response:
            body = await response.json()
        if response.status == 200:
            return "OK"
        reason = next(d["reason"] for d in body["details"] if d["@type"].endswith("ErrorInfo"))
        code_name = {409: "ABORTED", 400: "FAILED_PRECONDITION"}.get(response.status, str(response.status))
        return f"{code_name}/{reason}"

    with CallsPerReplica(replica_suite, "redemption", "RedeemCoupon") as calls:
        async with aiohttp.ClientSession() as http:
            results = await asyncio.gather(
                *(
                    over_http(http, code)
                    if attempt % 2
                    else outcome(
                        client.redemption.RedeemCoupon(pb.RedeemCouponRequest(code=code), metadata=holder.metadata)
                    )
                    for code in codes
                    for attempt in range(16)
                )
            )
    by_code = collections.defaultdict(collections.Counter)
    for index, result in enumerate(results):
        by_code[codes[index // 16]][result] += 1
    for code, tally in by_code.items():
        assert tally["OK"] == 1 and set(tally) - {"OK"} <= SINGLE_USE_REFUSALS, (code, tally)
    await both_served(calls, "RedeemCoupon", total=12 * 16)

    _, (multi,) = await client.book(1, allow_multi_redemption=True, max_redemptions_per_user=3)
    await client.assign(multi, holder)
    with CallsPerReplica(replica_suite, "redemption", "RedeemCoupon") as multi_calls:
        settled_results = await asyncio.gather(
            *(
                settled(
                    lambda: client.redemption.RedeemCoupon(pb.RedeemCouponRequest(code=multi), metadata=holder.metadata)
                )
                for _ in range(24)
            )
        )
    assert collections.Counter(r for r, _ in settled_results) == {
        "OK": 3,
        "FAILED_PRECONDITION/REDEMPTION_LIMIT_REACHED": 21,
    }
    await both_served(multi_calls, "RedeemCoupon", total=sum(n for _, n in settled_results))

    stats = await client.stats(book_id)  # books -> redemption GetBookCounts, on either replica
    assert (stats.total, stats.redeemed, stats.redemptions, stats.assigned) == (12, 12, 12, 0)
    assert client.events(book_id, "REDEEMED_EVENT") == (12, 12)
    client.ledger_matches_history(book_id)
    print(f"\nredeems per redemption replica: {calls}; three-use code: {multi_calls}")


async def test_parallel_random_assignments_across_replicas_never_give_a_code_twice(client, replica_suite):
    """16 callers assign random codes of a 150-code book to 8 users until it runs out."""
    book_id, codes = await client.book(150)
    users = [client.caller() for _ in range(8)]
    assigned: list[str] = []
    refusals = collections.Counter()

    async def caller(worker: int) -> None:
        turn = 0
        while True:
            user = users[(worker + turn) % len(users)]
            turn += 1
            request = pb.AssignRandomCouponRequest(book_id=book_id, user_id=user.user_id)
            try:
                coupon = await client.redemption.AssignRandomCoupon(request, metadata=client.admin.metadata)
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.ABORTED:  # every remaining code is being assigned: retry
                    refusals["ABORTED"] += 1
                    continue
                assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
                refusals[error.code().name] += 1
                return
            assert coupon.user_id == user.user_id
            assigned.append(coupon.code)

    with CallsPerReplica(replica_suite, "redemption", "AssignRandomCoupon") as calls:
        await asyncio.gather(*(caller(worker) for worker in range(16)))
    assert len(assigned) == 150 and set(assigned) == set(codes)
    assert refusals["FAILED_PRECONDITION"] == 16
    await both_served(calls, "AssignRandomCoupon", total=150 + sum(refusals.values()))
    assert client.events(book_id, "ASSIGNED_EVENT") == (150, 150)
    stats = await client.stats(book_id)
    assert (stats.available, stats.assigned) == (0, 150)
    client.ledger_matches_history(book_id)
    print(f"\nassignments per redemption replica: {calls}; refusals {dict(refusals)}")


async def test_parallel_distributions_retried_by_request_id_make_exactly_one(client, replica_suite):
    """8 callers send one Distribute (same request_id) over both pools replicas at once; two give up after
    50 ms as a client would on a timeout. Each retries until it gets an answer: all get the same one."""
    members = [client.caller() for _ in range(4)]
    pool = await client.pool(members)
    book_id, _ = await client.book(40)
    request = pools_pb2.DistributeRequest(
        pool_id=pool.id, book_id=book_id, mode=pools_pb2.EQUAL, codes_per_member=3, request_id=uuid.uuid4().hex
    )

    async def distribute(impatient: bool) -> tuple[pools_pb2.Distribution, int]:
        attempts = 0
        while True:
            attempts += 1
            timeout = 0.05 if impatient and attempts == 1 else 30
            try:
                return await client.pools.Distribute(request, metadata=client.admin.metadata, timeout=timeout), attempts
            except grpc.aio.AioRpcError as error:
                retryable = (grpc.StatusCode.ABORTED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                assert error.code() in retryable, error.details()
                await asyncio.sleep(0.02)

    with (
        CallsPerReplica(replica_suite, "pools", "Distribute") as calls,
        CallsPerReplica(replica_suite, "redemption", "BulkAssign") as ledger_calls,
    ):
        answers = await asyncio.gather(*(distribute(impatient=index < 2) for index in range(8)))
    distributions = [d for d, _ in answers]
    assert all(d == distributions[0] for d in distributions) and distributions[0].assigned == 12
    await both_served(calls, "Distribute")
    assert client.one("SELECT count(*) FROM pools.distributions WHERE book_id = %s", book_id) == (1,)
    assert client.one(
        "SELECT count(*), count(DISTINCT code), count(DISTINCT distribution_id) FROM redemption.history "
        "WHERE book_id = %s AND event = 'ASSIGNED_EVENT'",
        book_id,
    ) == (12, 12, 1)
    held = dict(
        client.db.execute(
            "SELECT user_id::text, count(*) FROM redemption.coupons WHERE book_id = %s AND user_id IS NOT NULL "
            "GROUP BY user_id",
            (book_id,),
        ).fetchall()
    )
    assert held == {m.user_id: 3 for m in members}
    client.ledger_matches_history(book_id)
    print(f"\none distribution, {sum(n for _, n in answers)} calls: per pools replica {calls}; {ledger_calls}")


async def test_parallel_distributions_of_different_pools_never_hand_out_a_code_twice(client, replica_suite):
    members = [client.caller() for _ in range(5)]
    pools = [await client.pool(members) for _ in range(4)]
    book_id, _ = await client.book(25)  # room for two of the four distributions of 10 codes

    async def distribute(pool) -> str:
        request = pools_pb2.DistributeRequest(
            pool_id=pool.id, book_id=book_id, mode=pools_pb2.EQUAL, codes_per_member=2
        )
        return await outcome(client.pools.Distribute(request, metadata=client.admin.metadata))

    with CallsPerReplica(replica_suite, "pools", "Distribute") as calls:
        results = collections.Counter(await asyncio.gather(*(distribute(p) for p in pools)))
    assert 1 <= results["OK"] <= 2, results
    assert set(results) - {"OK"} <= {
        "FAILED_PRECONDITION/DISTRIBUTION_SHORTFALL",
        "FAILED_PRECONDITION/INSUFFICIENT_CODES",
        "ABORTED/CONCURRENT_OPERATION",
    }, results
    assert client.events(book_id, "ASSIGNED_EVENT") == (10 * results["OK"],) * 2
    await both_served(calls, "Distribute", total=4)
    client.ledger_matches_history(book_id)


async def test_every_client_spreads_its_calls_over_both_replicas(client, replica_suite, tmp_path):
    """The gateway's backend channel, books' and pools' channels to the ledger, and the CLI."""
    book_id, _ = await client.book(10)
    members = [client.caller() for _ in range(2)]
    pool = await client.pool(members)
    gateway = f"http://127.0.0.1:{replica_suite.ports['gateway']}"
    preview = pools_pb2.DistributeRequest(pool_id=pool.id, book_id=book_id, mode=pools_pb2.EQUAL, codes_per_member=1)
    with (
        CallsPerReplica(
            replica_suite, "redemption", "ListUserCoupons", "GetBookCounts", "GetAssignmentCounts"
        ) as ledger,
        CallsPerReplica(replica_suite, "pools", "ListPools") as pools,
    ):
        async with aiohttp.ClientSession(headers=dict(client.admin.metadata)) as http:
            for _ in range(8):
                async with http.get(f"{gateway}/api/v1/users/{members[0].user_id}/coupons") as response:
                    assert response.status == 200
                async with http.get(f"{gateway}/api/v1/pools") as response:
                    assert response.status == 200
        for _ in range(8):
            await client.stats(book_id)  # books -> redemption
            await client.pools.PreviewDistribution(preview, metadata=client.admin.metadata)  # pools -> redemption
    await both_served(ledger, "ListUserCoupons", total=8)  # gateway -> redemption
    await both_served(ledger, "GetBookCounts", total=8)
    await both_served(ledger, "GetAssignmentCounts", total=8)
    await both_served(pools, "ListPools", total=8)  # gateway -> pools

    token_file = tmp_path / "token"
    token_file.write_text(client.admin.metadata[0][1].removeprefix("Bearer "))
    env = {**replica_suite.environment(), "COUPONS_CLI_TOKEN_FILE": str(token_file)}  # *_ADDR: the targets
    with CallsPerReplica(replica_suite, "pools", "PreviewDistribution") as cli_calls:
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "cli", "distribute", pool.id, book_id, "--mode", "equal", "--per-member", "1",
             "--preview"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 0 and "satisfiable: yes" in done.stdout, done.stdout + done.stderr
    assert env["POOLS_ADDR"].startswith("ipv4:") and sum(await cli_calls.served("PreviewDistribution", 1)) == 1
    print(f"\nper redemption replica: {ledger}; per pools replica: {pools}")
