"""Build a controller for a deployed cluster, and read what the controllers are doing.

Where controllers run: on the admin host (or any host with a copy of the cluster's state
folder), one per manager, each bound to that manager's Consul agent with ``--agent``. The
lock session lives on that agent's node, so when a manager dies, its controller's lock
goes with it and a controller bound to a surviving manager takes over. Nothing extra is
installed on the nodes; see docs/membership.md for why.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from metalctl import lifecycle
from metalctl.clients.consul import ConsulApi, consul_endpoint
from metalctl.conventions import kv_prefix
from metalctl.errors import UsageError
from metalctl.membership.controller import (
    Controller,
    ControllerOptions,
    PassReport,
    Record,
)
from metalctl.membership.election import LeaderLock, LockTimings, holder_of
from metalctl.membership.swarm_api import DockerSwarm
from metalctl.paths import ClusterPaths
from metalctl.spec import ClusterSpec
from metalctl.store import Store, add_event


def manager_addresses(store: Store, spec: ClusterSpec) -> list[str]:
    """Managers to ask first: the master, the spec's managers, then day-2 managers."""
    live = {
        n.name: n.address
        for n in store.list_nodes(spec.name)
        if n.state != lifecycle.RETIRED and n.role == "manager"
    }
    names = [spec.spec.swarm.master, *spec.spec.swarm.managers, *live]
    return [live.get(n) or spec.node(n).address for n in dict.fromkeys(names)]


def build_controller(
    store: Store,
    spec: ClusterSpec,
    agent: str | None,
    options: ControllerOptions,
    timings: LockTimings,
    on_record: Callable[[Record], None] | None = None,
    on_pass: Callable[[PassReport], None] | None = None,
) -> Controller:
    agent = agent or spec.spec.swarm.master
    if agent not in {n.name for n in spec.nodes}:
        raise UsageError(f"--agent {agent}: cluster {spec.name} has no such node")
    paths = ClusterPaths.for_cluster(spec.name)
    endpoint = consul_endpoint(spec, paths, agent, as_controller=True)
    holder = f"{socket.gethostname()}/{os.getpid()}@{agent}"
    lock = LeaderLock(endpoint, f"{kv_prefix(spec.name)}/leader", holder, timings)
    swarm = DockerSwarm(
        manager_addresses(store, spec), spec.spec.swarm.docker_api_port, paths.docker_client
    )
    actor = f"controller@{agent}"

    def record(rec: Record) -> None:
        with store.transaction() as db:
            add_event(db, spec.name, rec.kind, rec.reason, node=rec.node, actor=actor)
        if on_record is not None:
            on_record(rec)

    consul = ConsulApi(endpoint)
    return Controller(spec.name, consul, swarm, lock, record, options, on_pass=on_pass)


@dataclass(frozen=True)
class ControllerStatus:
    leader: str  # "" when no controller holds the lock
    last_pass: float | None
    last_actions: list[str]
    last_errors: list[str]


def controller_status(consul: ConsulApi, cluster: str) -> ControllerStatus:
    prefix = kv_prefix(cluster)
    leader = holder_of(consul.kv_get(f"{prefix}/leader")[1])
    status: dict[str, Any] = consul.kv_json(f"{prefix}/status") or {}
    return ControllerStatus(
        leader=leader,
        last_pass=status.get("last_pass"),
        last_actions=list(status.get("actions", [])),
        last_errors=list(status.get("errors", [])),
    )
