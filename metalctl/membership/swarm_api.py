"""The Swarm side of day-2 membership: read members, and join/drain/demote/leave/remove.

Everything goes over Docker's mutual-TLS API (tcp/2376) with the admin client cert: reads
and node updates to a manager, ``swarm join``/``swarm leave`` to the node itself. Join
tokens are read from a manager at the moment of a join, passed in the request body, and
never kept, logged or recorded.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any, Protocol

import docker
import docker.errors
import requests

from metalctl.clients.docker import docker_api_at
from metalctl.conventions import SWARM_PORT, hostname_of, manager_up
from metalctl.errors import ClusterAccessError
from metalctl.membership.plan import Action, SwarmMember

ALREADY = "already"  # _forget_stale_swarm: the node is a member, nothing to join
_ACCESS = (docker.errors.DockerException, requests.RequestException, OSError)


class SwarmOps(Protocol):
    """What the controller needs from Swarm (the bench swaps in an in-memory fake)."""

    def members(self, names: Collection[str] | None) -> list[SwarmMember]:
        """Every member (``None``), or every manager plus the members named."""

    def execute(self, action: Action) -> str:
        """Carry out a join/drain/demote/leave_and_remove; return what was done."""


class DockerSwarm:
    def __init__(self, manager_addresses: list[str], port: int, client_dir: Path) -> None:
        self._managers = list(dict.fromkeys(manager_addresses))
        self._port = port
        self._client_dir = client_dir
        self._reachable: list[str] = []  # managers Swarm called reachable at the last read

    # --- reading --------------------------------------------------------------------------

    def members(self, names: Collection[str] | None) -> list[SwarmMember]:
        api = self._manager()
        try:
            if names is None:
                raw = api.nodes()
            else:
                raw = {n["ID"]: n for n in api.nodes(filters={"role": "manager"})}
                wanted = sorted(names)
                # Several name filters are OR-ed: one request per 100 names (URL length).
                for i in range(0, len(wanted), 100):
                    for n in api.nodes(filters={"name": wanted[i : i + 100]}):
                        # The name filter matches hostname prefixes too: keep exact matches.
                        if hostname_of(n) in names:
                            raw[n["ID"]] = n
                raw = list(raw.values())
            self._learn_managers(raw)
            return [self._member(api, n) for n in raw if hostname_of(n)]
        except _ACCESS as exc:
            raise ClusterAccessError(f"reading the swarm nodes: {exc}") from exc
        finally:
            api.close()

    def _member(self, api: docker.APIClient, raw: dict[str, Any]) -> SwarmMember:
        manager = raw.get("ManagerStatus") or {}
        availability = raw["Spec"].get("Availability", "active")
        # Tasks only matter for a drained node (is it empty yet?); don't ask for the others.
        running = 0
        # A down node runs nothing (Swarm has rescheduled its tasks; their records only
        # say "running" until the node reports back), so only a live node is waited for.
        if availability == "drain" and raw["Status"]["State"] == "ready":
            tasks = api.tasks(filters={"node": raw["ID"]})
            running = sum(1 for t in tasks if t["Status"]["State"] in ("running", "starting"))
        return SwarmMember(
            node_id=raw["ID"],
            hostname=hostname_of(raw),
            role=raw["Spec"]["Role"],
            state=raw["Status"]["State"],
            availability=availability,
            reachability=manager.get("Reachability", ""),
            leader=bool(manager.get("Leader")),
            tasks_running=running,
            address=raw["Status"].get("Addr", ""),
        )

    def _learn_managers(self, raw: list[dict[str, Any]]) -> None:
        seen = [n["ManagerStatus"]["Addr"].rsplit(":", 1)[0] for n in raw if manager_up(n)]
        self._managers = list(dict.fromkeys(self._managers[:1] + seen + self._managers))
        self._reachable = seen

    def _manager(self) -> docker.APIClient:
        """A client for the first manager that answers (the last one that worked first)."""
        errors = []
        for i, address in enumerate(self._managers):
            api = docker_api_at(address, self._port, self._client_dir, timeout=15)
            try:
                if api.info()["Swarm"].get("ControlAvailable"):
                    self._managers.insert(0, self._managers.pop(i))
                    return api
                errors.append(f"{address}: not a manager")
            except _ACCESS as exc:
                errors.append(f"{address}: {exc}")
            api.close()
        raise ClusterAccessError(
            "no swarm manager answers: " + "; ".join(errors),
            hint="is a quorum of managers up? 'metalctl swarm status'",
        )

    # --- acting ---------------------------------------------------------------------------

    def execute(self, action: Action) -> str:
        try:
            if action.kind == "join":
                return self._join(action)
            if action.kind == "leave_and_remove":
                return self._leave_and_remove(action)
            if action.kind in ("drain", "demote"):
                return self._update(action)
        except _ACCESS as exc:
            raise ClusterAccessError(f"{action.kind} {action.node}: {exc}") from exc
        raise ValueError(f"not an executable action: {action.kind}")

    def _update(self, action: Action) -> str:
        api = self._manager()
        try:
            node = api.inspect_node(action.node_id)
            spec = dict(node["Spec"])
            if action.kind == "drain":
                spec["Availability"] = "drain"
            else:
                spec["Role"] = "worker"
            api.update_node(action.node_id, node["Version"]["Index"], spec)
        finally:
            api.close()
        return "drained" if action.kind == "drain" else "demoted to worker"

    def _join(self, action: Action) -> str:
        target = docker_api_at(action.address, self._port, self._client_dir, timeout=30)
        api = self._manager()
        try:
            swarm = api.inspect_swarm()
            token = swarm["JoinTokens"]["Manager" if action.role == "manager" else "Worker"]
            local = target.info()["Swarm"]
            note = self._forget_stale_swarm(api, local, action.node, target)
            if note == ALREADY:
                return "already a member (joined a moment ago)"
            # Only managers that answer: a join given a dead one may try it and fail.
            remotes = [f"{a}:{SWARM_PORT}" for a in (self._reachable or self._managers)]
            target.join_swarm(
                remote_addrs=remotes,
                join_token=token,
                listen_addr=f"{action.address}:{SWARM_PORT}",
                advertise_addr=action.address,
            )
        finally:
            api.close()
            target.close()
        return f"joined as {action.role}{note}"

    def _forget_stale_swarm(
        self, api: docker.APIClient, local: dict[str, Any], node: str, target: docker.APIClient
    ) -> str:
        """A node removed while it was down still believes it is a member: make it leave
        first, but never when the swarm really knows its node ID (a name mismatch)."""
        if local.get("LocalNodeState") in ("inactive", "", None):
            return ""
        try:
            known = api.inspect_node(local["NodeID"])
        except docker.errors.NotFound:
            known = None
        if known is not None:
            host = hostname_of(known)
            if host in ("", node):
                return ALREADY
            raise ClusterAccessError(
                f"{node} is already a swarm member as hostname '{host}'",
                hint="the Consul node name and the hostname must be the same",
            )
        target.leave_swarm(force=True)
        return " (left a stale swarm first)"

    def _leave_and_remove(self, action: Action) -> str:
        left = "left the swarm"
        if action.address:
            target = docker_api_at(action.address, self._port, self._client_dir, timeout=10)
            try:
                target.leave_swarm(force=False)
            except _ACCESS as exc:
                # A dead node cannot leave; the removal below is forced for that reason.
                left = f"could not leave ({type(exc).__name__}), removed by force"
            finally:
                target.close()
        api = self._manager()
        try:
            api.remove_node(action.node_id, force=True)
        except docker.errors.NotFound:
            pass
        finally:
            api.close()
        return f"{left}; node entry removed"
