"""The pure decision core of day-2 membership: Consul (desired) vs Swarm (actual) -> actions.

``plan()`` is level-triggered: each pass looks at the whole picture and returns what to do
now plus the updated timers, so a missed event or a controller restart loses nothing (at
worst a timer restarts). No I/O here: the caller reads Consul and Swarm, calls ``plan()``,
executes the actions in order, records actions and notes as events, and keeps ``memory``
for the next pass (``Memory.to_dict``/``from_dict`` for storing it).

Nodes are matched by name: the Consul node name of the ``swarm-node`` registration is the
Swarm hostname.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Literal

from metalctl.conventions import Registration, Role, reachable_manager
from metalctl.membership.quorum import CONSUL_SERVERS, SWARM_MANAGERS, QuorumVerdict, removal_check

ActionKind = Literal["join", "drain", "leave_and_remove", "demote", "refuse"]
EventKind = Literal[
    "grace",
    "absent_wait",
    "rejoin_wait",
    "drain_wait",
    "deferred",
    "left_alone",
    "role_mismatch",
    "duplicate",
]


@dataclass(frozen=True)
class SwarmMember:
    """A row of ``docker node ls`` plus the count of tasks running on it."""

    node_id: str
    hostname: str
    role: Role
    state: Literal["ready", "down", "unknown", "disconnected"]
    availability: Literal["active", "pause", "drain"]
    reachability: Literal["reachable", "unreachable", ""]
    leader: bool
    tasks_running: int
    address: str = ""  # the node's swarm address (Status.Addr), where a leave is sent


@dataclass(frozen=True)
class NodeMemory:
    """Timers for one node; ``None`` means "not in that condition"."""

    critical_since: float | None = None
    passing_since: float | None = None
    removed_at: float | None = None
    draining_since: float | None = None
    absent_since: float | None = None  # in the swarm, no registration (yet?)


_BLANK = NodeMemory()


@dataclass(frozen=True)
class Memory:
    """What ``plan()`` remembers between passes, per node name (read-only)."""

    nodes: Mapping[str, NodeMemory] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A read-only copy: a Memory handed back by plan() can't be changed behind its back.
        object.__setattr__(self, "nodes", MappingProxyType(dict(self.nodes)))

    def get(self, node: str) -> NodeMemory:
        return self.nodes.get(node, _BLANK)

    def to_dict(self) -> dict[str, dict[str, float | None]]:
        return {name: vars(m).copy() for name, m in sorted(self.nodes.items())}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Mapping[str, float | None]]) -> Memory:
        # Keys this version does not know (written by a newer controller) are dropped, so
        # a standby of another version can still take over.
        known = set(vars(_BLANK))
        return cls(
            {
                name: NodeMemory(**{k: v for k, v in m.items() if k in known})
                for name, m in raw.items()
            }
        )


@dataclass(frozen=True, kw_only=True)
class Policy:
    """Timings and the Consul quorum picture for one pass; ``force`` overrides quorum refusals."""

    grace_seconds: float = 300.0
    # A registration must stay gone this long before it counts as a deregistration: a
    # freshly (re)started agent takes a moment to sync its services to the catalog.
    absent_seconds: float = 15.0
    rejoin_stable_seconds: float = 30.0
    drain_timeout_seconds: float = 300.0
    # A removed node that has not passed since is forgotten after this long: the rejoin
    # hysteresis is against flapping, and the memory (kept in Consul KV, visited by every
    # full pass) must not grow with every node ever removed.
    forget_seconds: float = 3600.0
    consul_servers: frozenset[str]
    consul_voters: int
    consul_reachable: int
    force: bool = False
    forced: frozenset[str] = frozenset()  # nodes whose removal an operator forced

    def forces(self, node: str) -> bool:
        return self.force or node in self.forced


@dataclass(frozen=True)
class Action:
    """Something to do now. ``refuse`` is deliberate inaction that must be recorded loudly."""

    kind: ActionKind
    node: str
    role: Role
    reason: str
    node_id: str = ""  # the Swarm node id to act on (empty for join)
    address: str = ""  # where to reach the node (join, leave)


@dataclass(frozen=True)
class Event:
    """Worth recording, but nothing to do (waiting on a timer, a node left alone on purpose)."""

    kind: EventKind
    node: str
    reason: str


@dataclass(frozen=True)
class Plan:
    actions: list[Action]
    memory: Memory
    notes: list[Event]


# Within one node the actions run in this order (a manager is demoted, then drained).
_ORDER: dict[ActionKind, int] = {
    "refuse": 0,
    "demote": 1,
    "drain": 2,
    "leave_and_remove": 3,
    "join": 4,
}


@dataclass
class _Pass:
    """Facts shared by every node in one pass, and the one thing a node decision changes."""

    policy: Policy
    now: float
    swarm_voters: int
    swarm_reachable: int
    demotion_planned: bool = False  # at most one manager demotion per pass


@dataclass
class _Outcome:
    memory: NodeMemory
    actions: list[Action] = field(default_factory=list)
    notes: list[Event] = field(default_factory=list)


def plan(
    registrations: Sequence[Registration],
    members: Sequence[SwarmMember],
    memory: Memory,
    policy: Policy,
    now: float,
    scope: Collection[str] | None = None,
) -> Plan:
    """Compare Consul with Swarm and return the actions to take now, sorted by node.

    ``scope`` limits the decisions to those node names (an incremental pass after a change:
    ``members`` must still hold every manager, for the quorum counts); the memory of nodes
    outside it is kept as it is. ``None`` decides every node (a full pass).
    """
    regs = {r.node: r for r in registrations}
    swarm, notes = _index_members(members)
    managers = [m for m in swarm.values() if m.role == "manager"]
    ctx = _Pass(
        policy,
        now,
        swarm_voters=len(managers),
        swarm_reachable=sum(1 for m in managers if _reachable(m)),
    )
    # The leader goes last so it can see whether another manager's demotion was planned.
    if scope is None:
        names = sorted(set(regs) | set(swarm) | set(memory.nodes))
        kept: dict[str, NodeMemory] = {}
    else:
        names = sorted(scope)
        kept = {n: m for n, m in memory.nodes.items() if n not in scope}
    names.sort(key=lambda n: n in swarm and swarm[n].leader)
    actions: list[Action] = []
    for name in names:
        out = _decide(name, regs.get(name), swarm.get(name), memory.get(name), ctx)
        actions += out.actions
        notes += out.notes
        if out.memory != _BLANK:
            kept[name] = out.memory
    return Plan(
        actions=sorted(actions, key=lambda a: (a.node, _ORDER[a.kind])),
        memory=Memory(kept),
        notes=sorted(notes, key=lambda e: e.node),
    )


def _index_members(members: Sequence[SwarmMember]) -> tuple[dict[str, SwarmMember], list[Event]]:
    """One member per hostname: a re-joined node can leave a stale entry under its name."""
    by_name: dict[str, SwarmMember] = {}
    notes: list[Event] = []
    # Prefer the live entry: ready before anything else, then by id for determinism.
    for m in sorted(members, key=lambda m: (m.hostname, m.state != "ready", m.node_id)):
        if m.hostname in by_name:
            notes.append(
                Event("duplicate", m.hostname, f"stale swarm entry {m.node_id} ({m.state}) ignored")
            )
        else:
            by_name[m.hostname] = m
    return by_name, notes


def _reachable(m: SwarmMember) -> bool:
    return reachable_manager(m.leader, m.reachability)


def _decide(
    name: str,
    reg: Registration | None,
    member: SwarmMember | None,
    mem: NodeMemory,
    ctx: _Pass,
) -> _Outcome:
    mem = _track_health(reg, mem, ctx.now)
    if member is None:
        # Not a member: only the rejoin timers matter (a dead node removed from the swarm
        # stays critical in Consul for days; that must not keep a grace timer running).
        mem = replace(mem, draining_since=None, absent_since=None, critical_since=None)
        return _absent(name, reg, mem, ctx)
    if reg is None:
        assert mem.absent_since is not None  # set by _track_health for a missing registration
        gone = ctx.now - mem.absent_since
        if gone < ctx.policy.absent_seconds and mem.draining_since is None:
            wanted = ctx.policy.absent_seconds
            note = (
                f"no registration for {gone:.0f}s of {wanted:.0f}s before it counts as deregistered"
            )
            return _Outcome(mem, notes=[Event("absent_wait", name, note)])
        return _retire(name, member, mem, "deregistered from Consul", ctx)
    if reg.status == "critical":
        return _critical(name, member, mem, ctx)
    if mem.draining_since is not None and member.availability == "drain":
        # We drained it to remove it; un-draining is not ours to plan, so finish the removal
        # and let the node rejoin cleanly after the hysteresis.
        why = f"{reg.status} again; finishing the removal started while it was critical"
        return _retire(name, member, mem, why, ctx)
    return _healthy(name, reg, member, mem)


def _track_health(reg: Registration | None, mem: NodeMemory, now: float) -> NodeMemory:
    """Start or reset the critical and passing timers from the current Consul status.

    Any non-critical status resets ``critical_since`` (so flapping inside the grace never
    accumulates), and any non-passing status resets ``passing_since`` (so a rejoin needs
    passing *continuously*). "warning" is alive but not healthy: it does neither.
    """
    status = reg.status if reg is not None else None
    critical = _since(mem.critical_since, now) if status == "critical" else None
    passing = _since(mem.passing_since, now) if status == "passing" else None
    absent = _since(mem.absent_since, now) if reg is None else None
    return replace(mem, critical_since=critical, passing_since=passing, absent_since=absent)


def _since(started: float | None, now: float) -> float:
    """Keep a running timer, or start it now (``now`` may be 0.0, so no ``or``)."""
    return started if started is not None else now


def _absent(name: str, reg: Registration | None, mem: NodeMemory, ctx: _Pass) -> _Outcome:
    """Not in the swarm: join it if it is registered and (stably) passing."""
    if reg is None or reg.status != "passing":
        removed = mem.removed_at
        if removed is not None and ctx.now - removed >= ctx.policy.forget_seconds:
            return _Outcome(_BLANK)
        return _Outcome(mem)
    assert mem.passing_since is not None  # set by _track_health for a passing node
    stable = ctx.now - mem.passing_since
    wanted = ctx.policy.rejoin_stable_seconds
    if mem.removed_at is None:
        why = "registered and passing, not in the swarm"
    elif stable >= wanted:
        why = f"passing for {stable:.0f}s since its removal (rejoin after {wanted:.0f}s)"
    else:
        note = f"passing for {stable:.0f}s of {wanted:.0f}s before it may rejoin"
        return _Outcome(mem, notes=[Event("rejoin_wait", name, note)])
    join = Action("join", name, reg.role, why, address=reg.address)
    return _Outcome(replace(mem, removed_at=None), actions=[join])


def _critical(name: str, member: SwarmMember, mem: NodeMemory, ctx: _Pass) -> _Outcome:
    assert mem.critical_since is not None  # set by _track_health for a critical node
    elapsed = ctx.now - mem.critical_since
    grace = ctx.policy.grace_seconds
    if elapsed < grace:
        note = f"critical for {elapsed:.0f}s of {grace:.0f}s grace"
        return _Outcome(mem, notes=[Event("grace", name, note)])
    return _retire(name, member, mem, f"critical for {elapsed:.0f}s (grace {grace:.0f}s)", ctx)


def _healthy(name: str, reg: Registration, member: SwarmMember, mem: NodeMemory) -> _Outcome:
    """Registered, not critical, in the swarm: nothing to do, some things worth saying."""
    notes: list[Event] = []
    if member.role == "manager" and not _reachable(member) and reg.status == "passing":
        # Reachability alone never removes a manager: Consul passing is the truth.
        why = "swarm reports this manager unreachable but Consul passes it: left alone"
        notes.append(Event("left_alone", name, why))
    if member.role != reg.role:
        why = f"registered as {reg.role} but a swarm {member.role}; roles are not changed in place"
        notes.append(Event("role_mismatch", name, why))
    # A drain of ours that someone undid is over; forget it so a later manual drain of this
    # healthy node is not mistaken for a removal in progress. The passing timer only
    # matters for a rejoin: a settled member keeps no memory at all, so the memory (and
    # the work per pass) grows with the nodes in trouble, not with the cluster.
    return _Outcome(replace(mem, draining_since=None, passing_since=None), notes=notes)


def _retire(name: str, member: SwarmMember, mem: NodeMemory, why: str, ctx: _Pass) -> _Outcome:
    """Take a node out: managers are demoted first; then drain, wait, leave and remove."""
    if member.role == "manager":
        return _demote(name, member, mem, why, ctx)
    gate = _consul_gate(name, ctx)
    if gate is not None and not gate.allowed and not ctx.policy.forces(name):
        return _Outcome(mem, actions=[_refuse(name, member, why, [gate])])
    return _drain_then_remove(name, member, mem, why, ctx)


def _demote(name: str, member: SwarmMember, mem: NodeMemory, why: str, ctx: _Pass) -> _Outcome:
    if ctx.demotion_planned:
        note = f"{why}; waits: one manager demotion per pass"
        return _Outcome(mem, notes=[Event("deferred", name, note)])
    if member.leader:
        # Never remove the leader (not even with --force): that is an election mid-change.
        because = f"{why}, but it is the swarm leader; metalctl never demotes the leader (move leadership first)"
        return _Outcome(mem, actions=[Action("refuse", name, "manager", because, member.node_id)])
    gates = [_swarm_gate(member, ctx), _consul_gate(name, ctx)]
    verdicts = [g for g in gates if g is not None]
    if any(not v.allowed for v in verdicts) and not ctx.policy.forces(name):
        return _Outcome(mem, actions=[_refuse(name, member, why, verdicts)])
    ctx.demotion_planned = True
    forced = " (forced)" if any(not v.allowed for v in verdicts) else ""
    reason = f"{why}; {'; '.join(v.reason for v in verdicts)}{forced}"
    actions = [Action("demote", name, "manager", reason, member.node_id)]
    if member.availability != "drain":
        # Drain in the same pass: it marks the removal as started (draining_since) so a
        # node that recovers after the demotion is still taken out cleanly and rejoins.
        actions.append(Action("drain", name, "manager", why, member.node_id))
        mem = replace(mem, draining_since=ctx.now)
    return _Outcome(mem, actions=actions)


def _drain_then_remove(
    name: str, member: SwarmMember, mem: NodeMemory, why: str, ctx: _Pass
) -> _Outcome:
    if member.availability != "drain":
        drain = Action("drain", name, member.role, why, member.node_id)
        return _Outcome(replace(mem, draining_since=ctx.now), actions=[drain])
    # Already drained (by us, or before a controller restart lost the timer): time from now.
    since = _since(mem.draining_since, ctx.now)
    mem = replace(mem, draining_since=since)
    waited, limit = ctx.now - since, ctx.policy.drain_timeout_seconds
    if member.tasks_running == 0:
        reason = f"{why}; drained, no tasks left on it"
    elif waited >= limit:
        reason = f"{why}; drain timed out after {waited:.0f}s with {member.tasks_running} tasks still running"
    else:
        note = f"waiting for {member.tasks_running} tasks to move ({waited:.0f}s of {limit:.0f}s)"
        return _Outcome(mem, notes=[Event("drain_wait", name, note)])
    remove = Action("leave_and_remove", name, member.role, reason, member.node_id, member.address)
    return _Outcome(replace(mem, removed_at=ctx.now), actions=[remove])


def _swarm_gate(member: SwarmMember, ctx: _Pass) -> QuorumVerdict:
    return removal_check(
        SWARM_MANAGERS,
        ctx.swarm_voters,
        ctx.swarm_reachable,
        removing_reachable=1 if _reachable(member) else 0,
    )


def _consul_gate(name: str, ctx: _Pass) -> QuorumVerdict | None:
    """Only Consul servers count. Consul gives counts, not names, so the node is assumed to
    be one of the reachable servers: that can refuse a safe removal, never allow a bad one."""
    p = ctx.policy
    if name not in p.consul_servers:
        return None
    return removal_check(CONSUL_SERVERS, p.consul_voters, p.consul_reachable)


def _refuse(name: str, member: SwarmMember, why: str, verdicts: list[QuorumVerdict]) -> Action:
    refused = "; ".join(v.reason for v in verdicts if not v.allowed)
    reason = f"{why}, but removing it is refused: {refused} (--force overrides)"
    return Action("refuse", name, member.role, reason, member.node_id)
