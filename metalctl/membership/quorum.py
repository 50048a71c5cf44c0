"""Raft arithmetic for Swarm managers and Consul servers, and the removal gate built on it.

Both Swarm managers and Consul servers are Raft groups: n voters need a majority, n//2+1,
to elect a leader and commit. Removing a voter shrinks n, so it can lose quorum outright
(too few reachable voters left) or spend the group's last spare failure. Both are refused
here; the caller decides whether ``--force`` overrides the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass

SWARM_MANAGERS = "swarm managers"
CONSUL_SERVERS = "consul servers"


def needed(voters: int) -> int:
    """Votes a group of ``voters`` needs for quorum (a strict majority)."""
    return voters // 2 + 1


def fault_tolerance(voters: int) -> int:
    """How many voters a healthy group of ``voters`` can lose and keep quorum."""
    return max(0, (voters - 1) // 2)


@dataclass(frozen=True)
class QuorumVerdict:
    """Whether a removal may go ahead; ``reason`` names the arithmetic, fit for a CLI error."""

    allowed: bool
    reason: str


def removal_check(
    kind: str,
    voters: int,
    reachable: int,
    removing: int = 1,
    *,
    removing_reachable: int | None = None,
) -> QuorumVerdict:
    """May ``removing`` voters leave a group of ``voters`` of which ``reachable`` answer?

    ``kind`` labels the group in the reason ("swarm managers", "consul servers").
    ``removing_reachable`` says how many of the removed voters are themselves reachable;
    by default all of them, the worst case: a reachable voter leaving costs a vote.

    Allowed iff at least one voter is left, the reachable voters left are a majority of
    the voters left, and the removal does not spend the group's last spare failure (a
    healthy 3 going to 2 keeps quorum but then tolerates no failure at all; that is how
    "3 managers: removal refused, 5 managers: allowed" follows from the arithmetic).
    """
    if removing < 1 or reachable < 0 or reachable > voters:
        raise ValueError(f"{kind}: nonsense counts voters={voters} reachable={reachable}")
    voters_after = voters - removing
    if voters_after < 1:
        return QuorumVerdict(
            False,
            f"{kind}: {_voters(voters)}, removing {removing} leaves none -> refused: "
            "would leave no voters",
        )
    reachable_after = reachable - _reachable_removed(
        voters_after, reachable, removing, removing_reachable
    )
    quorum = needed(voters_after)
    head = (
        f"{kind}: {_voters(voters)}, removing {removing} leaves {voters_after} of which "
        f"{reachable_after} reachable; quorum of {voters_after} needs {quorum}"
    )
    if reachable_after < quorum:
        return QuorumVerdict(
            False,
            f"{head} -> refused: would leave {reachable_after} reachable of {voters_after}, "
            f"quorum needs {quorum}",
        )
    spare_before = reachable - needed(voters)
    spare_after = reachable_after - quorum
    if spare_before > 0 and spare_after == 0:
        return QuorumVerdict(
            False,
            f"{head} -> refused: would leave {reachable_after} reachable of {voters_after}, "
            f"quorum needs {quorum}, so no further failure could be tolerated "
            f"(today {spare_before} can)",
        )
    return QuorumVerdict(True, f"{head} -> allowed")


def _reachable_removed(
    voters_after: int, reachable: int, removing: int, removing_reachable: int | None
) -> int:
    """How many reachable voters the removal takes away, kept consistent with the counts.

    It cannot exceed the removed or the reachable count, and it must be at least what
    keeps the survivors' reachable count within the survivors (reachable - voters_after).
    """
    guess = removing if removing_reachable is None else removing_reachable
    return min(removing, reachable, max(guess, reachable - voters_after, 0))


def _voters(n: int) -> str:
    return f"{n} voter" if n == 1 else f"{n} voters"
