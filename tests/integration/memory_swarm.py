"""An in-memory stand-in for the Swarm API, for controller tests and the scale benchmark.

Named for what it is: a test double. It replaces Docker only where a real swarm cannot
exist here (thousands of machines) or where a test is about the controller's Consul side.
Actions change it the way Docker would; ``calls`` counts what the controller asked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import replace

from metalctl.membership.plan import Action, SwarmMember


def member(name: str, role: str = "worker", leader: bool = False) -> SwarmMember:
    return SwarmMember(
        node_id=f"id-{name}",
        hostname=name,
        role=role,  # type: ignore[arg-type]
        state="ready",
        availability="active",
        reachability="reachable" if role == "manager" else "",
        leader=leader,
        tasks_running=0,
        address=f"addr-{name}",
    )


class InMemorySwarm:
    def __init__(self, members: Collection[SwarmMember] = ()) -> None:
        self.nodes = {m.hostname: m for m in members}
        # An index, like the real one: listing managers must not scan every node.
        self.managers = {m.hostname for m in members if m.role == "manager"}
        self.calls: Counter[str] = Counter()

    def members(self, names: Collection[str] | None) -> list[SwarmMember]:
        self.calls["members"] += 1
        if names is None:
            return list(self.nodes.values())
        wanted = self.managers | set(names)
        return [self.nodes[n] for n in wanted if n in self.nodes]

    def execute(self, action: Action) -> str:
        self.calls[action.kind] += 1
        if action.kind == "join":
            self.nodes[action.node] = member(action.node, action.role)
            if action.role == "manager":
                self.managers.add(action.node)
            return f"joined as {action.role}"
        current = self.nodes[action.node]
        if action.kind == "drain":
            self.nodes[action.node] = replace(current, availability="drain")
            return "drained"
        if action.kind == "demote":
            self.nodes[action.node] = replace(current, role="worker", reachability="")
            self.managers.discard(action.node)
            return "demoted to worker"
        if action.kind == "leave_and_remove":
            del self.nodes[action.node]
            self.managers.discard(action.node)
            return "left the swarm; node entry removed"
        raise ValueError(action.kind)
