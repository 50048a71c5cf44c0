from __future__ import annotations

from dataclasses import replace

from metalctl.membership.plan import (
    Action,
    Memory,
    NodeMemory,
    Plan,
    Policy,
    Registration,
    SwarmMember,
    plan,
)

NO_CONSUL = Policy(
    grace_seconds=120.0,
    absent_seconds=0.0,
    consul_servers=frozenset(),
    consul_voters=3,
    consul_reachable=3,
)


def reg(node: str, status: str = "passing", role: str = "worker") -> Registration:
    return Registration(node, f"10.0.0.{node[-1]}", role, status)  # type: ignore[arg-type]


def worker(node: str, **kw: object) -> SwarmMember:
    m = SwarmMember(f"id-{node}", node, "worker", "ready", "active", "", False, 2)
    return replace(m, **kw)  # type: ignore[arg-type]


def manager(node: str, **kw: object) -> SwarmMember:
    m = SwarmMember(f"id-{node}", node, "manager", "ready", "active", "reachable", False, 1)
    return replace(m, **kw)  # type: ignore[arg-type]


def managers(n: int, leader: str = "m1") -> list[SwarmMember]:
    return [manager(f"m{i}", leader=f"m{i}" == leader) for i in range(1, n + 1)]


def run(
    regs: list[Registration],
    members: list[SwarmMember],
    now: float,
    memory: Memory | None = None,
    policy: Policy = NO_CONSUL,
) -> Plan:
    return plan(regs, members, memory or Memory(), policy, now)


def kinds(p: Plan) -> list[tuple[str, str]]:
    return [(a.kind, a.node) for a in p.actions]


# --- joining -------------------------------------------------------------------------


def test_new_passing_node_joins_at_once_with_the_role_it_asked_for() -> None:
    p = run([reg("w1"), reg("m4", role="manager")], [], now=0.0)
    assert p.actions == [
        Action("join", "m4", "manager", "registered and passing, not in the swarm", "", "10.0.0.4"),
        Action("join", "w1", "worker", "registered and passing, not in the swarm", "", "10.0.0.1"),
    ]


def test_registered_but_not_passing_does_not_join() -> None:
    assert run([reg("w1", "critical"), reg("w2", "warning")], [], now=0.0).actions == []


def test_rejoin_after_removal_waits_for_stable_passing() -> None:
    mem = Memory({"w1": NodeMemory(removed_at=100.0)})
    p1 = run([reg("w1")], [], now=200.0, memory=mem)
    assert p1.actions == []
    assert [n.kind for n in p1.notes] == ["rejoin_wait"]
    p2 = run([reg("w1")], [], now=220.0, memory=p1.memory)
    assert p2.actions == []
    p3 = run([reg("w1")], [], now=230.0, memory=p2.memory)
    assert kinds(p3) == [("join", "w1")]
    assert "passing for 30s since its removal" in p3.actions[0].reason
    assert p3.memory.get("w1").removed_at is None


def test_rejoin_hysteresis_restarts_when_passing_is_interrupted() -> None:
    mem = Memory({"w1": NodeMemory(removed_at=0.0)})
    p = run([reg("w1")], [], now=100.0, memory=mem)
    p = run([reg("w1", "critical")], [], now=120.0, memory=p.memory)
    p = run([reg("w1")], [], now=125.0, memory=p.memory)
    p = run([reg("w1")], [], now=150.0, memory=p.memory)  # 25s since passing again
    assert p.actions == []
    p = run([reg("w1")], [], now=155.0, memory=p.memory)
    assert kinds(p) == [("join", "w1")]


def test_a_removed_node_that_stays_away_is_forgotten_after_an_hour() -> None:
    """The memory lives in Consul KV: it must not grow with every node ever removed."""
    mem = Memory({"gone": NodeMemory(removed_at=0.0), "dead": NodeMemory(removed_at=0.0)})
    regs = [reg("dead", "critical")]  # a dead node stays registered, critical, for days
    early = run(regs, [], now=3599.0, memory=mem)
    assert set(early.memory.nodes) == {"gone", "dead"}
    late = run(regs, [], now=3600.0, memory=early.memory)
    assert dict(late.memory.nodes) == {}
    # Back after that: a plain join, as for a node never seen before.
    back = run([reg("dead")], [], now=4000.0, memory=late.memory)
    assert kinds(back) == [("join", "dead")]


def test_warning_interrupts_rejoin_hysteresis() -> None:
    mem = Memory({"w1": NodeMemory(removed_at=0.0, passing_since=10.0)})
    p = run([reg("w1", "warning")], [], now=20.0, memory=mem)
    p = run([reg("w1")], [], now=45.0, memory=p.memory)
    assert p.actions == []
    assert p.memory.get("w1").passing_since == 45.0


def test_join_is_replanned_until_the_node_shows_up() -> None:
    p1 = run([reg("w1")], [], now=0.0)
    p2 = run([reg("w1")], [], now=5.0, memory=p1.memory)
    assert kinds(p2) == [("join", "w1")]
    p3 = run([reg("w1")], [worker("w1")], now=10.0, memory=p2.memory)
    assert p3.actions == []


# --- deregistration ------------------------------------------------------------------


def test_deregistered_worker_is_drained_then_removed_once_tasks_moved() -> None:
    p1 = run([], [worker("w1")], now=0.0)
    assert kinds(p1) == [("drain", "w1")]
    assert p1.actions[0].node_id == "id-w1"
    assert p1.actions[0].reason == "deregistered from Consul"
    assert p1.memory.get("w1").draining_since == 0.0

    p2 = run([], [worker("w1", availability="drain", tasks_running=2)], 10.0, p1.memory)
    assert p2.actions == []
    assert [(n.kind, n.reason) for n in p2.notes] == [
        ("drain_wait", "waiting for 2 tasks to move (10s of 300s)")
    ]

    p3 = run([], [worker("w1", availability="drain", tasks_running=0)], 20.0, p2.memory)
    assert kinds(p3) == [("leave_and_remove", "w1")]
    assert p3.memory.get("w1").removed_at == 20.0


def test_drain_timeout_removes_with_tasks_still_running() -> None:
    mem = Memory({"w1": NodeMemory(draining_since=0.0)})
    drained = worker("w1", availability="drain", tasks_running=3)
    assert run([], [drained], now=299.0, memory=mem).actions == []
    p = run([], [drained], now=300.0, memory=mem)
    assert kinds(p) == [("leave_and_remove", "w1")]
    assert "drain timed out after 300s with 3 tasks still running" in p.actions[0].reason


def test_drained_node_with_lost_timer_restarts_the_drain_clock() -> None:
    # The controller restarted mid-drain without its memory: the drain still finishes.
    drained = worker("w1", availability="drain", tasks_running=1)
    p = run([], [drained], now=1000.0)
    assert p.actions == []
    assert p.memory.get("w1").draining_since == 1000.0
    p = run([], [replace(drained, tasks_running=0)], now=1001.0, memory=p.memory)
    assert kinds(p) == [("leave_and_remove", "w1")]


def test_deregistered_node_absent_from_swarm_needs_nothing() -> None:
    mem = Memory({"w1": NodeMemory(removed_at=5.0, draining_since=1.0)})
    p = run([], [], now=10.0, memory=mem)
    assert p.actions == []
    assert p.notes == []
    assert p.memory.get("w1") == NodeMemory(removed_at=5.0)


def test_removal_is_idempotent_once_done() -> None:
    p = run([], [worker("w1")], now=0.0)
    p = run([], [worker("w1", availability="drain", tasks_running=0)], 1.0, p.memory)
    assert kinds(p) == [("leave_and_remove", "w1")]
    done = run([], [], now=2.0, memory=p.memory)
    assert done.actions == []
    assert run([], [], now=3.0, memory=done.memory).actions == []


def test_join_is_idempotent_once_done() -> None:
    p = run([reg("w1")], [], now=0.0)
    done = run([reg("w1")], [worker("w1")], now=1.0, memory=p.memory)
    assert done.actions == []
    again = run([reg("w1")], [worker("w1")], now=2.0, memory=done.memory)
    assert again.actions == []
    assert again.memory == done.memory


def test_deregistered_manager_of_five_is_demoted_and_drained() -> None:
    ms = managers(5)
    regs = [reg(m.hostname, role="manager") for m in ms if m.hostname != "m3"]
    p = run(regs, ms, now=0.0)
    assert kinds(p) == [("demote", "m3"), ("drain", "m3")]
    assert "swarm managers: 5 voters, removing 1 leaves 4 of which 4 reachable" in (
        p.actions[0].reason
    )
    # Next pass: it is a drained worker now, its tasks gone -> leave and remove.
    ms[2] = worker("m3", availability="drain", tasks_running=0)
    p2 = run(regs, ms, now=1.0, memory=p.memory)
    assert kinds(p2) == [("leave_and_remove", "m3")]


def test_deregistered_manager_of_three_is_refused_with_the_arithmetic() -> None:
    ms = managers(3)
    regs = [reg("m1", role="manager"), reg("m2", role="manager")]
    p = run(regs, ms, now=0.0)
    assert kinds(p) == [("refuse", "m3")]
    reason = p.actions[0].reason
    assert reason.startswith("deregistered from Consul, but removing it is refused: ")
    assert "swarm managers: 3 voters, removing 1 leaves 2 of which 2 reachable" in reason
    assert "(--force overrides)" in reason
    assert p.memory.get("m3").draining_since is None


def test_force_overrides_a_quorum_refusal() -> None:
    ms = managers(3)
    regs = [reg("m1", role="manager"), reg("m2", role="manager")]
    forced = replace(NO_CONSUL, force=True)
    p = run(regs, ms, now=0.0, policy=forced)
    assert kinds(p) == [("demote", "m3"), ("drain", "m3")]
    assert p.actions[0].reason.endswith("(forced)")


def test_consul_quorum_refuses_removing_a_consul_server() -> None:
    ms = managers(5)
    regs = [reg(m.hostname, role="manager") for m in ms if m.hostname != "m3"]
    policy = replace(NO_CONSUL, consul_servers=frozenset({"m1", "m2", "m3"}))
    p = run(regs, ms, now=0.0, policy=policy)
    assert kinds(p) == [("refuse", "m3")]
    assert "consul servers: 3 voters, removing 1 leaves 2" in p.actions[0].reason
    assert "swarm managers" not in p.actions[0].reason  # only the refusing gate is named


def test_consul_quorum_allows_removing_one_of_five_servers() -> None:
    ms = managers(5)
    regs = [reg(m.hostname, role="manager") for m in ms if m.hostname != "m3"]
    servers = frozenset(f"m{i}" for i in range(1, 6))
    policy = replace(NO_CONSUL, consul_servers=servers, consul_voters=5, consul_reachable=5)
    p = run(regs, ms, now=0.0, policy=policy)
    assert kinds(p) == [("demote", "m3"), ("drain", "m3")]
    assert "consul servers: 5 voters" in p.actions[0].reason


def test_worker_that_is_a_consul_server_is_gated_too() -> None:
    policy = replace(NO_CONSUL, consul_servers=frozenset({"w1"}), consul_reachable=2)
    p = run([], [worker("w1")], now=0.0, policy=policy)
    assert kinds(p) == [("refuse", "w1")]
    assert "consul servers" in p.actions[0].reason
    assert kinds(run([], [worker("w1")], 0.0, policy=replace(policy, force=True))) == [
        ("drain", "w1")
    ]


# --- critical and grace --------------------------------------------------------------


def test_critical_worker_waits_out_the_grace_then_is_drained_and_removed() -> None:
    p = run([reg("w1", "critical")], [worker("w1")], now=0.0)
    assert p.actions == []
    assert p.memory.get("w1").critical_since == 0.0
    p = run([reg("w1", "critical")], [worker("w1")], now=40.0, memory=p.memory)
    assert p.actions == []
    assert [(n.kind, n.reason) for n in p.notes] == [("grace", "critical for 40s of 120s grace")]
    p = run([reg("w1", "critical")], [worker("w1", state="down")], 120.0, p.memory)
    assert kinds(p) == [("drain", "w1")]
    assert p.actions[0].reason == "critical for 120s (grace 120s)"
    down = worker("w1", state="down", availability="drain", tasks_running=0)
    p = run([reg("w1", "critical")], [down], now=125.0, memory=p.memory)
    assert kinds(p) == [("leave_and_remove", "w1")]


def test_stopped_worker_comes_back_and_rejoins_by_itself() -> None:
    mem = Memory({"w1": NodeMemory(critical_since=0.0)})
    down = worker("w1", state="down", availability="drain", tasks_running=0)
    p = run([reg("w1", "critical")], [down], now=130.0, memory=mem)
    p = run([reg("w1", "critical")], [down], now=131.0, memory=p.memory)
    assert kinds(p) == [("leave_and_remove", "w1")]
    p = run([reg("w1", "critical")], [], now=140.0, memory=p.memory)
    assert p.actions == []
    p = run([reg("w1")], [], now=200.0, memory=p.memory)
    assert p.actions == []  # hysteresis
    p = run([reg("w1")], [], now=230.0, memory=p.memory)
    assert kinds(p) == [("join", "w1")]
    assert run([reg("w1")], [worker("w1")], now=231.0, memory=p.memory).actions == []


def test_flapping_inside_the_grace_never_acts() -> None:
    mem = Memory()
    for step in range(40):  # 40 passes, 10s apart, alternating: 400s in all
        status = "critical" if step % 2 == 0 else "passing"
        p = run([reg("w1", status)], [worker("w1")], now=step * 10.0, memory=mem)
        assert p.actions == []
        mem = p.memory


def test_passing_during_the_grace_resets_the_timer() -> None:
    p = run([reg("w1", "critical")], [worker("w1")], now=0.0)
    p = run([reg("w1")], [worker("w1")], now=100.0, memory=p.memory)
    assert p.actions == []
    assert p.memory.get("w1").critical_since is None
    p = run([reg("w1", "critical")], [worker("w1")], now=110.0, memory=p.memory)
    p = run([reg("w1", "critical")], [worker("w1")], now=200.0, memory=p.memory)
    assert p.actions == []  # 90s into a fresh grace
    assert p.memory.get("w1").critical_since == 110.0


def test_critical_manager_of_five_is_demoted_after_grace() -> None:
    ms = managers(5)
    ms[3] = manager("m4", reachability="unreachable", state="down")
    regs = [reg(m.hostname, role="manager") for m in ms]
    regs[3] = reg("m4", "critical", role="manager")
    mem = Memory({"m4": NodeMemory(critical_since=0.0)})
    assert run(regs, ms, now=119.0, memory=mem).actions == []
    p = run(regs, ms, now=120.0, memory=mem)
    assert kinds(p) == [("demote", "m4"), ("drain", "m4")]
    assert "5 voters, removing 1 leaves 4 of which 4 reachable" in p.actions[0].reason


def test_critical_manager_refused_when_quorum_would_break() -> None:
    # 3 managers, m2 already unreachable; m3 goes critical but is still reachable.
    ms = [manager("m1", leader=True), manager("m2", reachability="unreachable"), manager("m3")]
    regs = [reg("m1", role="manager"), reg("m2", role="manager"), reg("m3", "critical", "manager")]
    mem = Memory({"m3": NodeMemory(critical_since=0.0)})
    p = run(regs, ms, now=500.0, memory=mem)
    assert kinds(p) == [("refuse", "m3")]
    assert "would leave 1 reachable of 2, quorum needs 2" in p.actions[0].reason


def test_unreachable_manager_that_passes_in_consul_is_never_touched() -> None:
    ms = managers(5)
    ms[1] = manager("m2", reachability="unreachable", state="down")
    regs = [reg(m.hostname, role="manager") for m in ms]
    mem = Memory()
    for t in (0.0, 500.0, 5000.0):
        p = run(regs, ms, now=t, memory=mem)
        assert p.actions == []
        assert [(n.kind, n.node) for n in p.notes] == [("left_alone", "m2")]
        mem = p.memory


def test_warning_neither_removes_nor_counts_toward_grace() -> None:
    p = run([reg("w1", "critical")], [worker("w1")], now=0.0)
    p = run([reg("w1", "warning")], [worker("w1")], now=100.0, memory=p.memory)
    p = run([reg("w1", "critical")], [worker("w1")], now=150.0, memory=p.memory)
    assert p.actions == []
    assert p.memory.get("w1").critical_since == 150.0


def test_node_we_drained_that_recovers_is_still_removed_then_rejoins() -> None:
    mem = Memory({"w1": NodeMemory(draining_since=0.0, critical_since=0.0)})
    drained = worker("w1", availability="drain", tasks_running=0)
    p = run([reg("w1")], [drained], now=200.0, memory=mem)
    assert kinds(p) == [("leave_and_remove", "w1")]
    assert "finishing the removal" in p.actions[0].reason


def test_manually_drained_healthy_node_is_left_alone() -> None:
    p = run([reg("w1")], [worker("w1", availability="drain", tasks_running=0)], now=0.0)
    assert p.actions == []


# --- managers: one demotion per pass, never the leader --------------------------------


def test_at_most_one_manager_demotion_per_pass() -> None:
    ms = managers(7)
    regs = [reg(m.hostname, role="manager") for m in ms if m.hostname not in ("m5", "m6")]
    p = run(regs, ms, now=0.0)
    assert [a for a in kinds(p) if a[0] == "demote"] == [("demote", "m5")]
    assert [(n.kind, n.node) for n in p.notes] == [("deferred", "m6")]


def test_leader_is_never_chosen_others_are_demoted_first() -> None:
    ms = managers(7, leader="m2")
    regs = [reg(m.hostname, role="manager") for m in ms if m.hostname not in ("m2", "m6")]
    p = run(regs, ms, now=0.0)
    assert [a for a in kinds(p) if a[0] == "demote"] == [("demote", "m6")]
    assert all(a.node != "m2" for a in p.actions)
    assert [(n.kind, n.node) for n in p.notes] == [("deferred", "m2")]


def test_only_the_leader_qualifies_is_refused_even_with_force() -> None:
    ms = managers(5, leader="m1")
    regs = [reg(m.hostname, role="manager") for m in ms if m.hostname != "m1"]
    for policy in (NO_CONSUL, replace(NO_CONSUL, force=True)):
        p = run(regs, ms, now=0.0, policy=policy)
        assert kinds(p) == [("refuse", "m1")]
        assert "it is the swarm leader" in p.actions[0].reason


# --- determinism, memory, odd inputs ---------------------------------------------------


def test_deterministic_and_sorted_by_node_whatever_the_input_order() -> None:
    regs = [reg("w3"), reg("w1"), reg("w5")]
    members = [worker("w2"), worker("w4", availability="drain", tasks_running=0)]
    a = run(regs, members, now=0.0)
    b = run(list(reversed(regs)), list(reversed(members)), now=0.0)
    assert a == b
    assert kinds(a) == [
        ("join", "w1"),
        ("drain", "w2"),
        ("join", "w3"),
        ("leave_and_remove", "w4"),
        ("join", "w5"),
    ]


def test_returned_memory_is_read_only_and_round_trips() -> None:
    p = run([], [worker("w1")], now=7.0)
    try:
        p.memory.nodes["x"] = NodeMemory()  # type: ignore[index]
    except TypeError:
        pass
    else:
        raise AssertionError("memory must be read-only")
    assert Memory.from_dict(p.memory.to_dict()) == p.memory
    assert p.memory.to_dict() == {
        "w1": {
            "critical_since": None,
            "passing_since": None,
            "removed_at": None,
            "draining_since": 7.0,
            "absent_since": 7.0,
        }
    }


def test_settled_members_keep_no_memory() -> None:
    # Memory is written to Consul on every change: it must grow with trouble, not size.
    regs = [reg(f"w{i}") for i in range(1, 6)]
    p = run(regs, [worker(f"w{i}") for i in range(1, 6)], now=0.0)
    assert p.memory.nodes == {}
    p = run(regs, [worker("w1")], now=1.0, memory=p.memory)  # w2..w5 join
    assert set(p.memory.nodes) == {"w2", "w3", "w4", "w5"}
    p = run(regs, [worker(f"w{i}") for i in range(1, 6)], now=2.0, memory=p.memory)
    assert p.memory.nodes == {}


def test_stale_duplicate_swarm_entry_is_reported_not_acted_on() -> None:
    members = [worker("w1", node_id="old", state="down"), worker("w1", node_id="new")]
    p = run([reg("w1")], members, now=0.0)
    assert p.actions == []
    assert [(n.kind, n.reason) for n in p.notes] == [
        ("duplicate", "stale swarm entry old (down) ignored")
    ]


def test_role_mismatch_is_noted_not_changed() -> None:
    p = run([reg("w1", role="manager")], [worker("w1")], now=0.0)
    assert p.actions == []
    assert [n.kind for n in p.notes] == ["role_mismatch"]


# --- absence, scope and per-node force ---------------------------------------------------


def test_a_missing_registration_waits_before_it_counts_as_deregistered() -> None:
    # A freshly started agent syncs its services a moment later: no removal on a blink.
    policy = replace(NO_CONSUL, absent_seconds=15.0)
    p = run([], [worker("w1")], now=0.0, policy=policy)
    assert p.actions == []
    assert [n.kind for n in p.notes] == ["absent_wait"]
    p = run([reg("w1")], [worker("w1")], now=10.0, memory=p.memory, policy=policy)
    assert p.memory.get("w1").absent_since is None  # it came back: the wait starts over
    p = run([], [worker("w1")], now=11.0, memory=p.memory, policy=policy)
    p = run([], [worker("w1")], now=26.0, memory=p.memory, policy=policy)
    assert kinds(p) == [("drain", "w1")]


def test_scope_decides_only_the_named_nodes_and_keeps_the_rest_of_memory() -> None:
    mem = Memory({"w2": NodeMemory(critical_since=0.0)})
    members = [*managers(3), worker("w1"), worker("w2")]
    regs = [reg("w1", "critical")]  # w2's registration is not even passed in
    p = plan(regs, members, mem, NO_CONSUL, 500.0, scope={"w1"})
    assert p.actions == []  # w1's grace starts now; w2 (critical 500 s) is out of scope
    assert p.memory.get("w2") == NodeMemory(critical_since=0.0)
    assert p.memory.get("w1").critical_since == 500.0


def test_a_forced_node_passes_the_quorum_gate_others_do_not() -> None:
    regs = [reg("m1", role="manager"), reg("m3", role="manager")]  # m2 deregistered
    other = run(regs, managers(3), now=0.0, policy=replace(NO_CONSUL, forced=frozenset({"m3"})))
    assert kinds(other) == [("refuse", "m2")]
    it = run(regs, managers(3), now=0.0, policy=replace(NO_CONSUL, forced=frozenset({"m2"})))
    assert kinds(it) == [("demote", "m2"), ("drain", "m2")]
