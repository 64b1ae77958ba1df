"""A distribution interrupted after the ledger committed converges on retry: same plan, nothing twice."""

import uuid

import grpc

from coupons.pools.v1 import pools_pb2 as pb
from services.pools.repository import PoolsRepository
from tests.test_pools_distribution import assert_counters_match_ledger, held_by_user


async def test_a_random_distribution_retried_after_the_ledger_committed(
    pools_stub, admin, pool_users, new_pool, ledger, ledger_db, monkeypatch
):
    members = [u.user.id for u in pool_users[:4]]
    pool = await new_pool(members)
    book_id, _ = await ledger.book(50, max_assignments_per_user=5)
    request = pb.DistributeRequest(
        pool_id=pool.id, book_id=book_id, mode=pb.RANDOM, total_codes=12, request_id=uuid.uuid4().hex
    )
    finish = PoolsRepository.finish_distribution

    async def crash_once(self, conn, distribution_id, assigned):
        monkeypatch.setattr(PoolsRepository, "finish_distribution", finish)
        raise ConnectionError("pools lost its database after the ledger committed")

    monkeypatch.setattr(PoolsRepository, "finish_distribution", crash_once)
    try:
        await pools_stub.Distribute(request, metadata=admin)
        raise AssertionError("the first attempt should have failed")
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.INTERNAL
    assert sum((await held_by_user(ledger_db, book_id)).values()) == 12  # the ledger did commit

    # The retry sends the stored plan under the same id: the ledger answers it once, nothing more is assigned.
    retried = await pools_stub.Distribute(request, metadata=admin)
    assert retried.assigned == 12
    held = await held_by_user(ledger_db, book_id)
    assert sum(held.values()) == 12 and all(n <= 5 for n in held.values())
    replay = await pools_stub.Distribute(request, metadata=admin)
    assert replay.id == retried.id and replay.assigned == 12
    await assert_counters_match_ledger(ledger_db, book_id)
