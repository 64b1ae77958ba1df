"""Planning a distribution of a book's codes to a pool's members: who gets how many, and whether it can be done.

Plain Python over a snapshot of the ledger (held counts, availability, the book's rules); the ledger
itself enforces the same limits again, atomically, when the plan is carried out.
"""

import datetime as dt
import random
from dataclasses import dataclass, field

EQUAL = "EQUAL"
RANDOM = "RANDOM"
# One distribution is one BulkAssign, one ledger transaction: these are the ledger's limits for one call.
MAX_CODES_PER_DISTRIBUTION = 100_000
MAX_MEMBERS_PER_DISTRIBUTION = 10_000

_secure_random = random.SystemRandom()


@dataclass(frozen=True)
class BookSnapshot:
    """What the ledger says about a book and the members, read just before planning."""

    held: dict[str, int]  # codes of the book each member holds now
    available: int
    max_assignments_per_user: int  # 0: no limit
    archived: bool
    valid_from: dt.datetime | None
    valid_until: dt.datetime | None
    shared: bool = False  # shared codes have no holder: never distributed


@dataclass(frozen=True)
class MemberShare:
    user_id: str
    codes: int
    held: int


@dataclass(frozen=True)
class Problem:
    reason: str
    sentence: str


@dataclass(frozen=True)
class Plan:
    mode: str
    shares: list[MemberShare]
    codes_needed: int
    available: int
    max_assignments_per_user: int
    members_over_limit: list[str]  # EQUAL: members whose k more codes would pass the limit
    members_at_limit: list[str]  # members who already hold as many codes as allowed
    problems: list[Problem] = field(default_factory=list)

    @property
    def satisfiable(self) -> bool:
        return not self.problems

    @property
    def shortfall(self) -> str:
        return " ".join(p.sentence for p in self.problems)

    @property
    def assignments(self) -> dict[str, int]:
        """The codes to assign per member, members getting none left out."""
        return {s.user_id: s.codes for s in self.shares if s.codes}


def _room(held: int, limit: int) -> int | None:
    """How many more codes a member may take; None: no limit."""
    return None if limit == 0 else max(0, limit - held)


def _book_problems(book: BookSnapshot, needed: int, now: dt.datetime) -> list[Problem]:
    problems = []
    if book.shared:
        problems.append(
            Problem("BOOK_SHARED", "The book holds shared codes, which any signed-in user redeems: none is handed out.")
        )
    if book.archived:
        problems.append(Problem("BOOK_ARCHIVED", "The book is archived, so its codes cannot be distributed."))
    if book.valid_from is not None and now < book.valid_from:
        problems.append(
            Problem("BOOK_NOT_YET_VALID", f"The book's codes cannot be assigned before {book.valid_from.isoformat()}.")
        )
    if book.valid_until is not None and now > book.valid_until:
        problems.append(
            Problem("BOOK_EXPIRED", f"The book's codes could be assigned only until {book.valid_until.isoformat()}.")
        )
    if needed > MAX_CODES_PER_DISTRIBUTION:
        problems.append(
            Problem(
                "DISTRIBUTION_TOO_LARGE",
                f"The distribution needs {needed} codes; at most {MAX_CODES_PER_DISTRIBUTION} "
                "can be distributed at once, so split it.",
            )
        )
    if needed > book.available:
        problems.append(
            Problem(
                "DISTRIBUTION_SHORTFALL",
                f"The book has {book.available} available codes, the distribution needs {needed}.",
            )
        )
    return problems


def plan_equal(
    member_ids: list[str], book: BookSnapshot, codes_per_member: int, now: dt.datetime | None = None
) -> Plan:
    """Every member gets exactly codes_per_member codes."""
    limit = book.max_assignments_per_user
    held = {user: book.held.get(user, 0) for user in member_ids}
    over = [u for u in member_ids if (room := _room(held[u], limit)) is not None and room < codes_per_member]
    needed = codes_per_member * len(member_ids)
    problems = _book_problems(book, needed, now or dt.datetime.now(dt.UTC))
    if over:
        problems.append(
            Problem(
                "MEMBERS_OVER_LIMIT",
                f"{len(over)} of {len(member_ids)} members would hold more than the book's limit of {limit} codes "
                f"per user (for example user {over[0]}, who holds {held[over[0]]}).",
            )
        )
    return Plan(
        EQUAL,
        [MemberShare(u, codes_per_member, held[u]) for u in member_ids],
        needed,
        book.available,
        limit,
        over,
        [u for u in member_ids if _room(held[u], limit) == 0],
        problems,
    )


def plan_random(
    member_ids: list[str],
    book: BookSnapshot,
    total_codes: int,
    now: dt.datetime | None = None,
    rng: random.Random = _secure_random,
) -> Plan:
    """total_codes codes, each to a member drawn uniformly among those with room left under the limit."""
    limit = book.max_assignments_per_user
    held = {user: book.held.get(user, 0) for user in member_ids}
    rooms = {user: _room(held[user], limit) for user in member_ids}
    at_limit = [u for u in member_ids if rooms[u] == 0]
    problems = _book_problems(book, total_codes, now or dt.datetime.now(dt.UTC))
    if limit:
        total_room = sum(room for room in rooms.values() if room is not None)  # none is None under a limit
        if total_room < total_codes:
            problems.append(
                Problem(
                    "MEMBERS_OVER_LIMIT",
                    f"The pool's members have room for {total_room} more codes under the book's limit of {limit} "
                    f"per user ({len(at_limit)} of {len(member_ids)} already at the limit), "
                    f"the distribution needs {total_codes}.",
                )
            )
    counts = _draw(member_ids, rooms, total_codes, rng) if total_codes <= MAX_CODES_PER_DISTRIBUTION else {}
    return Plan(
        RANDOM,
        [MemberShare(u, counts.get(u, 0), held[u]) for u in member_ids],
        total_codes,
        book.available,
        limit,
        [],
        at_limit,
        problems,
    )


def _draw(member_ids: list[str], rooms: dict[str, int | None], total: int, rng: random.Random) -> dict[str, int]:
    """Draws up to `total` members, each uniformly among the members with room left: O(total)."""
    candidates = [u for u in member_ids if rooms[u] != 0]
    room_left = [rooms[u] for u in candidates]
    counts: dict[str, int] = {}
    for _ in range(total):
        if not candidates:
            break
        index = rng.randrange(len(candidates))
        user = candidates[index]
        counts[user] = counts.get(user, 0) + 1
        left = room_left[index]
        if left is not None:
            room_left[index] = left = left - 1
            if left == 0:  # full: swap it out so every draw stays uniform over those with room
                candidates[index], room_left[index] = candidates[-1], room_left[-1]
                candidates.pop()
                room_left.pop()
    return counts
