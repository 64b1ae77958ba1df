"""Pools and their members over real gRPC: auth resolves the members, PostgreSQL stores them."""

import uuid

import grpc
from google.protobuf import field_mask_pb2

from coupons.pools.v1 import pools_pb2 as pb
from tests.support import bearer, expect_error


async def test_pool_create_get_list_update_delete(pools_stub, admin):
    name = f"Crud {uuid.uuid4().hex[:8]}"
    pool = await pools_stub.CreatePool(
        pb.CreatePoolRequest(pool=pb.Pool(name=name, description="first")), metadata=admin
    )
    assert pool.id and pool.name == name and pool.member_count == 0
    assert (await pools_stub.GetPool(pb.GetPoolRequest(id=pool.id), metadata=admin)) == pool

    # Names are unique whatever their case.
    taken = await expect_error(
        pools_stub.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name=name.upper())), metadata=admin),
        grpc.StatusCode.ALREADY_EXISTS,
        "POOL_NAME_TAKEN",
    )
    assert "pool.name" in taken.field_violations

    seen, totals, token = [], set(), ""
    while True:
        page = await pools_stub.ListPools(pb.ListPoolsRequest(page_size=1, page_token=token), metadata=admin)
        seen += [p.id for p in page.pools]
        totals.add(page.total_size)
        token = page.next_page_token
        if not token:
            break
    assert pool.id in seen and len(seen) == len(set(seen))
    assert totals == {len(seen)}  # every page tells how many pools there are in all

    updated = await pools_stub.UpdatePool(
        pb.UpdatePoolRequest(
            pool=pb.Pool(id=pool.id, name=name + " renamed", description="ignored"),
            update_mask=field_mask_pb2.FieldMask(paths=["name"]),
        ),
        metadata=admin,
    )
    assert updated.name == name + " renamed" and updated.description == "first"
    bad_mask = await expect_error(
        pools_stub.UpdatePool(
            pb.UpdatePoolRequest(
                pool=pb.Pool(id=pool.id), update_mask=field_mask_pb2.FieldMask(paths=["member_count"])
            ),
            metadata=admin,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "update_mask" in bad_mask.field_violations

    await pools_stub.DeletePool(pb.DeletePoolRequest(id=pool.id), metadata=admin)
    await expect_error(pools_stub.GetPool(pb.GetPoolRequest(id=pool.id), metadata=admin), grpc.StatusCode.NOT_FOUND)


async def test_bad_input_names_the_field(pools_stub, admin):
    empty = await expect_error(
        pools_stub.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="  ")), metadata=admin),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "pool.name" in empty.field_violations
    bad_id = await expect_error(
        pools_stub.GetPool(pb.GetPoolRequest(id="nope"), metadata=admin), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "id" in bad_id.field_violations
    await expect_error(
        pools_stub.ListPools(pb.ListPoolsRequest(page_token="garbage"), metadata=admin),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
    )


async def test_members_by_email_report_unknown_and_duplicate_entries(pools_stub, admin, pool_users, new_pool):
    pool = await new_pool()
    first, second = pool_users[0].user, pool_users[1].user
    unknown = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
    response = await pools_stub.AddPoolMembers(
        pb.AddPoolMembersRequest(
            pool_id=pool.id,
            emails=[first.email, first.email.upper(), unknown, "not-an-email", second.email],
            user_ids=[second.id, str(uuid.uuid4())],
        ),
        metadata=admin,
    )
    statuses = [(r.entry, r.status) for r in response.results]
    assert statuses == [
        (first.email, "ADDED"),
        (first.email.upper(), "DUPLICATE_IN_REQUEST"),
        (unknown, "NOT_FOUND"),
        ("not-an-email", "INVALID"),
        (second.email, "ADDED"),
        (second.id, "DUPLICATE_IN_REQUEST"),  # the same user as second.email
        (statuses[-1][0], "NOT_FOUND"),
    ]
    assert response.added == 2
    assert response.results[0].user_id == first.id

    again = await pools_stub.AddPoolMembers(
        pb.AddPoolMembersRequest(pool_id=pool.id, user_ids=[first.id]), metadata=admin
    )
    assert again.added == 0 and again.results[0].status == "ALREADY_MEMBER"


async def test_list_and_remove_members(pools_stub, admin, pool_users, new_pool):
    users = [s.user for s in pool_users[:5]]
    pool = await new_pool([u.id for u in users])
    assert (await pools_stub.GetPool(pb.GetPoolRequest(id=pool.id), metadata=admin)).member_count == 5

    listed, token = [], ""
    while True:
        page = await pools_stub.ListPoolMembers(
            pb.ListPoolMembersRequest(pool_id=pool.id, page_size=2, page_token=token), metadata=admin
        )
        assert page.total_size == 5
        listed += [(m.user_id, m.email) for m in page.members]
        token = page.next_page_token
        if not token:
            break
    assert sorted(listed) == sorted((u.id, u.email) for u in users)

    removed = await pools_stub.RemovePoolMembers(
        pb.RemovePoolMembersRequest(
            pool_id=pool.id, emails=[users[0].email.upper()], user_ids=[users[1].id, users[0].id, pool_users[6].user.id]
        ),
        metadata=admin,
    )
    assert [r.status for r in removed.results] == ["REMOVED", "REMOVED", "DUPLICATE_IN_REQUEST", "NOT_MEMBER"]
    assert removed.removed == 2
    assert (await pools_stub.GetPool(pb.GetPoolRequest(id=pool.id), metadata=admin)).member_count == 3


async def test_add_members_replay_returns_the_first_answer(pools_stub, admin, pool_users, new_pool):
    pool = await new_pool()
    request = pb.AddPoolMembersRequest(pool_id=pool.id, user_ids=[pool_users[0].user.id], request_id=uuid.uuid4().hex)
    first = await pools_stub.AddPoolMembers(request, metadata=admin)
    assert (await pools_stub.AddPoolMembers(request, metadata=admin)) == first
    assert first.results[0].status == "ADDED"


async def test_a_user_cannot_manage_pools(pools_stub, pool_users, admin, new_pool):
    user = bearer(pool_users[0])
    await expect_error(
        pools_stub.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="mine")), metadata=user),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    pool = await new_pool()
    await expect_error(
        pools_stub.AddPoolMembers(
            pb.AddPoolMembersRequest(pool_id=pool.id, user_ids=[pool_users[0].user.id]), metadata=user
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await expect_error(
        pools_stub.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="anon"))), grpc.StatusCode.UNAUTHENTICATED
    )
