"""The few Consul HTTP API calls day-2 membership needs, typed, with explicit timeouts.

Not py-consul: it drops the token on some endpoints, and the controller needs blocking
queries, sessions and lock acquisition where every call has a known timeout. Every error
becomes ``ConsulUnavailable`` (network, 5xx) or ``ConsulDenied`` (403), with the URL path
but never the token.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import requests

from metalctl.conventions import SERF_HEALTH, SWARM_NODE_SERVICE, Registration, parse_registration
from metalctl.errors import ClusterAccessError
from metalctl.paths import ClusterPaths
from metalctl.pki import read_controller_token, read_master_token
from metalctl.spec import ClusterSpec

SERVICE = SWARM_NODE_SERVICE
# Server-side filter: entries with any critical or warning check (a check list matches
# when any of its elements does). Consul 1.8 cannot filter on ModifyIndex, so "what is
# unhealthy now" is the smallest view that still shows most changes.
UNHEALTHY = 'Checks.Status == "critical" or Checks.Status == "warning"'


def only_nodes(names: set[str]) -> str:
    """A filter for these node names (DNS labels: nothing to escape)."""
    return " or ".join(f'Node.Node == "{n}"' for n in sorted(names))


class ConsulUnavailable(ClusterAccessError):
    """Consul did not answer (network error, timeout, 5xx)."""


class ConsulDenied(ClusterAccessError):
    """Consul refused the token (403): the ACL policy lacks a permission."""


@dataclass(frozen=True)
class ConsulEndpoint:
    """Where and how to reach one Consul agent's HTTP API."""

    url: str  # https://10.0.0.1:8501 (or http://127.0.0.1:8500 for a local dev agent)
    token: str = field(repr=False)
    ca: str | None = None  # CA bundle that signed the agent's cert
    cert: tuple[str, str] | None = None  # client cert + key (verify_incoming)


@dataclass(frozen=True)
class KvEntry:
    value: bytes
    session: str
    modify_index: int


class ConsulApi:
    def __init__(
        self, endpoint: ConsulEndpoint, timeout: float = 10.0, member_check: str = SERF_HEALTH
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        # The node check that proves Consul membership (see parse_registration). Only
        # catalog-only stand-in nodes (tests, the scale bench) use another: the leader
        # reaps catalog nodes that carry serfHealth but are not serf members.
        self.member_check = member_check
        self._http = requests.Session()
        # REQUESTS_CA_BUNDLE must not replace the cluster CA.
        self._http.trust_env = False
        self._http.verify = endpoint.ca if endpoint.ca else True
        if endpoint.cert:
            self._http.cert = endpoint.cert
        self._http.headers["X-Consul-Token"] = endpoint.token

    def close(self) -> None:
        self._http.close()

    # --- plumbing -----------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        data: bytes | None = None,
        wait: float = 0.0,
        ok404: bool = False,
        ok429: bool = False,
    ) -> requests.Response:
        url = f"{self.endpoint.url}/v1/{path}"
        try:
            resp = self._http.request(
                method,
                url,
                params=params,
                json=body,
                data=data,
                # A blocking query may hold the request for `wait` plus Consul's jitter
                # (wait/16); the read timeout must outlast both.
                timeout=(self.timeout, self.timeout + wait * 1.1),
            )
        except requests.RequestException as exc:
            raise ConsulUnavailable(
                f"Consul at {self.endpoint.url}: {method} /v1/{path}: {exc}"
            ) from exc
        if resp.status_code == 403:
            raise ConsulDenied(
                f"Consul at {self.endpoint.url} denied {method} /v1/{path}: {resp.text.strip()}",
                hint="the token's ACL policy lacks this permission",
            )
        if (resp.status_code == 404 and ok404) or (resp.status_code == 429 and ok429):
            return resp
        if resp.status_code >= 400:
            raise ConsulUnavailable(
                f"Consul at {self.endpoint.url}: {method} /v1/{path} -> "
                f"{resp.status_code} {resp.text.strip()[:200]}"
            )
        return resp

    @staticmethod
    def _index(resp: requests.Response) -> int:
        return int(resp.headers.get("X-Consul-Index", "0"))

    # --- catalog and health -------------------------------------------------------------

    def swarm_nodes(
        self, index: int = 0, wait: float = 0.0, where: str = ""
    ) -> tuple[int, list[Registration], list[str]]:
        """Every ``swarm-node`` registration with its health; a blocking query when
        ``index`` > 0 (returns when the result changes or after ``wait`` seconds).

        ``where`` is a Consul filter expression (``UNHEALTHY``, ``only_nodes(...)``).
        Returns (index, registrations, problems); a registration without a valid role is
        a problem, not a node (the controller says so, it does not guess a role). An entry
        of a node that is not a Consul member is left out (see ``parse_registration``).
        """
        params: dict[str, Any] = {}
        if index > 0:
            params = {"index": index, "wait": _wait_param(wait)}
        if where:
            params["filter"] = where
        resp = self._call("GET", f"health/service/{SERVICE}", params=params, wait=wait)
        regs: list[Registration] = []
        problems: list[str] = []
        for entry in resp.json():
            reg = parse_registration(entry, self.member_check)
            if isinstance(reg, str):
                problems.append(reg)
            elif reg is not None:
                regs.append(reg)
        return self._index(resp), regs, problems

    def agent_node(self) -> str:
        """The node name of the agent this client talks to."""
        return str(self._call("GET", "agent/self").json()["Config"]["NodeName"])

    def service_maintenance(self, reason: str) -> None:
        """Put this agent's swarm-node in maintenance (a critical check with ``reason``)."""
        params = {"enable": "true", "reason": reason}
        self._call("PUT", f"agent/service/maintenance/{SERVICE}", params=params)

    def agent_leave(self) -> None:
        """Make this agent leave the cluster gracefully (deregisters its services)."""
        self._call("PUT", "agent/leave")

    def force_leave(self, node: str) -> None:
        """Move a failed node to 'left' so that its registrations are reaped."""
        self._call("PUT", f"agent/force-leave/{node}")

    def catalog_deregister(self, node: str) -> None:
        self._call("PUT", "catalog/deregister", body={"Node": node})

    def raft_voters(self) -> list[str]:
        cfg = self._call("GET", "operator/raft/configuration").json()
        return [s["Node"] for s in cfg.get("Servers", []) if s.get("Voter")]

    def members(self) -> list[dict[str, Any]]:
        """The LAN gossip members this agent sees (Name, Addr, Status, Tags)."""
        return list(self._call("GET", "agent/members").json())

    def leader(self) -> str:
        """The Raft leader's address:port, "" while there is none."""
        return str(self._call("GET", "status/leader").json() or "")

    def acl_token_delete(self, accessor: str) -> None:
        """Revoke a token (a removed node's): it gets 403 from then on. Gone already is fine."""
        self._call("DELETE", f"acl/token/{accessor}", ok404=True)

    def alive_servers(self) -> set[str]:
        """Voters autopilot considers healthy (serf alive, in contact with the leader)."""
        # 429 means "unhealthy cluster" but still carries the per-server list (or null
        # while autopilot has no data yet: then no server counts as alive, which can
        # only refuse a removal, never allow one).
        health = self._call("GET", "operator/autopilot/health", ok404=True, ok429=True)
        if health.status_code == 404:
            return set()
        return {s["Name"] for s in health.json().get("Servers") or [] if s.get("Healthy")}

    # --- sessions and KV ----------------------------------------------------------------

    def session_create(self, name: str, ttl: float, lock_delay: float) -> str:
        """A session bound to this agent's node health (serfHealth) and to a TTL:
        it dies with the node, or when its holder stops renewing it."""
        body = {
            "Name": name,
            "TTL": f"{int(ttl)}s",
            "LockDelay": f"{int(lock_delay)}s",
            "Checks": ["serfHealth"],
            "Behavior": "release",
        }
        return str(self._call("PUT", "session/create", body=body).json()["ID"])

    def session_renew(self, session: str) -> bool:
        """False when the session is gone (expired or invalidated)."""
        return self._call("PUT", f"session/renew/{session}", ok404=True).status_code == 200

    def session_destroy(self, session: str) -> None:
        self._call("PUT", f"session/destroy/{session}", ok404=True)

    def kv_get(self, key: str, index: int = 0, wait: float = 0.0) -> tuple[int, KvEntry | None]:
        params: dict[str, Any] = {}
        if index > 0:
            params = {"index": index, "wait": _wait_param(wait)}
        resp = self._call("GET", f"kv/{key}", params=params, wait=wait, ok404=True)
        if resp.status_code == 404:
            return self._index(resp), None
        raw = resp.json()[0]
        value = base64.b64decode(raw["Value"]) if raw.get("Value") else b""
        return self._index(resp), KvEntry(value, raw.get("Session", ""), raw["ModifyIndex"])

    def kv_put(
        self, key: str, value: bytes, *, acquire: str | None = None, release: str | None = None
    ) -> bool:
        params = {"acquire": acquire} if acquire else {"release": release} if release else None
        resp = self._call("PUT", f"kv/{key}", params=params, data=value)
        return bool(resp.json())

    def kv_keys(self, prefix: str) -> list[str]:
        resp = self._call("GET", f"kv/{prefix}", params={"keys": "true"}, ok404=True)
        return [] if resp.status_code == 404 else [str(k) for k in resp.json()]

    def kv_delete(self, key: str) -> None:
        self._call("DELETE", f"kv/{key}")

    def kv_json(self, key: str) -> Any:
        _, entry = self.kv_get(key)
        return json.loads(entry.value) if entry and entry.value else None


def _wait_param(seconds: float) -> str:
    """A blocking query's wait in milliseconds, rounded up: whole seconds would wake a
    timer up to a second early, and then once more."""
    return f"{max(100, math.ceil(seconds * 1000))}ms"


# --- a deployed cluster's Consul -------------------------------------------------------

CONSUL_HTTPS_PORT = 8501


def consul_endpoint(
    spec: ClusterSpec, paths: ClusterPaths, node: str, *, as_controller: bool = False
) -> ConsulEndpoint:
    """The HTTPS API of ``node``'s Consul agent, with the admin client cert and a token
    read from its 0600 file: the management token for operator commands, or with
    ``as_controller`` the membership controller's narrow one."""
    client_dir = paths.docker_client
    token = read_controller_token(paths) if as_controller else read_master_token(paths)
    return ConsulEndpoint(
        url=f"https://{spec.node(node).address}:{CONSUL_HTTPS_PORT}",
        token=token,
        ca=str(client_dir / "ca.pem"),
        cert=(str(client_dir / "cert.pem"), str(client_dir / "key.pem")),
    )


def consul_server_api(
    spec: ClusterSpec, paths: ClusterPaths, exclude: Collection[str] = ()
) -> ConsulApi:
    """The HTTP API of the first Consul server that answers, skipping ``exclude`` (a node
    being removed, retired ones)."""
    errors = []
    for server in spec.spec.consul.servers:
        if server in exclude:
            continue
        api = ConsulApi(consul_endpoint(spec, paths, server))
        try:
            api.agent_node()
            return api
        except ClusterAccessError as exc:
            errors.append(exc.message)
            api.close()
    raise ClusterAccessError(
        "no Consul server answers: " + "; ".join(errors) if errors else "no other Consul server",
        hint="is a Consul quorum up? 'metalctl swarm status'",
    )
