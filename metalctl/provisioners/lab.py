"""The lab provisioner: containers that behave like freshly installed machines.

Each node is a container from the offline-built image (systemd as PID 1, sshd with
metalctl's key, its own /var/lib/docker volume so the docker role can run a nested
dockerd) on a dedicated bridge network with fixed addresses, so a stopped and
restarted node comes back at the same address. Everything made is labelled
``metalctl.lab=NAME`` so that ``lab down`` finds and removes all of it.
"""

from __future__ import annotations

import contextlib
import functools
import io
import ipaddress
import shutil
import socket
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import yaml

from metalctl import lifecycle
from metalctl.errors import (
    ConflictError,
    NotFoundError,
    ProvisionError,
    SpecError,
    UsageError,
)
from metalctl.paths import ClusterPaths, metalctl_home, write_public
from metalctl.provisioners import lab_cache, lab_image
from metalctl.provisioners.base import Capabilities, PowerAction, Provisioner, Say, ssh_banner
from metalctl.provisioners.lab_engine import engine_client
from metalctl.spec import API_VERSION, ClusterSpec, Node, parse_spec
from metalctl.sshkeys import public_key
from metalctl.store import Store
from metalctl.wait import wait_for

LABEL = "metalctl.lab"
# Which metalctl home made a lab object: two homes (a CI run next to a demo) may use the
# same lab name on one Docker, and must never adopt or remove each other's containers.
HOME_LABEL = "metalctl.home"
# On the lab's network: how its nodes were made, so that 'nodes add' makes the same kind.
OFFLINE_LABEL = "metalctl.offline"  # "1": an internal network, no route out
PRELOAD_LABEL = "metalctl.preload"  # "WORKLOAD:pkg,pkg": the image's preloaded packages
CACHE_LABEL = "metalctl.package-cache"  # "1": apt goes through the admin host's cache
FIRST_HOST = 11  # node i gets .(10+i); .1 is the bridge, i.e. the admin host
SUBNET_POOL = ipaddress.IPv4Network("172.30.0.0/16")
SSH_WAIT_SECONDS = 120.0

# Used when --privileged is refused (hosts whose bounding set lacks CAP_SYS_RESOURCE).
_UNPRIVILEGED: dict[str, Any] = {
    "cap_add": ["ALL"],
    "cap_drop": ["SYS_RESOURCE"],
    "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
    "device_cgroup_rules": ["a *:* rwm"],
}

Progress = Callable[[str], None]
SpecCheck = Callable[[ClusterSpec], None]


@dataclass(frozen=True)
class LabNode:
    name: str
    address: str
    container: str
    state: str


@dataclass(frozen=True)
class LabStatus:
    name: str
    network: str | None
    subnet: str | None
    nodes: list[LabNode]


def docker_client() -> docker.DockerClient:
    return engine_client()


@contextlib.contextmanager
def _docker_refusals(what: str) -> Iterator[None]:
    """A Docker API refusal (e.g. a container being removed by a concurrent 'lab down')
    becomes an error that says what was being done, not a traceback."""
    try:
        yield
    except docker.errors.APIError as exc:
        raise ProvisionError(
            f"Docker refused a step of {what}: {exc.explanation or exc}",
            hint="re-run the command: it completes what is half made",
        ) from exc


def _node_address(subnet: str, index: int) -> str:
    """Node *index* (1-based) is .10+index in the lab's /24: fixed, so a restarted node
    keeps its address."""
    return str(ipaddress.ip_network(subnet).network_address + FIRST_HOST - 1 + index)


def _home() -> str:
    return str(metalctl_home().resolve())


def _labels(lab: str, **extra: str) -> dict[str, str]:
    return {LABEL: lab, HOME_LABEL: _home(), **extra}


def _other_home(labels: dict[str, str] | None) -> str | None:
    """The other metalctl home that owns an object, or None when it is ours (objects
    made before the home label existed count as ours)."""
    owner = (labels or {}).get(HOME_LABEL)
    return owner if owner and owner != _home() else None


def _not_ours(lab: str, owner: str) -> ConflictError:
    return ConflictError(
        f"a lab named '{lab}' exists in Docker and belongs to another metalctl home ({owner})",
        hint=f"use another --name, or remove it from there: "
        f"METALCTL_HOME={owner} metalctl lab down --name {lab}",
    )


def network_name(lab: str) -> str:
    return f"metalctl-lab-{lab}"


def lab_up(
    store: Store,
    name: str,
    nodes: int,
    managers: int,
    consul_servers: int | None = None,
    progress: Progress | None = None,
    ssh_timeout: float = SSH_WAIT_SECONDS,
    check: SpecCheck | None = None,
    shape: LabShape | None = None,
) -> ClusterSpec:
    """Create (or complete) a lab and record its nodes as ready. Re-running is harmless.

    ``check`` is the workload's constraint check (quorum sizes), run on the lab's spec
    before anything is made; its errors speak in the flags the user typed. ``shape``:
    a preloaded image, a network with no route out.
    """
    say = progress or (lambda _m: None)
    shape = shape or LabShape()
    lab_spec(name, nodes, managers, consul_servers, "172.30.0.0/24", check)  # flags first
    _refuse_other_shapes(store, name, nodes)
    client = docker_client()
    if shape.package_cache:  # in use by another lab: refused before anything is made
        lab_cache.refuse_if_taken(_network_id(client, name))
    image = lab_image.ensure_image(progress=say, preload=shape.preload)
    with _docker_refusals(f"lab up {name}"):
        subnet, network_id = _ensure_network(client, name, shape)
        proxy = _ensure_cache(name, network_id, subnet, shape, say)
        spec = lab_spec(name, nodes, managers, consul_servers, subnet, check, apt_proxy=proxy)
        _start_nodes(client, name, spec.nodes, image, say, ssh_timeout)
    paths = ClusterPaths.for_cluster(name)
    paths.root.mkdir(parents=True, exist_ok=True)
    # A new lab has new host keys: forget those of an earlier lab at the same addresses.
    paths.known_hosts.unlink(missing_ok=True)
    lifecycle.register_cluster(
        store, spec, initial_state=lifecycle.READY, reason="lab node created"
    )
    write_public(paths.spec, spec.to_yaml())
    return spec


def lab_add_node(
    store: Store,
    spec: ClusterSpec,
    role: str,
    name: str | None = None,
    progress: Progress | None = None,
    ssh_timeout: float = SSH_WAIT_SECONDS,
) -> ClusterSpec:
    """Start one more node container (next free index, never reused) and record it as
    ready; returns the cluster spec that includes it."""
    say = progress or (lambda _m: None)
    client = docker_client()
    shape = _network_shape(client, spec.name)
    image = lab_image.ensure_image(progress=say, preload=shape.preload)
    subnet, network_id = _ensure_network(client, spec.name, shape)
    _ensure_cache(spec.name, network_id, subnet, shape, say)  # gone after a reboot, say
    known = {n.name for n in store.list_nodes(spec.name)} | {n.name for n in spec.nodes}
    if name is not None and name in known:
        raise ConflictError(
            f"cluster {spec.name} already has a node named '{name}' (retired ones included)",
            hint="choose another --name, or leave it out for the next free one",
        )
    index = max(_node_index(n) for n in known) + 1
    address = _node_address(subnet, index)
    node = Node.model_validate(
        {
            "name": name or f"{spec.name}-{index}",
            "address": address,
            "labels": {"lab": spec.name},
            "swarmRole": role,
        }
    )
    new_spec = spec.with_node(node)  # validated like any spec (duplicates, names)
    with _docker_refusals(f"adding {node.name} to lab {spec.name}"):
        _start_nodes(client, spec.name, [node], image, say, ssh_timeout)
    lifecycle.register_cluster(
        store, new_spec, initial_state=lifecycle.READY, reason="lab node added", replace=True
    )
    write_public(ClusterPaths.for_cluster(spec.name).spec, new_spec.to_yaml())
    return new_spec


def lab_remove_node(cluster: str, node: str) -> None:
    """Remove a retired node's container and its Docker volume."""
    client = docker_client()
    try:
        container = client.containers.get(node)
    except docker.errors.NotFound:
        return
    if container.labels.get(LABEL) != cluster or _other_home(container.labels):
        raise ConflictError(f"container '{node}' is not part of lab '{cluster}'; left alone")
    container.remove(force=True, v=True)
    with contextlib.suppress(docker.errors.NotFound):
        client.volumes.get(f"{node}-docker").remove(force=True)


def _start_nodes(
    client: docker.DockerClient,
    lab: str,
    nodes: list[Node],
    image: str,
    say: Progress,
    ssh_timeout: float,
) -> None:
    key = public_key()
    flags = _runtime_flags(client, image)
    for node in nodes:
        say(f"starting node {node.name} at {node.address}")
        _ensure_container(client, lab, node.name, node.address, image, flags)
    for node in nodes:
        container = client.containers.get(node.name)
        _install_key(container, key)
        wait_for(
            functools.partial(ssh_banner, node.address),
            what=f"node {node.name}: sshd answering on {node.address}:22",
            timeout=ssh_timeout,
            interval=0.5,
            abort=functools.partial(_exited, container),
        )


def lab_spec(
    name: str,
    nodes: int,
    managers: int,
    consul_servers: int | None,
    subnet: str,
    check: SpecCheck | None = None,
    apt_proxy: str | None = None,
) -> ClusterSpec:
    """The cluster spec of a lab: node i is NAME-i at .(10+i) of the lab subnet;
    ``apt_proxy``: the lab's package cache, which the nodes' apt then uses."""
    if not 1 <= nodes <= 200:
        raise UsageError(f"--nodes must be between 1 and 200, got {nodes}")
    if managers > nodes:
        raise UsageError(f"--managers {managers} is more than --nodes {nodes}")
    servers = consul_servers if consul_servers is not None else min(managers, 3)
    if servers > nodes:
        raise UsageError(f"--consul-servers {servers} is more than --nodes {nodes}")
    names = [f"{name}-{i}" for i in range(1, nodes + 1)]
    body = {
        "apiVersion": API_VERSION,
        "kind": "Cluster",
        "metadata": {"name": name},
        "spec": {
            "provisioner": "lab",
            "nodes": [
                {"name": n, "address": _node_address(subnet, i), "labels": {"lab": name}}
                for i, n in enumerate(names, start=1)
            ],
            "swarm": {"master": names[0], "managers": names[:managers]},
            "consul": {"servers": names[:servers]},
            **({"packages": {"aptProxy": apt_proxy}} if apt_proxy else {}),
        },
    }
    try:
        spec = parse_spec(yaml.safe_dump(body), source=f"for lab '{name}'")
        if check:
            check(spec)
        return spec
    except SpecError as exc:
        # Speak in the flags the user typed, not in spec fields.
        flags = {
            "spec.swarm.managers": "--managers",
            "spec.consul.servers": "--consul-servers",
            "metadata.name": "--name",
        }
        text = "; ".join(f"{flags.get(f, f)}: {m}" for f, m in exc.problems)
        raise UsageError(text) from exc


def _refuse_non_lab(store: Store, name: str) -> None:
    if name not in {c.name for c in store.list_clusters()}:
        return
    provisioner = store.get_cluster(name).provisioner
    if provisioner != "lab":
        raise ConflictError(
            f"cluster '{name}' is not a lab (provisioner '{provisioner}'); 'lab down' removes "
            "only labs, and leaves its nodes, PKI and secrets alone",
            hint=f"its state is in {ClusterPaths.for_cluster(name).root}; to retire its "
            "nodes use 'metalctl nodes remove'",
        )


def _refuse_other_shapes(store: Store, name: str, nodes: int) -> None:
    if name not in {c.name for c in store.list_clusters()}:
        return
    record = store.get_cluster(name)
    if record.provisioner != "lab":
        raise ConflictError(
            f"cluster '{name}' exists and is not a lab", hint="choose another --name"
        )
    have = len(store.list_nodes(name))
    if have != nodes:
        raise ConflictError(
            f"lab '{name}' exists with {have} nodes, not {nodes}",
            hint=f"'metalctl lab down --name {name}' first, or use another --name",
        )


def lab_status(store: Store, name: str) -> LabStatus:
    client = docker_client()
    states = {n.name: n.state for n in store.list_nodes(name)}
    containers = client.containers.list(all=True, filters={"label": f"{LABEL}={name}"})
    containers = [c for c in containers if not _other_home(c.labels)]
    if not containers and name not in states:
        raise NotFoundError(
            f"no lab named '{name}'", hint="'metalctl lab up --name NAME' makes one"
        )
    nodes = []
    for c in sorted(containers, key=lambda c: _node_index(c.name)):
        nets = c.attrs["NetworkSettings"]["Networks"]
        addr = nets.get(network_name(name), {}).get("IPAddress") or c.labels.get(
            "metalctl.address", ""
        )
        nodes.append(LabNode(c.name, addr, c.status, states.get(c.name, "unknown")))
    subnet = None
    try:
        net = client.networks.get(network_name(name))
        subnet = net.attrs["IPAM"]["Config"][0]["Subnet"]
    except docker.errors.NotFound:
        net = None
    return LabStatus(name, net.name if net else None, subnet, nodes)


@dataclass(frozen=True)
class LabDown:
    removed: list[str]
    left_alone: list[str]  # same lab name, made by another metalctl home


def lab_down(store: Store, name: str, progress: Progress | None = None) -> LabDown:
    """Remove every container, volume and network of the lab, then forget the cluster.

    A cluster of that name that is not a lab (a rack registered with -f) is refused: its
    state folder holds the CA, the Consul management token and the gossip key.
    """
    say = progress or (lambda _m: None)
    _refuse_non_lab(store, name)
    client = docker_client()
    removed: list[str] = []
    others: list[str] = []
    selector = {"label": f"{LABEL}={name}"}
    for c in client.containers.list(all=True, filters=selector):
        owner = _other_home(c.labels)
        if owner:
            others.append(f"container {c.name} (of {owner})")
            continue
        say(f"removing container {c.name}")
        c.remove(force=True, v=True)
        removed.append(f"container {c.name}")
    for v in client.volumes.list(filters=selector):
        if not _other_home(v.attrs.get("Labels")):
            v.remove(force=True)
            removed.append(f"volume {v.name}")
    for n in client.networks.list(filters=selector):
        if not _other_home(n.attrs.get("Labels")):
            if lab_cache.stop(n.id):
                say(f"stopped the package cache on {n.name}")
                removed.append(f"package cache of {n.name}")
            n.remove()
            removed.append(f"network {n.name}")
    if name in {c.name for c in store.list_clusters()}:
        lifecycle.forget_cluster(store, name, reason="lab down")
        removed.append(f"cluster {name} (store)")
    paths = ClusterPaths.for_cluster(name)
    if paths.root.exists():
        _remove_state(paths.root)
        removed.append(f"state {paths.root}")
    return LabDown(removed, others)


def _remove_state(root: Path) -> None:
    """Delete a lab's state folder, and nothing else: the folder must be a direct child of
    $METALCTL_HOME/clusters. Names are validated long before this (ClusterPaths), but an
    rmtree running as root is worth a second lock (an old 'lab down --name /' removed /etc)."""
    clusters = (metalctl_home() / "clusters").resolve()
    target = root.resolve()
    if target.parent != clusters or root.is_symlink():
        raise ConflictError(
            f"refusing to delete {root}: it is not a lab state folder under {clusters}"
        )
    shutil.rmtree(target)


# --- docker plumbing -------------------------------------------------------------------------


@dataclass(frozen=True)
class LabShape:
    """How a lab's nodes are made: ``lab up --preload WORKLOAD`` and ``--offline``."""

    preload: lab_image.Preload | None = None
    offline: bool = False
    package_cache: bool = False

    def labels(self) -> dict[str, str]:
        out = {OFFLINE_LABEL: "1" if self.offline else "0"}
        if self.package_cache:
            out[CACHE_LABEL] = "1"
        if self.preload:
            out[PRELOAD_LABEL] = f"{self.preload.workload}:{','.join(self.preload.packages)}"
        return out

    def describe(self) -> str:
        parts = [f"preloaded with {self.preload.workload}" if self.preload else "not preloaded"]
        parts.append("no route out" if self.offline else "NAT to the outside")
        if self.package_cache:
            parts.append("apt through the admin host's package cache")
        return ", ".join(parts)

    @classmethod
    def from_labels(cls, labels: dict[str, str]) -> LabShape:
        preload = None
        if labels.get(PRELOAD_LABEL):
            workload, _, packages = labels[PRELOAD_LABEL].partition(":")
            preload = lab_image.Preload(workload, tuple(p for p in packages.split(",") if p))
        return cls(preload, labels.get(OFFLINE_LABEL) == "1", labels.get(CACHE_LABEL) == "1")


def _network_shape(client: docker.DockerClient, lab: str) -> LabShape:
    try:
        net = client.networks.get(network_name(lab))
    except docker.errors.NotFound:
        return LabShape()
    return LabShape.from_labels(net.attrs.get("Labels") or {})


def _ensure_network(client: docker.DockerClient, lab: str, shape: LabShape) -> tuple[str, str]:
    """The lab network's subnet and Docker id, the network made if missing."""
    try:
        net = client.networks.get(network_name(lab))
    except docker.errors.NotFound:
        net = None
    if net is not None:
        labels = net.attrs.get("Labels") or {}
        owner = _other_home(labels)
        if owner:
            raise _not_ours(lab, owner)
        made = LabShape.from_labels(labels)
        if made != shape:
            raise ConflictError(
                f"lab {lab} exists, {made.describe()}; this asks for {shape.describe()}",
                hint=f"'metalctl lab down --name {lab}' first, or repeat the flags it was "
                "made with (--preload, --offline, --package-cache)",
            )
        return str(net.attrs["IPAM"]["Config"][0]["Subnet"]), str(net.id)
    subnet = free_subnet(client)
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=str(subnet))])
    created = client.networks.create(
        network_name(lab),
        driver="bridge",
        ipam=ipam,
        # internal: no masquerading, and Docker drops whatever would leave the subnet (the
        # nodes keep a default route to the bridge, which goes nowhere further); the host still
        # reaches them on the bridge's address.
        internal=shape.offline,
        labels=_labels(lab, **shape.labels()),
    )
    return str(subnet), str(created.id)


def _network_id(client: docker.DockerClient, lab: str) -> str | None:
    try:
        return str(client.networks.get(network_name(lab)).id)
    except docker.errors.NotFound:
        return None


def _ensure_cache(
    lab: str, network_id: str, subnet: str, shape: LabShape, say: Progress
) -> str | None:
    """The lab's package cache running on its bridge: the URL for the nodes' apt."""
    if not shape.package_cache:
        return None
    return lab_cache.ensure_running(lab, network_id, subnet, say)


def free_subnet(client: docker.DockerClient) -> ipaddress.IPv4Network:
    """First /24 of 172.30.0.0/16 that no Docker network and no host route uses."""
    used: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for net in client.networks.list():
        for cfg in (net.attrs.get("IPAM") or {}).get("Config") or []:
            if cfg.get("Subnet"):
                used.append(ipaddress.ip_network(cfg["Subnet"], strict=False))
    used += _host_routes()
    for candidate in SUBNET_POOL.subnets(new_prefix=24):
        if not any(candidate.overlaps(u) for u in used if u.version == 4):
            return candidate
    raise ProvisionError(
        "no free /24 left in 172.30.0.0/16 for a lab network",
        hint="remove old labs with 'metalctl lab down'",
    )


def _host_routes() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    routes = []
    try:
        with open("/proc/net/route") as fh:
            next(fh)
            for line in fh:
                fields = line.split()
                dest = socket.inet_ntoa(int(fields[1], 16).to_bytes(4, "little"))
                mask = socket.inet_ntoa(int(fields[7], 16).to_bytes(4, "little"))
                if dest != "0.0.0.0":
                    routes.append(ipaddress.ip_network(f"{dest}/{mask}", strict=False))
    except OSError:
        pass
    return routes


def _runtime_flags(client: docker.DockerClient, image: str) -> dict[str, Any]:
    """--privileged where the host allows it, else the explicit capability set."""
    probe = client.api.create_container(
        image,
        ["true"],
        host_config=client.api.create_host_config(privileged=True),
        labels={LABEL: "probe"},
    )
    try:
        client.api.start(probe["Id"])
        return {"privileged": True}
    except docker.errors.APIError as exc:
        if "caps" not in str(exc) and "operation not permitted" not in str(exc):
            raise ProvisionError(f"cannot start a test container: {exc}") from exc
        return dict(_UNPRIVILEGED)
    finally:
        client.api.remove_container(probe["Id"], force=True)


def _ensure_container(
    client: docker.DockerClient,
    lab: str,
    node: str,
    address: str,
    image: str,
    flags: dict[str, Any],
) -> None:
    try:
        container = client.containers.get(node)
    except docker.errors.NotFound:
        container = None
    if container is not None:
        if container.labels.get(LABEL) != lab:
            raise ConflictError(
                f"a container named '{node}' exists and is not part of lab '{lab}'",
                hint="remove it or choose another --name",
            )
        owner = _other_home(container.labels)
        if owner:
            raise _not_ours(lab, owner)
        if container.status != "running":
            container.start()
        return
    volume = f"{node}-docker"
    client.volumes.create(volume, labels=_labels(lab))
    endpoint = client.api.create_endpoint_config(ipv4_address=address)
    networking = client.api.create_networking_config({network_name(lab): endpoint})
    host_config = client.api.create_host_config(
        tmpfs={"/run": "", "/run/lock": ""},
        binds={
            "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
            volume: {"bind": "/var/lib/docker", "mode": "rw"},
        },
        network_mode=network_name(lab),
        restart_policy={"Name": "no"},
        **flags,
    )
    created = client.api.create_container(
        image,
        name=node,
        hostname=node,
        labels=_labels(lab, **{"metalctl.address": address}),
        stop_signal="SIGRTMIN+3",
        host_config=host_config,
        networking_config=networking,
        environment={"container": "docker"},
    )
    client.api.start(created["Id"])


def _install_key(container: Any, key: str) -> None:
    buf = io.BytesIO()
    data = key.encode()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("authorized_keys")
        info.size, info.mode = len(data), 0o600
        tar.addfile(info, io.BytesIO(data))
    container.exec_run(["mkdir", "-p", "-m", "700", "/root/.ssh"])
    if not container.put_archive("/root/.ssh", buf.getvalue()):
        raise ProvisionError(f"could not install metalctl's SSH key on {container.name}")


def _exited(container: Any) -> str | None:
    container.reload()
    if container.status in ("exited", "dead"):
        return f"container {container.name} is {container.status}"
    return None


def _node_index(name: str) -> int:
    tail = name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


# --- the provisioner interface ---------------------------------------------------------------


class LabProvisioner:
    name = "lab"
    capabilities = Capabilities(creates_machines=True, power=True, installs_os=False)

    def enroll(
        self, store: Store, spec: ClusterSpec, reason: str, *, replace: bool = False
    ) -> None:
        """A lab's machines are made by 'lab up'; a spec file may only re-register them."""
        if spec.name not in {c.name for c in store.list_clusters()}:
            raise ConflictError(
                f"cluster '{spec.name}' says provisioner 'lab', but no lab of that name exists",
                hint=f"make it with 'metalctl lab up --name {spec.name}'",
            )
        lifecycle.register_cluster(
            store, spec, initial_state=lifecycle.READY, reason=reason, replace=replace
        )

    def provision(
        self,
        store: Store,
        spec: ClusterSpec,
        names: Sequence[str],
        say: Say,
        *,
        timeout: float | None = None,
    ) -> dict[str, str]:
        """Lab machines have their OS from the image: start stopped ones, wait for SSH."""
        client = docker_client()
        with _docker_refusals(f"provisioning lab {spec.name}"):
            for name in names:
                container = _own_container(client, spec.name, name)
                if container.status != "running":
                    say(f"{name}: starting its container")
                    container.start()
                wait_for(
                    functools.partial(ssh_banner, spec.node(name).address),
                    what=f"node {name}: sshd answering on {spec.node(name).address}:22",
                    timeout=SSH_WAIT_SECONDS,
                    interval=0.5,
                    abort=functools.partial(_exited, container),
                )
        return {}

    def add_machine(
        self, store: Store, spec: ClusterSpec, role: str, name: str | None, say: Say
    ) -> ClusterSpec:
        return lab_add_node(store, spec, role, name, progress=say)

    def power(self, spec: ClusterSpec, node: str, action: PowerAction) -> None:
        client = docker_client()
        with _docker_refusals(f"power {action} of {node}"):
            container = _own_container(client, spec.name, node)
            if action == "off":
                container.stop(timeout=30)
            elif action == "on":
                container.start()
            else:
                container.restart(timeout=30)

    def release(self, store: Store, spec: ClusterSpec, node: str) -> None:
        lab_remove_node(spec.name, node)


def _own_container(client: docker.DockerClient, lab: str, node: str) -> Any:
    try:
        container = client.containers.get(node)
    except docker.errors.NotFound:
        raise NotFoundError(
            f"lab {lab} has no container for node {node}",
            hint=f"'metalctl lab status --name {lab}' shows what exists",
        ) from None
    if container.labels.get(LABEL) != lab or _other_home(container.labels):
        raise ConflictError(f"container '{node}' is not part of lab '{lab}'; left alone")
    return container


PROVISIONER: Provisioner = LabProvisioner()
