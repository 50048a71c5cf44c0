"""`metalctl nodes add` and `nodes remove`: change membership through Consul, not Swarm.

``add`` makes a node ready (a new lab container, or a ready node of the store), runs the
roles on that node only with ``swarm_join_by_ansible=false`` (they register it in Consul),
then waits for the controller to join it. ``remove`` checks the quorum arithmetic, makes
the node's agent leave Consul (that deregisters it), then waits for the controller to
drain, leave and remove it. Neither command issues a swarm join or node rm itself.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass

from metalctl import lifecycle, provisioners
from metalctl.clients.consul import ConsulApi, consul_endpoint, consul_server_api
from metalctl.clients.docker import docker_for
from metalctl.conventions import hostname_of, kv_prefix, manager_up
from metalctl.deploy.apply import DeployOptions, DeployProgress, deploy
from metalctl.errors import ClusterAccessError, ConflictError, UsageError, WaitTimeout
from metalctl.membership import quorum
from metalctl.membership.runtime import controller_status
from metalctl.paths import ClusterPaths
from metalctl.pki import secret_paths
from metalctl.spec import ClusterSpec
from metalctl.store import Store
from metalctl.wait import wait_for

Say = Callable[[str], None]
NO_CONTROLLER_HINT = "start one (one per manager for HA): metalctl swarm reconcile --cluster {}"


@dataclass(frozen=True)
class NodeChange:
    cluster: str
    node: str
    role: str
    address: str
    state: str


def add_node(
    store: Store,
    spec: ClusterSpec,
    *,
    name: str | None,
    role: str,
    timeout: float,
    say: Say,
    progress: DeployProgress | None = None,
) -> NodeChange:
    known = {n.name for n in store.list_nodes(spec.name)}
    backend = provisioners.get(spec.spec.provisioner)
    if backend.capabilities.creates_machines and (name is None or name not in known):
        spec = backend.add_machine(store, spec, role, name, say)
        name = spec.nodes[-1].name
    else:
        # A backend that takes machines the spec names, or a retry of an add that failed
        # after its machine was made.
        name = _ready_node(store, spec, name, role)
    say(f"running the roles on {name} (registers it in Consul; the controller joins it)")
    deploy(
        store,
        spec,
        options=DeployOptions(only=(name,), join_by_ansible=False),
        progress=progress,
    )
    node = spec.node(name)
    say(f"waiting up to {timeout:.0f}s for the controller to join {name}")
    try:
        wait_for(
            functools.partial(_active_and_ready, spec, name),
            what=f"node {name}: Active and Ready in the swarm",
            timeout=timeout,
            interval=2.0,
            hint=f"is a membership controller running? {NO_CONTROLLER_HINT.format(spec.name)}; "
            f"then: metalctl nodes add --cluster {spec.name} --name {name}",
        )
    except (WaitTimeout, KeyboardInterrupt) as exc:
        # Deployed but not joined: 'failed' (not 'active') until a retry sees it join.
        why = exc.message if isinstance(exc, WaitTimeout) else "interrupted waiting for the join"
        lifecycle.transition(store, spec.name, [name], lifecycle.FAILED, "nodes add", error=why)
        raise
    lifecycle.transition(
        store, spec.name, [name], lifecycle.ACTIVE, "joined the swarm by the controller"
    )
    return NodeChange(spec.name, name, role, node.address, lifecycle.ACTIVE)


def _ready_node(store: Store, spec: ClusterSpec, name: str | None, role: str) -> str:
    """The machine must already be in the spec and the store, ready."""
    if name is None:
        raise UsageError(
            f"cluster {spec.name}'s provisioner '{spec.spec.provisioner}' does not create "
            "machines: give --name of a ready node from its spec"
        )
    record = store.get_node(spec.name, name)
    # deploying: an add interrupted while it waited for the controller.
    if record.state not in (lifecycle.READY, lifecycle.FAILED, lifecycle.DEPLOYING):
        raise ConflictError(
            f"node {name} is '{record.state}'; nodes add takes a ready node "
            "(or a failed or interrupted add of it)"
        )
    if spec.role_of(name) != role:
        raise UsageError(
            f"node {name} has role {spec.role_of(name)} in the spec, not {role}",
            hint="set spec.nodes[].swarmRole and register the spec again with -f",
        )
    return name


def remove_node(
    store: Store,
    spec: ClusterSpec,
    name: str,
    *,
    force: bool,
    timeout: float,
    say: Say,
    keep: bool = False,
) -> NodeChange:
    record = store.get_node(spec.name, name)
    if name == spec.spec.swarm.master:
        raise ConflictError(
            f"{name} is the master that 'swarm env' and deploys talk to; it is not removed",
        )
    if record.state not in (lifecycle.ACTIVE, lifecycle.LEAVING, lifecycle.FAILED):
        raise ConflictError(f"node {name} is '{record.state}'; only active nodes are removed")
    paths = ClusterPaths.for_cluster(spec.name)
    server = consul_server_api(spec, paths, exclude={name})
    force_key = f"{kv_prefix(spec.name)}/force/{name}"
    try:
        if not force:
            _check_quorum(spec, server, name)
        if not controller_status(server, spec.name).leader:
            raise ClusterAccessError(
                f"no membership controller leads cluster {spec.name}; nothing would remove {name}",
                hint=NO_CONTROLLER_HINT.format(spec.name),
            )
        if force:
            server.kv_put(force_key, b"nodes remove --force")
        # A retry of an interrupted removal finds the node leaving, its agent maybe gone.
        retry = record.state == lifecycle.LEAVING
        _deregister(spec, paths, server, name, force or retry, say)
        lifecycle.transition(store, spec.name, [name], lifecycle.LEAVING, "nodes remove")
        say(f"deregistered; waiting up to {timeout:.0f}s for the controller to drain and remove it")
        wait_for(
            functools.partial(_gone_from_swarm, spec, name),
            what=f"node {name}: drained, left and removed from the swarm",
            timeout=timeout,
            interval=2.0,
            hint=f"see 'metalctl events --cluster {spec.name}'; re-run to keep waiting",
        )
        _revoke_consul_token(server, paths, name)
        say(f"{name}: its Consul token is revoked")
        lifecycle.transition(store, spec.name, [name], lifecycle.RETIRED, "removed from swarm")
    finally:
        if force:
            with contextlib.suppress(ClusterAccessError):  # the quorum bypass is one-shot
                server.kv_delete(force_key)
        server.close()
    if not keep:
        provisioners.get(spec.spec.provisioner).release(store, spec, name)
    return NodeChange(spec.name, name, record.role, record.address, lifecycle.RETIRED)


def _revoke_consul_token(server: ConsulApi, paths: ClusterPaths, name: str) -> None:
    """A removed node's agent token stops working (403), so the machine, or whoever has
    its disk, cannot act in Consul as that node any more. The entry stays in the tokens
    file: a later 'nodes add' of the same machine re-creates the token from it."""
    tokens = json.loads(secret_paths(paths).acl_tokens.read_text())
    accessor = (tokens.get(name) or {}).get("accessor")
    if accessor:
        server.acl_token_delete(str(accessor))


def _check_quorum(spec: ClusterSpec, server: ConsulApi, name: str) -> None:
    """Refuse (exit 5) a removal that breaks or exhausts Swarm or Consul quorum."""
    client = docker_for(spec, ClusterPaths.for_cluster(spec.name), timeout=15)
    try:
        raw = client.nodes(filters={"role": "manager"})
    finally:
        client.close()
    managers = {hostname_of(n): manager_up(n) for n in raw}
    verdicts = []
    if name in managers:
        up = [h for h, is_up in managers.items() if is_up]
        verdicts.append(
            quorum.removal_check(
                quorum.SWARM_MANAGERS,
                len(managers),
                len(up),
                removing_reachable=1 if name in up else 0,
            )
        )
    voters = server.raft_voters()
    if name in voters:
        alive = server.alive_servers() & set(voters)
        verdicts.append(
            quorum.removal_check(
                quorum.CONSUL_SERVERS,
                len(voters),
                len(alive),
                removing_reachable=1 if name in alive else 0,
            )
        )
    refused = [v.reason for v in verdicts if not v.allowed]
    if refused:
        raise ConflictError(
            f"removing {name} is refused: " + "; ".join(refused),
            hint="add managers first (nodes add --role manager), or --force to remove anyway",
        )


def _deregister(
    spec: ClusterSpec, paths: ClusterPaths, server: ConsulApi, name: str, force: bool, say: Say
) -> None:
    """The node's own agent leaves Consul (its swarm-node registration goes with it)."""
    agent = ConsulApi(consul_endpoint(spec, paths, name))
    try:
        # Maintenance first: the node turns critical, so the controller's cheap
        # "unhealthy" view sees it, and its disappearance a moment later costs one lookup
        # by name rather than a read of every registration.
        agent.service_maintenance("metalctl nodes remove")
        agent.agent_leave()
        say(f"{name}: Consul agent left the cluster")
    except ClusterAccessError as exc:
        if not force:
            raise ClusterAccessError(
                f"cannot reach {name}'s Consul agent to deregister it: {exc.message}",
                hint="for a dead node use --force (the servers then force it out)",
            ) from exc
        with contextlib.suppress(ClusterAccessError):  # already gone from the members
            server.force_leave(name)
        server.catalog_deregister(name)
        say(f"{name}: unreachable; forced out of Consul by the servers")
    finally:
        agent.close()


def _swarm_nodes(spec: ClusterSpec, name: str) -> list[dict[str, str]]:
    client = docker_for(spec, ClusterPaths.for_cluster(spec.name), timeout=15)
    try:
        raw = client.nodes(filters={"name": name})
    finally:
        client.close()
    return [
        {"state": n["Status"]["State"], "availability": n["Spec"]["Availability"]}
        for n in raw
        if hostname_of(n) == name
    ]


def _active_and_ready(spec: ClusterSpec, name: str) -> bool:
    return any(
        n["state"] == "ready" and n["availability"] == "active" for n in _swarm_nodes(spec, name)
    )


def _gone_from_swarm(spec: ClusterSpec, name: str) -> bool:
    return not _swarm_nodes(spec, name)
