"""The distribution planner alone: plain Python, no servers."""

import random
import uuid

from services.pools.distribution import BookSnapshot, plan_equal, plan_random


def book(available: int, limit: int = 0, held: dict | None = None) -> BookSnapshot:
    return BookSnapshot(
        held=held or {},
        available=available,
        max_assignments_per_user=limit,
        archived=False,
        valid_from=None,
        valid_until=None,
    )


MEMBERS = [str(uuid.UUID(int=i)) for i in range(1, 6)]


def test_equal_plan_gives_everyone_k_and_names_the_members_over_the_limit():
    plan = plan_equal(MEMBERS, book(100, limit=3, held={MEMBERS[0]: 2}), 2)
    assert plan.codes_needed == 10 and plan.assignments == dict.fromkeys(MEMBERS, 2)
    assert plan.members_over_limit == [MEMBERS[0]] and not plan.satisfiable
    assert [p.reason for p in plan.problems] == ["MEMBERS_OVER_LIMIT"]


def test_random_plan_respects_every_members_room():
    rng = random.Random(7)
    held = {MEMBERS[0]: 4, MEMBERS[1]: 3}
    for _ in range(200):
        plan = plan_random(MEMBERS, book(100, limit=4, held=held), 13, rng=rng)
        assert plan.satisfiable and sum(plan.assignments.values()) == 13
        assert all(held.get(u, 0) + n <= 4 for u, n in plan.assignments.items())
        assert plan.members_at_limit == [MEMBERS[0]]


def test_random_plan_is_uniform_over_members_without_a_limit():
    rng = random.Random(11)
    plan = plan_random(MEMBERS, book(10_000), 10_000, rng=rng)
    assert all(1800 < n < 2200 for n in plan.assignments.values())


def test_shortfall_names_the_numbers():
    plan = plan_random(MEMBERS, book(40), 60)
    assert plan.shortfall == "The book has 40 available codes, the distribution needs 60."
    assert [p.reason for p in plan.problems] == ["DISTRIBUTION_SHORTFALL"]
