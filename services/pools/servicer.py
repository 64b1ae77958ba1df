"""PoolService over gRPC: protobuf in, domain call, protobuf out. Every method needs the ADMIN role."""

from google.protobuf import empty_pb2

from coupons.pools.v1 import pools_pb2, pools_pb2_grpc
from kernel.timestamps import to_timestamp
from kernel.validation import enum_name
from services.pools.distribution import Plan
from services.pools.domain import DistributionRequest, MembershipChange, PoolsDomain
from services.pools.repository import DistributionRow, MemberRow, PoolRow

SERVICE_NAME = pools_pb2.DESCRIPTOR.services_by_name["PoolService"].full_name


def _pool(pool: PoolRow) -> pools_pb2.Pool:
    return pools_pb2.Pool(
        id=pool.id,
        name=pool.name,
        description=pool.description,
        member_count=pool.member_count,
        create_time=to_timestamp(pool.created_at),
        update_time=to_timestamp(pool.updated_at),
    )


def _member(member: MemberRow) -> pools_pb2.PoolMember:
    return pools_pb2.PoolMember(user_id=member.user_id, email=member.email, add_time=to_timestamp(member.added_at))


def _results(change: MembershipChange) -> list[pools_pb2.MemberResult]:
    return [pools_pb2.MemberResult(entry=r.entry, user_id=r.user_id, status=r.status) for r in change.results]


def _distribution_request(request: pools_pb2.DistributeRequest) -> DistributionRequest:
    mode = (
        ""
        if request.mode == pools_pb2.DISTRIBUTION_MODE_UNSPECIFIED
        else enum_name(pools_pb2.DistributionMode, request.mode, "mode")
    )
    return DistributionRequest(
        request.pool_id, request.book_id, mode, request.codes_per_member, request.total_codes, request.request_id
    )


def _plan(request: pools_pb2.DistributeRequest, plan: Plan) -> pools_pb2.DistributionPlan:
    return pools_pb2.DistributionPlan(
        pool_id=request.pool_id,
        book_id=request.book_id,
        mode=request.mode,
        member_count=len(plan.shares),
        codes_needed=plan.codes_needed,
        available_codes=plan.available,
        members=[pools_pb2.MemberPlan(user_id=s.user_id, codes=s.codes, held=s.held) for s in plan.shares],
        members_over_limit=plan.members_over_limit,
        members_at_limit=plan.members_at_limit,
        max_assignments_per_user=plan.max_assignments_per_user,
        satisfiable=plan.satisfiable,
        shortfall=plan.shortfall,
    )


def _distribution(row: DistributionRow) -> pools_pb2.Distribution:
    return pools_pb2.Distribution(
        id=row.id,
        pool_id=row.pool_id,
        book_id=row.book_id,
        mode=row.mode,  # the enum value's name
        assigned=row.assigned,
        create_time=to_timestamp(row.created_at),
        members=[pools_pb2.MemberPlan(user_id=u, codes=n, held=h) for u, n, h in row.result["members"]],
    )


class PoolsServicer(pools_pb2_grpc.PoolServiceServicer):
    def __init__(self, domain: PoolsDomain):
        self.domain = domain

    async def CreatePool(self, request, context):
        return _pool(await self.domain.create_pool(request.pool.name, request.pool.description, request.request_id))

    async def GetPool(self, request, context):
        return _pool(await self.domain.get_pool(request.id))

    async def ListPools(self, request, context):
        pools, next_token, total = await self.domain.list_pools(request.page_size, request.page_token)
        return pools_pb2.ListPoolsResponse(
            pools=[_pool(p) for p in pools], next_page_token=next_token, total_size=total
        )

    async def UpdatePool(self, request, context):
        pool = await self.domain.update_pool(
            request.pool.id,
            request.pool.name,
            request.pool.description,
            list(request.update_mask.paths),
            request.request_id,
        )
        return _pool(pool)

    async def DeletePool(self, request, context):
        await self.domain.delete_pool(request.id, request.request_id)
        return empty_pb2.Empty()

    async def AddPoolMembers(self, request, context):
        change = await self.domain.add_members(
            request.pool_id, list(request.user_ids), list(request.emails), request.request_id
        )
        return pools_pb2.AddPoolMembersResponse(added=change.count, results=_results(change))

    async def RemovePoolMembers(self, request, context):
        change = await self.domain.remove_members(
            request.pool_id, list(request.user_ids), list(request.emails), request.request_id
        )
        return pools_pb2.RemovePoolMembersResponse(removed=change.count, results=_results(change))

    async def ListPoolMembers(self, request, context):
        members, next_token, total = await self.domain.list_members(
            request.pool_id, request.page_size, request.page_token
        )
        return pools_pb2.ListPoolMembersResponse(
            members=[_member(m) for m in members], next_page_token=next_token, total_size=total
        )

    async def PreviewDistribution(self, request, context):
        return _plan(request, await self.domain.preview(_distribution_request(request)))

    async def Distribute(self, request, context):
        return _distribution(await self.domain.distribute(_distribution_request(request)))
