"""The cluster spec (apiVersion metalctl/v1alpha1, kind Cluster): typed models and validation.

A spec is validated completely before anything changes: shape and types first
(pydantic, unknown keys rejected), then the cross-field rules (quorum, duplicates,
membership of master/managers/servers). All problems are reported together, each
naming its field (``spec.swarm.managers``) and what to do about it.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from metalctl.errors import SpecError

API_VERSION = "metalctl/v1alpha1"
KIND = "Cluster"
MAX_MANAGERS = 7
PLAIN_DOCKER_PORT = 2375

_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class SSH(_Model):
    user: str = "root"
    port: int = Field(22, ge=1, le=65535)


class Node(_Model):
    name: str
    address: str
    ssh: SSH = SSH()
    labels: dict[str, str] = Field(default_factory=dict)
    # The role of a node added on day 2 ('metalctl nodes add'); the first deploy's
    # managers are spec.swarm.managers (an odd count, for the quorum).
    swarm_role: Literal["manager", "worker"] | None = Field(None, alias="swarmRole")


class Swarm(_Model):
    master: str
    managers: list[str]
    docker_api_port: int = Field(2376, alias="dockerApiPort", ge=1, le=65535)


class ConsulBinary(_Model):
    url: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Consul(_Model):
    servers: list[str]
    datacenter: str = Field("dc1", pattern=r"^[a-z0-9-]+$")
    version: str = "1.8.7"
    binary: ConsulBinary | None = None


class Metadata(_Model):
    name: str


class ClusterBody(_Model):
    provisioner: Literal["lab", "static"] = "static"
    nodes: list[Node] = Field(min_length=1)
    swarm: Swarm
    consul: Consul


class ClusterSpec(_Model):
    api_version: Literal["metalctl/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["Cluster"]
    metadata: Metadata
    spec: ClusterBody

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def nodes(self) -> list[Node]:
        return self.spec.nodes

    def node(self, name: str) -> Node:
        for node in self.spec.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def role_of(self, name: str) -> str:
        if name in self.spec.swarm.managers:
            return "manager"
        return self.node(name).swarm_role or "worker"

    def with_node(self, node: Node) -> ClusterSpec:
        """A copy with one more node (validated like any spec)."""
        data = self.model_dump(by_alias=True, exclude_none=True, mode="json")
        data["spec"]["nodes"].append(node.model_dump(by_alias=True, exclude_none=True))
        return parse_spec(yaml.safe_dump(data, sort_keys=False), source=f"cluster {self.name}")

    def to_yaml(self) -> str:
        data = self.model_dump(by_alias=True, exclude_none=True, mode="json")
        return yaml.safe_dump(data, sort_keys=False)


def load_spec_file(path: Path) -> ClusterSpec:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(str(path), [("file", f"cannot read it: {exc.strerror}")]) from exc
    return parse_spec(text, source=str(path))


def parse_spec(text: str, source: str = "<spec>") -> ClusterSpec:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(source, [("yaml", f"malformed YAML at {where}: {problem}")]) from exc
    if not isinstance(data, dict):
        raise SpecError(
            source, [("(top)", "expected a mapping with apiVersion, kind, metadata, spec")]
        )
    try:
        spec = ClusterSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(source, [_describe(err) for err in exc.errors()]) from exc
    problems = check_rules(spec)
    if problems:
        raise SpecError(source, problems)
    return spec


def _describe(err: Any) -> tuple[str, str]:
    field = ".".join(str(p) for p in err["loc"]) or "(top)"
    kind = err["type"]
    if kind == "extra_forbidden":
        return field, "unknown key; remove it or check its spelling (keys are camelCase)"
    if kind == "missing":
        return field, "required field is missing"
    if kind == "literal_error" and field == "apiVersion":
        return field, f"must be '{API_VERSION}'"
    return field, err["msg"]


def check_rules(spec: ClusterSpec) -> list[tuple[str, str]]:
    """Cross-field rules. Returns every problem found (field, message)."""
    problems: list[tuple[str, str]] = []
    if not _HOSTNAME.match(spec.name):
        problems.append(("metadata.name", "must be a lowercase DNS label (a-z, 0-9, '-')"))
    problems += _check_nodes(spec.nodes)
    names = {n.name for n in spec.nodes}
    sw, consul = spec.spec.swarm, spec.spec.consul
    problems += _check_members("spec.swarm.managers", sw.managers, names, MAX_MANAGERS)
    problems += _check_members("spec.consul.servers", consul.servers, names, None)
    if sw.master not in sw.managers:
        problems.append(
            (
                "spec.swarm.master",
                f"'{sw.master}' is not in spec.swarm.managers; the master must be a manager",
            )
        )
    for i, node in enumerate(spec.nodes):
        if node.name in sw.managers and node.swarm_role == "worker":
            problems.append(
                (
                    f"spec.nodes.{i}.swarmRole",
                    f"'{node.name}' is in spec.swarm.managers; remove swarmRole or the listing",
                )
            )
    if sw.docker_api_port == PLAIN_DOCKER_PORT:
        problems.append(
            (
                "spec.swarm.dockerApiPort",
                "2375 is Docker's plain-text port; metalctl only serves the API over "
                "mutual TLS (use 2376)",
            )
        )
    return problems


def _check_nodes(nodes: list[Node]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    seen_names: dict[str, int] = {}
    seen_addrs: dict[str, int] = {}
    for i, node in enumerate(nodes):
        field = f"spec.nodes.{i}"
        if not _HOSTNAME.match(node.name):
            problems.append(
                (
                    f"{field}.name",
                    f"'{node.name}' is not a valid hostname (lowercase a-z, 0-9, '-')",
                )
            )
        if node.name in seen_names:
            problems.append(
                (
                    f"{field}.name",
                    f"duplicate node name '{node.name}' (also spec.nodes.{seen_names[node.name]})",
                )
            )
        seen_names.setdefault(node.name, i)
        addr = _normalise_address(node.address)
        if addr is None:
            problems.append(
                (f"{field}.address", f"'{node.address}' is not an IP address or hostname")
            )
        elif addr in seen_addrs:
            problems.append(
                (
                    f"{field}.address",
                    f"duplicate address '{node.address}' (also spec.nodes.{seen_addrs[addr]})",
                )
            )
        else:
            seen_addrs[addr] = i
    return problems


def _check_members(
    field: str, members: list[str], names: set[str], maximum: int | None
) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    count = len(members)
    if count == 0 or count % 2 == 0:
        problems.append(
            (field, f"needs an odd number of nodes for a quorum (1, 3, 5, 7), got {count}")
        )
    if maximum is not None and count > maximum:
        problems.append((field, f"at most {maximum} are supported, got {count}"))
    if len(set(members)) != count:
        problems.append((field, "lists a node more than once"))
    unknown = [m for m in members if m not in names]
    if unknown:
        problems.append((field, f"names nodes not in spec.nodes: {', '.join(unknown)}"))
    return problems


def _normalise_address(address: str) -> str | None:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        pass
    if _HOSTNAME.match(address.split(".")[0]) and all(
        _HOSTNAME.match(part) for part in address.lower().split(".")
    ):
        return address.lower()
    return None
