"""The rules of pools, their members and distributions, in plain Python over the repository and clients."""

import json
import uuid
from dataclasses import dataclass

from kernel import paging
from kernel.directory import Directory
from kernel.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
    Unavailable,
)
from kernel.idempotency import fingerprint
from kernel.validation import is_uuid
from services.pools.clients import Ledger
from services.pools.distribution import EQUAL, MAX_MEMBERS_PER_DISTRIBUTION, RANDOM, Plan, plan_equal, plan_random
from services.pools.repository import DistributionRow, MemberRow, PoolNameTaken, PoolRow, PoolsRepository

MAX_NAME_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 2000
MAX_ENTRIES_PER_CALL = 100_000
UPDATABLE_FIELDS = ("name", "description")
# Distribution ids derive from the request id, so a retried Distribute asks the ledger for the same assignment.
DISTRIBUTION_NAMESPACE = uuid.UUID("6f0d5a52-3c1e-4a8e-9d7b-2f4c1b0e8a11")


@dataclass(frozen=True)
class MemberResult:
    entry: str
    user_id: str
    status: str


@dataclass(frozen=True)
class MembershipChange:
    count: int  # members added or removed
    results: list[MemberResult]

    def encode(self) -> bytes:
        return json.dumps([self.count, [[r.entry, r.user_id, r.status] for r in self.results]]).encode()

    @classmethod
    def decode(cls, data: bytes) -> "MembershipChange":
        count, results = json.loads(data)
        return cls(count, [MemberResult(*r) for r in results])


@dataclass(frozen=True)
class DistributionRequest:
    pool_id: str
    book_id: str
    mode: str  # EQUAL, RANDOM or "" (not given)
    codes_per_member: int
    total_codes: int
    request_id: str = ""


def _id_violations(value: str, field: str, what: str) -> list[FieldViolation]:
    if not value:
        return [FieldViolation(field, "is required")]
    if not is_uuid(value):
        return [FieldViolation(field, f"must be {what} id (a UUID)")]
    return []


def _check(violations: list[FieldViolation]) -> None:
    if violations:
        raise InvalidArgument(violations)


def _name_violations(name: str) -> list[FieldViolation]:
    if not name.strip():
        return [FieldViolation("pool.name", "is required")]
    if len(name.strip()) > MAX_NAME_LENGTH:
        return [FieldViolation("pool.name", f"must be at most {MAX_NAME_LENGTH} characters")]
    return []


def _description_violations(description: str) -> list[FieldViolation]:
    if len(description) > MAX_DESCRIPTION_LENGTH:
        return [FieldViolation("pool.description", f"must be at most {MAX_DESCRIPTION_LENGTH} characters")]
    return []


def _entries_violations(user_ids: list[str], emails: list[str]) -> list[FieldViolation]:
    if not user_ids and not emails:
        return [FieldViolation("user_ids", "give at least one user id or email")]
    if len(user_ids) + len(emails) > MAX_ENTRIES_PER_CALL:
        return [FieldViolation("user_ids", f"at most {MAX_ENTRIES_PER_CALL} user ids and emails in all per call")]
    return []


def _keyed_entries(user_ids: list[str], emails: list[str]) -> list[tuple[str, str, str]]:
    """(kind, entry as given, key) for every entry, emails first; the key ignores case and spaces."""
    return [("email", e, e.strip().lower()) for e in emails] + [("id", i, i.strip().lower()) for i in user_ids]


def _pool_taken(name: str) -> AlreadyExists:
    return AlreadyExists(
        "pool", name, reason="POOL_NAME_TAKEN", field="pool.name", message=f"A pool named {name} already exists."
    )


def _share(total_codes: int, member_ids: list[str]) -> int:
    """EQUAL by total: every member gets total // members codes (rounded down, as the original service's
    coupons_per_user = N / pool_size); the remainder is not handed out. Refused when it would give none."""
    if total_codes < len(member_ids):
        raise FailedPrecondition(
            f"total_codes {total_codes} divided over the pool's {len(member_ids)} members gives every member no code; "
            f"give at least {len(member_ids)}.",
            reason="TOTAL_BELOW_POOL_SIZE",
            metadata={"total_codes": total_codes, "members": len(member_ids)},
        )
    return total_codes // len(member_ids)


def _refusal(plan: Plan, book_id: str) -> FailedPrecondition:
    return FailedPrecondition(
        plan.shortfall,
        reason=plan.problems[0].reason,
        metadata={
            "available": plan.available,
            "needed": plan.codes_needed,
            "max_assignments_per_user": plan.max_assignments_per_user,
            "members_over_limit": len(plan.members_over_limit),
            "members_at_limit": len(plan.members_at_limit),
        },
        violations=[PreconditionViolation(p.reason, f"books/{book_id}", p.sentence) for p in plan.problems],
    )


async def _replay_membership(conn, stored: bytes) -> MembershipChange:
    return MembershipChange.decode(stored)


async def _replay_nothing(conn, stored: bytes) -> None:
    return None


class PoolsDomain:
    def __init__(self, repository: PoolsRepository, directory: Directory, ledger: Ledger):
        self.repo = repository
        self.directory = directory
        self.ledger = ledger

    async def _once(self, conn, scope: str, request_id: str, parts: tuple, run, answer, replay):
        """run(conn) once per request_id; a retry gets replay(conn, answer(first result))."""
        return await self.repo.idempotency.once(
            conn, scope, request_id, parts, lambda: run(conn), answer, lambda stored: replay(conn, stored)
        )

    async def _pool(self, conn, pool_id: str, keep: bool = False) -> PoolRow:
        pool = await self.repo.pool(conn, pool_id, keep=keep)
        if pool is None:
            raise NotFound("pool", pool_id)
        return pool

    async def _replay_pool(self, conn, stored: bytes) -> PoolRow:
        return await self._pool(conn, stored.decode())

    # pools

    async def create_pool(self, name: str, description: str, request_id: str = "") -> PoolRow:
        _check(_name_violations(name) + _description_violations(description))

        async def create(conn) -> PoolRow:
            try:
                return await self.repo.insert_pool(conn, name.strip(), description)
            except PoolNameTaken:
                raise _pool_taken(name.strip()) from None

        async with self.repo.transaction() as conn:
            return await self._once(
                conn,
                "CreatePool",
                request_id,
                (name, description),
                create,
                lambda pool: pool.id.encode(),
                self._replay_pool,
            )

    async def get_pool(self, pool_id: str) -> PoolRow:
        _check(_id_violations(pool_id, "id", "a pool"))
        async with self.repo.transaction() as conn:
            return await self._pool(conn, pool_id)

    async def list_pools(self, page_size: int, page_token: str) -> tuple[list[PoolRow], str, int]:
        size = paging.page_size(page_size)
        after = paging.decode_time_id(page_token)
        async with self.repo.transaction() as conn:
            rows, total = await self.repo.list_pools(conn, size + 1, after)
        page, next_token = paging.next_page_by_creation(rows, size)
        return page, next_token, total

    async def update_pool(
        self, pool_id: str, name: str, description: str, mask: list[str], request_id: str = ""
    ) -> PoolRow:
        """Changes the fields named in the mask; an empty mask means every updatable field."""
        fields = mask or list(UPDATABLE_FIELDS)
        unknown = [f for f in fields if f not in UPDATABLE_FIELDS]
        _check(
            _id_violations(pool_id, "pool.id", "a pool")
            + [
                FieldViolation(
                    "update_mask", f"{f} cannot be updated; the updatable fields are {', '.join(UPDATABLE_FIELDS)}"
                )
                for f in unknown
            ]
            + (_name_violations(name) if "name" in fields else [])
            + (_description_violations(description) if "description" in fields else [])
        )
        changes = {"name": name.strip(), "description": description}
        changes = {f: changes[f] for f in fields}

        async def update(conn) -> PoolRow:
            try:
                pool = await self.repo.update_pool(conn, pool_id, **changes)
            except PoolNameTaken:
                raise _pool_taken(changes["name"]) from None
            if pool is None:
                raise NotFound("pool", pool_id)
            return pool

        async with self.repo.transaction() as conn:
            return await self._once(
                conn,
                "UpdatePool",
                request_id,
                (pool_id, sorted(changes.items())),
                update,
                lambda pool: pool.id.encode(),
                self._replay_pool,
            )

    async def delete_pool(self, pool_id: str, request_id: str = "") -> None:
        _check(_id_violations(pool_id, "id", "a pool"))

        async def delete(conn) -> None:
            if not await self.repo.delete_pool(conn, pool_id):
                raise NotFound("pool", pool_id)

        async with self.repo.transaction() as conn:
            await self._once(conn, "DeletePool", request_id, (pool_id,), delete, lambda _: b"deleted", _replay_nothing)

    # members

    async def add_members(
        self, pool_id: str, user_ids: list[str], emails: list[str], request_id: str = ""
    ) -> MembershipChange:
        _check(_id_violations(pool_id, "pool_id", "a pool") + _entries_violations(user_ids, emails))

        async def add(conn) -> MembershipChange:
            entries = _keyed_entries(user_ids, emails)
            first_of_key: dict[str, tuple[str, str]] = {}
            for kind, entry, key in entries:
                first_of_key.setdefault(key, (kind, entry))
            found = await self.directory.lookup(
                [e for k, e in first_of_key.values() if k == "email"],
                [e for k, e in first_of_key.values() if k == "id"],
            )
            resolved: list[tuple[str, str, str]] = []  # (entry, user_id, status; "" until inserted)
            seen_keys: set[str] = set()
            wanted: dict[str, str] = {}  # user_id -> email
            for _, entry, key in entries:
                user = None if key in seen_keys else found[entry]
                seen_keys.add(key)
                if user is None or user.error_reason == "DUPLICATE" or user.user_id in wanted:
                    # a repeated entry, or the same user by email and by id
                    resolved.append((entry, user.user_id if user else "", "DUPLICATE_IN_REQUEST"))
                elif user.error_reason:
                    resolved.append((entry, "", user.error_reason))
                else:
                    wanted[user.user_id] = user.email
                    resolved.append((entry, user.user_id, ""))
            added = await self.repo.add_members(conn, pool_id, list(wanted.items())) if wanted else set()
            return MembershipChange(
                len(added),
                [
                    MemberResult(entry, user_id, status or ("ADDED" if user_id in added else "ALREADY_MEMBER"))
                    for entry, user_id, status in resolved
                ],
            )

        async with self.repo.transaction() as conn:
            await self._pool(conn, pool_id, keep=True)
            return await self._once(
                conn,
                "AddPoolMembers",
                request_id,
                (pool_id, user_ids, emails),
                add,
                MembershipChange.encode,
                _replay_membership,
            )

    async def remove_members(
        self, pool_id: str, user_ids: list[str], emails: list[str], request_id: str = ""
    ) -> MembershipChange:
        _check(_id_violations(pool_id, "pool_id", "a pool") + _entries_violations(user_ids, emails))

        async def remove(conn) -> MembershipChange:
            entries = _keyed_entries(user_ids, emails)
            ids = [key for kind, _, key in entries if kind == "id" and is_uuid(key)]
            members = await self.repo.members_by_keys(
                conn, pool_id, ids, [key for kind, _, key in entries if kind == "email"]
            )
            by_key = {m.user_id: m.user_id for m in members} | {m.email.lower(): m.user_id for m in members}
            resolved: list[tuple[str, str, str]] = []  # (entry, user_id, status)
            seen_keys, seen_users = set(), set()
            for kind, entry, key in entries:
                user_id = by_key.get(key, "")
                if key in seen_keys or (user_id and user_id in seen_users):
                    status = "DUPLICATE_IN_REQUEST"
                elif (kind == "id" and not is_uuid(key)) or (kind == "email" and "@" not in key):
                    status = "INVALID"
                else:
                    status = "REMOVED" if user_id else "NOT_MEMBER"
                seen_keys.add(key)
                seen_users.add(user_id)
                resolved.append((entry, user_id, status))
            removed = await self.repo.remove_members(conn, pool_id, [u for _, u, s in resolved if s == "REMOVED"])
            return MembershipChange(len(removed), [MemberResult(*r) for r in resolved])

        async with self.repo.transaction() as conn:
            await self._pool(conn, pool_id, keep=True)
            return await self._once(
                conn,
                "RemovePoolMembers",
                request_id,
                (pool_id, user_ids, emails),
                remove,
                MembershipChange.encode,
                _replay_membership,
            )

    async def list_members(self, pool_id: str, page_size: int, page_token: str) -> tuple[list[MemberRow], str, int]:
        _check(_id_violations(pool_id, "pool_id", "a pool"))
        size = paging.page_size(page_size)
        after = paging.decode_time_id(page_token)
        async with self.repo.transaction() as conn:
            pool = await self._pool(conn, pool_id)
            rows = await self.repo.list_members(conn, pool_id, size + 1, after)
        rows, next_token = paging.next_page(rows, size, lambda member: paging.time_id(member.added_at, member.user_id))
        return rows, next_token, pool.member_count

    # distribution

    def _validate(self, request: DistributionRequest) -> None:
        violations = _id_violations(request.pool_id, "pool_id", "a pool") + _id_violations(
            request.book_id, "book_id", "a book"
        )
        if request.mode not in (EQUAL, RANDOM):
            violations.append(FieldViolation("mode", "is required: EQUAL or RANDOM"))
        if request.mode == EQUAL:
            if request.codes_per_member and request.total_codes:
                violations.append(
                    FieldViolation("total_codes", "EQUAL mode takes codes_per_member or total_codes, not both")
                )
            elif request.codes_per_member < 1 and request.total_codes < 1:
                violations.append(
                    FieldViolation(
                        "codes_per_member", "must be at least 1 in EQUAL mode (or give total_codes to divide)"
                    )
                )
        if request.mode == RANDOM:
            if request.total_codes < 1:
                violations.append(FieldViolation("total_codes", "must be at least 1 in RANDOM mode"))
            if request.codes_per_member:
                violations.append(FieldViolation("codes_per_member", "applies to EQUAL mode only; leave it 0"))
        _check(violations)

    async def _plan(self, conn, request: DistributionRequest) -> Plan:
        await self._pool(conn, request.pool_id, keep=True)
        member_ids = await self.repo.member_ids(conn, request.pool_id)
        if not member_ids:
            raise FailedPrecondition(
                "The pool has no members; add members before distributing codes.",
                reason="POOL_EMPTY",
                metadata={"pool_id": request.pool_id},
            )
        if len(member_ids) > MAX_MEMBERS_PER_DISTRIBUTION:
            raise FailedPrecondition(
                f"The pool has {len(member_ids)} members; one distribution reaches at most "
                f"{MAX_MEMBERS_PER_DISTRIBUTION}, so split the pool.",
                reason="POOL_TOO_LARGE",
                metadata={"members": len(member_ids), "max_members": MAX_MEMBERS_PER_DISTRIBUTION},
            )
        book = await self.ledger.snapshot(request.book_id, member_ids)
        if request.mode == EQUAL:
            return plan_equal(member_ids, book, request.codes_per_member or _share(request.total_codes, member_ids))
        return plan_random(member_ids, book, request.total_codes)

    async def preview(self, request: DistributionRequest) -> Plan:
        self._validate(request)
        async with self.repo.transaction() as conn:
            return await self._plan(conn, request)

    async def distribute(self, request: DistributionRequest) -> DistributionRow:
        """Plans, then has the ledger assign every code in one transaction; nothing is assigned on refusal.

        The plan is committed (PENDING) before the ledger runs it, and the distribution id is the ledger's
        request id: a retry after any interruption sends the same plan under the same id, so the ledger
        answers it once and the retry converges on that answer instead of planning again.
        """
        self._validate(request)
        distribution_id = str(
            uuid.uuid5(DISTRIBUTION_NAMESPACE, request.request_id) if request.request_id else uuid.uuid4()
        )
        parts = (request.pool_id, request.book_id, request.mode, request.codes_per_member, request.total_codes)
        async with self.repo.transaction() as conn:
            if request.request_id:
                stored = await self.repo.idempotency.claim(
                    conn, "Distribute", request.request_id, fingerprint(*map(str, parts))
                )
                if stored is not None:
                    replayed = await self.repo.distribution(conn, stored.decode())
                    if replayed is None:  # the answer stored is the id of a distribution kept with it
                        raise LookupError(f"distribution {stored.decode()} of request {request.request_id} is gone")
                    return replayed
            planned = await self.repo.distribution(conn, distribution_id)
            if planned is None:
                plan = await self._plan(conn, request)
                if not plan.satisfiable:
                    raise _refusal(plan, request.book_id)
                planned = await self.repo.insert_distribution(
                    conn,
                    DistributionRow(
                        id=distribution_id,
                        pool_id=request.pool_id,
                        book_id=request.book_id,
                        mode=request.mode,
                        request={
                            "codes_per_member": request.codes_per_member,
                            "total_codes": request.total_codes,
                            "request_id": request.request_id,
                        },
                        result={"members": [[s.user_id, s.codes, s.held] for s in plan.shares]},
                        assigned=0,
                        created_at=None,
                        state="PENDING",
                    ),
                )
        counts = {user_id: codes for user_id, codes, _ in planned.result["members"] if codes}
        try:
            assigned = await self.ledger.bulk_assign(request.book_id, counts, distribution_id, distribution_id)
        except Unavailable:
            raise  # the ledger may have committed: keep the plan, so the retry sends the same one
        except DomainError:
            async with self.repo.transaction() as conn:  # refused: nothing was assigned, a retry plans anew
                await self.repo.delete_pending_distribution(conn, distribution_id)
            raise
        async with self.repo.transaction() as conn:
            done = await self.repo.finish_distribution(conn, distribution_id, assigned)
            if request.request_id:
                await self.repo.idempotency.record(conn, "Distribute", request.request_id, done.id.encode())
        return done
