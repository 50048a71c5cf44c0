"""`metalctl swarm status`: Swarm nodes and Consul members with quorum and fault tolerance."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from metalctl.clients.consul import consul_server_api
from metalctl.clients.docker import ACCESS_ERRORS, docker_for
from metalctl.conventions import hostname_of, manager_up
from metalctl.errors import ClusterAccessError
from metalctl.membership import quorum
from metalctl.membership.runtime import ControllerStatus, controller_status
from metalctl.paths import ClusterPaths
from metalctl.spec import ClusterSpec


@dataclass(frozen=True)
class SwarmNode:
    hostname: str
    role: str
    state: str
    availability: str
    manager_status: str
    address: str


@dataclass(frozen=True)
class ConsulMember:
    name: str
    address: str
    status: str
    role: str


@dataclass(frozen=True)
class Quorum:
    """Raft arithmetic: a group of n voters needs n//2+1 and survives (n-1)//2 failures."""

    voters: int
    reachable: int

    @property
    def needed(self) -> int:
        return quorum.needed(self.voters)

    @property
    def fault_tolerance(self) -> int:
        return quorum.fault_tolerance(self.voters)

    @property
    def has_quorum(self) -> bool:
        return self.reachable >= self.needed


@dataclass(frozen=True)
class SwarmStatus:
    cluster: str
    master: str
    swarm_nodes: list[SwarmNode]
    consul_members: list[ConsulMember]
    swarm_quorum: Quorum
    consul_quorum: Quorum
    consul_leader: str
    controller: ControllerStatus


_CONSUL_STATUS = {1: "alive", 2: "leaving", 3: "left", 4: "failed"}


def swarm_status(spec: ClusterSpec, paths: ClusterPaths) -> SwarmStatus:
    try:
        client = docker_for(spec, paths, timeout=15)
        raw_nodes = client.nodes()
        client.close()
    except ACCESS_ERRORS as exc:
        raise ClusterAccessError(
            f"cannot read the swarm from {spec.spec.swarm.master}: {exc}",
            hint="is the cluster deployed? 'metalctl deploy swarm'",
        ) from exc
    nodes = [_swarm_node(n) for n in raw_nodes]
    managers = [n for n in raw_nodes if n["Spec"]["Role"] == "manager"]
    swarm_q = Quorum(len(managers), sum(1 for n in managers if manager_up(n)))
    with contextlib.closing(consul_server_api(spec, paths)) as api:
        members = [_consul_member(m) for m in api.members()]
        voters = api.raft_voters()
        leader = api.leader()
        controller = controller_status(api, spec.name)
    alive = {m.name for m in members if m.status == "alive"}
    consul_q = Quorum(len(voters), sum(1 for v in voters if v in alive))
    return SwarmStatus(
        cluster=spec.name,
        master=spec.spec.swarm.master,
        swarm_nodes=sorted(nodes, key=lambda n: n.hostname),
        consul_members=sorted(members, key=lambda m: m.name),
        swarm_quorum=swarm_q,
        consul_quorum=consul_q,
        consul_leader=next(
            (m.name for m in members if leader and leader.startswith(m.address + ":")), leader
        ),
        controller=controller,
    )


def _consul_member(raw: dict[str, Any]) -> ConsulMember:
    return ConsulMember(
        raw["Name"],
        raw["Addr"],
        _CONSUL_STATUS.get(raw["Status"], str(raw["Status"])),
        "server" if (raw.get("Tags") or {}).get("role") == "consul" else "client",
    )


def _swarm_node(raw: dict[str, Any]) -> SwarmNode:
    manager = raw.get("ManagerStatus") or {}
    mstatus = "leader" if manager.get("Leader") else manager.get("Reachability", "")
    return SwarmNode(
        hostname=hostname_of(raw) or raw["ID"][:12],
        role=raw["Spec"]["Role"],
        state=raw["Status"]["State"],
        availability=raw["Spec"]["Availability"],
        manager_status=mstatus,
        address=raw["Status"].get("Addr", ""),
    )
