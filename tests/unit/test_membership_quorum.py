from __future__ import annotations

import pytest

from metalctl.membership.quorum import fault_tolerance, needed, removal_check


@pytest.mark.parametrize(
    ("voters", "quorum", "tolerance"),
    [(1, 1, 0), (2, 2, 0), (3, 2, 1), (4, 3, 1), (5, 3, 2), (6, 4, 2), (7, 4, 3)],
)
def test_raft_arithmetic(voters: int, quorum: int, tolerance: int) -> None:
    assert needed(voters) == quorum
    assert fault_tolerance(voters) == tolerance


def test_fault_tolerance_of_empty_group_is_zero() -> None:
    assert fault_tolerance(0) == 0


def test_five_healthy_managers_may_lose_one() -> None:
    v = removal_check("swarm managers", 5, 5)
    assert v.allowed
    assert v.reason == (
        "swarm managers: 5 voters, removing 1 leaves 4 of which 4 reachable; "
        "quorum of 4 needs 3 -> allowed"
    )


def test_three_healthy_managers_refuse_spending_the_last_spare_failure() -> None:
    v = removal_check("swarm managers", 3, 3)
    assert not v.allowed
    assert v.reason == (
        "swarm managers: 3 voters, removing 1 leaves 2 of which 2 reachable; quorum of 2 "
        "needs 2 -> refused: would leave 2 reachable of 2, quorum needs 2, so no further "
        "failure could be tolerated (today 1 can)"
    )


def test_removal_that_loses_quorum_is_refused_with_the_arithmetic() -> None:
    # One manager already unreachable, removing a reachable one.
    v = removal_check("swarm managers", 3, 2, removing_reachable=1)
    assert not v.allowed
    assert v.reason.endswith("-> refused: would leave 1 reachable of 2, quorum needs 2")
    assert "3 voters, removing 1 leaves 2 of which 1 reachable" in v.reason


def test_removing_the_dead_voter_of_three_is_allowed() -> None:
    # 3 voters with one dead already tolerate nothing; dropping the dead one loses nothing.
    v = removal_check("swarm managers", 3, 2, removing_reachable=0)
    assert v.allowed
    assert "leaves 2 of which 2 reachable" in v.reason


def test_default_assumes_the_removed_voter_was_reachable() -> None:
    # The worst case: the same counts refuse without saying which voter leaves.
    assert not removal_check("consul servers", 3, 2).allowed
    assert removal_check("consul servers", 3, 2, removing_reachable=0).allowed


def test_reachable_removed_is_clamped_to_what_the_counts_allow() -> None:
    # All 3 reachable: whoever leaves, 2 of the 2 left are reachable, whatever the hint says.
    v = removal_check("consul servers", 3, 3, removing_reachable=0)
    assert "leaves 2 of which 2 reachable" in v.reason


def test_removing_the_only_voter_is_refused() -> None:
    v = removal_check("consul servers", 1, 1)
    assert not v.allowed
    assert v.reason == (
        "consul servers: 1 voter, removing 1 leaves none -> refused: would leave no voters"
    )


def test_two_to_one_keeps_quorum_and_had_no_spare_to_lose() -> None:
    assert removal_check("swarm managers", 2, 2).allowed


def test_four_to_three_keeps_one_spare() -> None:
    assert removal_check("swarm managers", 4, 4).allowed


def test_five_with_one_dead_may_not_lose_a_healthy_one() -> None:
    v = removal_check("swarm managers", 5, 4, removing_reachable=1)
    assert not v.allowed
    assert "no further failure could be tolerated (today 1 can)" in v.reason


def test_removing_several_at_once() -> None:
    assert removal_check("swarm managers", 7, 7, removing=2).allowed
    assert not removal_check("swarm managers", 5, 5, removing=3).allowed


@pytest.mark.parametrize(("voters", "reachable", "removing"), [(3, 4, 1), (3, -1, 1), (3, 3, 0)])
def test_nonsense_counts_raise(voters: int, reachable: int, removing: int) -> None:
    with pytest.raises(ValueError):
        removal_check("swarm managers", voters, reachable, removing)


def test_verdict_exhaustive_invariant() -> None:
    # Allowed implies a reachable majority is left, for every small group and hint.
    for voters in range(1, 8):
        for reachable in range(voters + 1):
            for removing in range(1, voters + 1):
                for hint in range(removing + 1):
                    v = removal_check("g", voters, reachable, removing, removing_reachable=hint)
                    after = voters - removing
                    if v.allowed:
                        left = int(v.reason.split(" of which ")[1].split()[0])
                        assert after >= 1
                        assert left >= needed(after)
                        assert left <= after
