"""Names and rules that day-1 (deploy) and day-2 (membership) code must agree on.

Both sides read and write the same Consul service, KV prefix and Swarm node fields; keeping
them here (core, no I/O) lets deploy use them without importing the membership package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

# The Consul service every node registers (roles/swarm) and the controller watches.
SWARM_NODE_SERVICE = "swarm-node"
# The check the Consul leader keeps on every node that is a live member of the cluster.
SERF_HEALTH = "serfHealth"
SWARM_PORT = 2377

Role = Literal["manager", "worker"]
Health = Literal["passing", "warning", "critical"]


def kv_prefix(cluster: str) -> str:
    """Where the membership controller keeps its lock, timers and status in Consul KV."""
    return f"metalctl/{cluster}/controller"


def hostname_of(raw: dict[str, Any]) -> str:
    """A Swarm node's hostname (= the metalctl node name and the Consul node name); "" for
    a node that joined a moment ago and has not reported it."""
    return str((raw.get("Description") or {}).get("Hostname", ""))


def reachable_manager(leader: bool, reachability: str) -> bool:
    """The one rule for "this Swarm manager counts as reachable" (quorum arithmetic,
    status, join targets, the membership planner): the leader, or a manager Swarm reports
    reachable."""
    return leader or reachability == "reachable"


def manager_up(raw: dict[str, Any]) -> bool:
    """``reachable_manager`` for a node as the Docker API returns it."""
    status = raw.get("ManagerStatus") or {}
    return reachable_manager(bool(status.get("Leader")), str(status.get("Reachability", "")))


@dataclass(frozen=True)
class Registration:
    """A ``swarm-node`` service in Consul; a node without one is deregistered."""

    node: str
    address: str
    role: Role
    status: Health


_STATUS_RANK: dict[str, int] = {"passing": 0, "warning": 1, "critical": 2}


def parse_registration(
    entry: dict[str, Any], member_check: str = SERF_HEALTH
) -> Registration | str | None:
    """One health/service entry -> Registration, a problem text, or None for an entry of a
    node that is not a Consul member.

    Membership is the leader's ``serfHealth`` check, not the catalog entry alone: when an
    agent leaves, the leader deregisters its node, but the leaving agent's last
    anti-entropy sync can write node and service back (without ``serfHealth``), and they
    stay until the leader's next reconcile, up to a minute later. Counting such an entry
    would cancel the deregistration and delay the removal by that minute. A joining node
    gets ``serfHealth`` from the leader at its join, before its agent syncs services.
    """
    node = entry["Node"]["Node"]
    checks = entry.get("Checks") or []
    if not any(c.get("CheckID") == member_check for c in checks):
        return None
    service = entry["Service"]
    role = (service.get("Meta") or {}).get("role")
    if role not in ("manager", "worker"):
        return (
            f"{node}: {SWARM_NODE_SERVICE} registration has meta role {role!r}, not manager/worker"
        )
    # The worst check wins (node checks such as serfHealth count too); maintenance
    # mode is a critical check, so a node in maintenance counts as down.
    worst = max((_STATUS_RANK.get(c["Status"], 2) for c in checks), default=0)
    status: Health = ("passing", "warning", "critical")[worst]
    address = service.get("Address") or entry["Node"]["Address"]
    typed_role: Role = role
    return Registration(node, address, typed_role, status)
