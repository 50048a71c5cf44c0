"""The Ironic provisioner: machines with BMCs, enrolled in OpenStack Ironic, which writes
their OS image and config drive (docs/ironic.md).

    provision, per node (at most --parallel at once, the rest queued):
      enroll (found by name; ports by MAC) -> validate the BMC interfaces -> manage
      (Ironic verifies the BMC credentials) -> [inspect] -> provide (cleaning) ->
      validate deploy -> deploy with the image and a config drive -> active -> SSH
      banner on the node's address: ready.

Each step starts from the node's current Ironic state, so a re-run resumes where a run
stopped (Ironic unreachable, Ctrl-C) and does nothing to a node already active. A failure
is Ironic's own words (last_error). Waits poll one small GET per node with backoff.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from metalctl import lifecycle
from metalctl.clients.ironic import (
    BMC_INTERFACES,
    IronicClient,
    IronicConflictError,
    IronicNode,
    IronicTarget,
    IronicUnreachableError,
)
from metalctl.errors import ConflictError, MetalctlError, ProvisionError, SpecError, WaitTimeout
from metalctl.provisioners.base import (
    Capabilities,
    PowerAction,
    ProvisionOptions,
    Say,
    TunableProvisioner,
    ssh_banner,
)
from metalctl.spec import Bmc, ClusterSpec, Image, Node
from metalctl.sshkeys import public_key
from metalctl.store import Store
from metalctl.wait import wait_for

STEP_TIMEOUT = 30 * 60.0  # one Ironic transition (a real deploy writes a whole disk)
READY_TIMEOUT = 10 * 60.0  # the deployed OS boots and answers SSH
POWER_TIMEOUT = 5 * 60.0
# Polls: first after 0.2 s (fake and quick transitions), then x1.5 up to 10 s.
_FIRST_POLL, _BACKOFF, _LONGEST_POLL = 0.2, 1.5, 10.0
# Ironic states that end a transition in failure (a wait stops on them at once).
FAILURE_STATES = frozenset(
    {"deploy failed", "clean failed", "inspect failed", "error", "adopt failed", "rescue failed"}
)
_UNREACHABLE = "Ironic unreachable"


@dataclass
class _Run:
    """What the workers of one provision share."""

    client: IronicClient
    spec: ClusterSpec
    options: ProvisionOptions
    step_timeout: float
    say: Say
    key: str = ""
    stop: threading.Event = field(default_factory=threading.Event)
    stop_reason: list[str] = field(default_factory=list)
    inspected: set[str] = field(default_factory=set)  # inspect once per run
    created: set[str] = field(default_factory=set)  # enrolled by this run (driver_info fresh)
    # Looked up once for the whole run (None: look each node up on its own).
    known: dict[str, IronicNode] | None = None
    ports: dict[str, set[str]] | None = None

    def abort(self) -> str | None:
        return self.stop_reason[0] if self.stop.is_set() else None

    def unreachable(self, exc: IronicUnreachableError) -> None:
        """Stop the queue: nodes not started fail at once, waits give up."""
        with _STOP_LOCK:
            if not self.stop.is_set():
                self.stop_reason.append(f"{_UNREACHABLE}: {exc.message}")
                self.stop.set()


_STOP_LOCK = threading.Lock()


class IronicProvisioner:
    name = "ironic"
    capabilities = Capabilities(
        creates_machines=False,
        power=True,
        installs_os=True,
        options=frozenset({"parallel", "inspect"}),
        ready_is_provisioned=True,
    )

    def enroll(
        self, store: Store, spec: ClusterSpec, reason: str, *, replace: bool = False
    ) -> None:
        """Nodes start 'discovered'; Ironic learns of them at provision (or power). A
        clouds.yaml cloud that cannot be used is refused before anything is stored."""
        client_for(spec).check_config()
        lifecycle.register_cluster(
            store, spec, initial_state=lifecycle.DISCOVERED, reason=reason, replace=replace
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
        return self.provision_with(
            store, spec, names, say, options=ProvisionOptions(), timeout=timeout
        )

    def provision_with(
        self,
        store: Store,
        spec: ClusterSpec,
        names: Sequence[str],
        say: Say,
        *,
        options: ProvisionOptions,
        timeout: float | None = None,
    ) -> dict[str, str]:
        """All named nodes through a queue of ``options.parallel`` workers; returns
        {node: why} for those that failed. Ironic unreachable stops the queue: nodes not
        started fail with that reason and a re-run resumes them."""
        run = _Run(client_for(spec), spec, options, timeout or STEP_TIMEOUT, say, public_key())
        if len(names) > 1:  # two list calls instead of two lookups per node
            run.known = {n.name: n for n in run.client.list_nodes()}
            run.ports = run.client.all_port_macs()
        failed: dict[str, str] = {}
        with concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, options.parallel), thread_name_prefix="ironic"
        ) as pool:
            futures = {pool.submit(_guarded, run, spec.node(name)): name for name in names}
            for future in concurrent.futures.as_completed(futures):
                why = future.result()
                if why is not None:
                    failed[futures[future]] = why
        return failed

    def add_machine(
        self, store: Store, spec: ClusterSpec, role: str, name: str | None, say: Say
    ) -> ClusterSpec:
        raise ConflictError(
            f"cluster {spec.name} uses provisioner 'ironic', which takes the machines its "
            "spec names",
            hint="add the node (macs:, bmc:) to the spec, register it with -f --replace, "
            "'metalctl provision', then 'metalctl nodes add --name NODE'",
        )

    def power(self, spec: ClusterSpec, node: str, action: PowerAction) -> None:
        """Power through Ironic; a node Ironic does not know yet is enrolled (and its BMC
        credentials verified) first."""
        client = client_for(spec)
        run = _Run(client, spec, ProvisionOptions(), POWER_TIMEOUT, _quiet)
        found = _enrolled(run, spec.node(node))
        if found.provision_state == "enroll":
            found = _verify_bmc(run, spec.node(node), found)
        target = {"on": "power on", "off": "power off", "cycle": "rebooting"}[action]
        client.set_power_state(found.uuid, target)
        want = "power off" if action == "off" else "power on"
        final = wait_for(
            functools.partial(_power_settled, client, found.uuid),
            what=f"node {node}: Ironic power state '{want}'",
            timeout=POWER_TIMEOUT,
            interval=_FIRST_POLL,
            backoff=_BACKOFF,
            max_interval=_LONGEST_POLL,
        )
        if final.power_state != want:
            why = final.last_error or f"power is '{final.power_state}'"
            raise ProvisionError(f"node {node}: {target} through Ironic failed: {why}")

    def release(self, store: Store, spec: ClusterSpec, node: str) -> None:
        """Undeploy the node in Ironic (Ironic cleans the disk when its cleaning is on),
        then make it manageable and retired: nothing deploys it again until a provision
        of metalctl does. A node Ironic does not know is already free."""
        run = _Run(client_for(spec), spec, ProvisionOptions(), STEP_TIMEOUT, _quiet)
        found = run.client.find_node(node)
        if found is None:
            return
        found = _settled(run, node, found)
        if found.provision_state in ("active", "deploy failed", "error"):
            found = _act(run, node, found, "deleted", "available", also=("manageable",))
        if found.provision_state == "available":
            found = _act(run, node, found, "manage", "manageable")
        if found.provision_state == "manageable" and not found.retired:
            run.client.update_node(found.uuid, retired=True, retired_reason="metalctl release")


def client_for(spec: ClusterSpec) -> IronicClient:
    ironic = spec.spec.ironic
    if ironic is None:  # the spec's rules require it for this provisioner
        raise SpecError(f"cluster {spec.name}", [("spec.ironic", "missing")])
    return IronicClient(IronicTarget(endpoint=ironic.endpoint, cloud=ironic.cloud))


def _quiet(_: str) -> None:
    """Progress nobody reads (power, release)."""


# -- one node's way to ready -------------------------------------------------------------


def _guarded(run: _Run, node: Node) -> str | None:
    """Run one node's steps; its failure as a message (None: ready)."""
    reason = run.abort()
    if reason:
        return f"not started: {reason}"
    try:
        _bring_up(run, node)
    except IronicUnreachableError as exc:
        run.unreachable(exc)
        run.say(f"{node.name}: {exc.message}")
        return exc.message
    except MetalctlError as exc:
        run.say(f"{node.name}: failed: {exc.message}")
        return exc.message
    return None


def _bring_up(run: _Run, node: Node) -> None:
    found = _enrolled(run, node)
    if found.maintenance:
        raise IronicConflictError(
            f"node {node.name} is in maintenance in Ironic: {found.maintenance_reason or '-'}",
            hint=f"clear it (baremetal node maintenance unset {node.name}) and re-run",
        )
    for _ in range(12):  # each pass takes one step; a full way has at most 6
        found = _settled(run, node.name, found)
        if found.provision_state == "active":
            break
        if found.provision_state in FAILURE_STATES:
            # Only a state found before this run's first step: a step of this run that
            # ends in failure raises in _act.
            run.say(f"{node.name}: resuming from Ironic state '{found.provision_state}'")
        found = _step(run, node, found)
    else:
        raise ProvisionError(
            f"node {node.name}: Ironic state '{found.provision_state}' after every step"
        )
    _wait_ssh(run, node)


def _step(run: _Run, node: Node, found: IronicNode) -> IronicNode:
    """The one action that takes a node from its stable Ironic state towards active."""
    state = found.provision_state
    if state == "enroll":
        return _verify_bmc(run, node, found)
    if state == "manageable":
        if found.retired:
            run.client.update_node(found.uuid, retired=False)
        if run.options.inspect and found.uuid not in run.inspected:
            run.inspected.add(found.uuid)
            return _act(run, node.name, found, "inspect", "manageable")
        return _act(run, node.name, found, "provide", "available")
    if state in ("available", "deploy failed"):
        return _deploy(run, node, found)
    if state in ("clean failed", "inspect failed"):
        return _act(run, node.name, found, "manage", "manageable")
    if state == "error":
        return _act(run, node.name, found, "deleted", "available", also=("manageable",))
    raise IronicConflictError(
        f"node {node.name} is in Ironic state '{state}', which metalctl does not provision from",
        hint="bring it to manageable or available with the baremetal CLI, then re-run",
    )


def _enrolled(run: _Run, node: Node) -> IronicNode:
    """The node in Ironic (found by name, else created) with a port per MAC."""
    if run.known is not None and run.ports is not None:
        found = run.known.get(node.name)
        macs = run.ports.get(found.uuid, set()) if found else set()
    else:
        found = run.client.find_node(node.name)
        macs = run.client.port_macs(found.uuid) if found else set()
    if found is None:
        bmc = _bmc(run.spec, node)
        found = run.client.create_node(
            node.name,
            bmc.driver,
            _driver_info(node, bmc),
            {str(k): v for k, v in bmc.interfaces.items()},
        )
        run.created.add(found.uuid)
        run.say(f"{node.name}: enrolled in Ironic ({found.uuid}, {bmc.driver})")
    missing = sorted(set(node.macs or ()) - macs)
    for mac in missing:
        run.client.create_port(found.uuid, mac)
    return found


def _verify_bmc(run: _Run, node: Node, found: IronicNode) -> IronicNode:
    """Current credentials to Ironic, its validation of the BMC interfaces, then manage:
    Ironic talks to the BMC (power state). A failure names node, BMC and Ironic's words."""
    bmc = _bmc(run.spec, node)
    if found.uuid not in run.created:  # the password file may have changed since
        run.client.update_node(found.uuid, driver_info=_driver_info(node, bmc))
    where = f"BMC {bmc.driver} {bmc.address or '(fake)'}"
    bad = run.client.validate(found.uuid, BMC_INTERFACES)
    if bad:
        words = "; ".join(f"{k}: {v}" for k, v in sorted(bad.items()))
        raise ProvisionError(
            f"node {node.name}: Ironic's validation of {where} failed: {words}",
            hint=f"check spec bmc: of {node.name} (address, username, password file)",
        )
    done = _act(run, node.name, found, "manage", "manageable", fail_to="enroll")
    if done.provision_state != "manageable":
        raise ProvisionError(
            f"node {node.name}: Ironic could not use {where}: {done.last_error or done.provision_state}",
            hint=f"check the BMC's address and credentials (spec bmc: of {node.name}), then re-run",
        )
    return done


def _deploy(run: _Run, node: Node, found: IronicNode) -> IronicNode:
    image = _image(run.spec, node)
    run.client.update_node(found.uuid, instance_info=_instance_info(image))
    bad = run.client.validate(found.uuid, ("boot", "deploy"))
    if bad:
        words = "; ".join(f"{k}: {v}" for k, v in sorted(bad.items()))
        raise ProvisionError(f"node {node.name}: Ironic's validation for deploy failed: {words}")
    return _act(
        run,
        node.name,
        found,
        "active",
        "active",
        config_drive=config_drive(node, found.uuid, run.key),
    )


def _act(
    run: _Run,
    name: str,
    found: IronicNode,
    verb: str,
    goal: str,
    *,
    config_drive: dict[str, Any] | None = None,
    fail_to: str | None = None,
    also: tuple[str, ...] = (),
) -> IronicNode:
    """Start ``verb`` and wait until the node settles; a settled state other than ``goal``
    (or ``also``) is a failure with Ironic's last_error, unless it is ``fail_to`` (the
    caller explains it)."""
    run.say(f"{name}: {found.provision_state} -> {verb}")
    run.client.set_provision_state(found.uuid, verb, config_drive=config_drive)
    done = _settled(run, name, found, started=True)
    if done.provision_state in (goal, *also) or done.provision_state == fail_to:
        return done
    raise ProvisionError(
        f"node {name}: '{verb}' ended in Ironic state '{done.provision_state}': "
        f"{done.last_error or 'no error recorded'}"
    )


def _settled(run: _Run, name: str, found: IronicNode, *, started: bool = False) -> IronicNode:
    """Wait until Ironic has no transition under way for the node (with backoff)."""
    if not started and found.target_provision_state is None:
        return found
    seen = [found.provision_state]
    lost: list[IronicUnreachableError] = []

    def probe() -> IronicNode | None:
        try:
            now = run.client.node_state(found.uuid)
        except IronicUnreachableError as exc:
            lost.append(exc)
            run.unreachable(exc)
            raise
        if now.provision_state != seen[-1]:
            seen.append(now.provision_state)
            run.say(f"{name}: {now.provision_state}")
        if now.target_provision_state is None or now.provision_state in FAILURE_STATES:
            return now
        return None

    try:
        return wait_for(
            probe,
            what=f"node {name}: Ironic to finish '{found.target_provision_state or 'its action'}' (now '{seen[-1]}')",
            timeout=run.step_timeout,
            interval=_FIRST_POLL,
            backoff=_BACKOFF,
            max_interval=_LONGEST_POLL,
            abort=run.abort,
            hint="re-run provision to keep waiting: nodes resume from their Ironic state",
        )
    except WaitTimeout:
        if lost:
            raise lost[-1] from None
        raise


def _wait_ssh(run: _Run, node: Node) -> None:
    run.say(f"{node.name}: active; waiting for SSH on {node.address}:{node.ssh.port}")
    wait_for(
        functools.partial(ssh_banner, node.address, node.ssh.port),
        what=f"node {node.name}: an SSH banner on {node.address}:{node.ssh.port}",
        timeout=READY_TIMEOUT,
        interval=1.0,
        backoff=_BACKOFF,
        max_interval=_LONGEST_POLL,
        abort=run.abort,
        hint="the node's console shows how far its boot got (Ironic: baremetal node console)",
    )
    run.say(f"{node.name}: ready (SSH answers)")


def _power_settled(client: IronicClient, uuid: str) -> IronicNode | None:
    now = client.node_state(uuid)
    return now if now.target_power_state is None else None


# -- what Ironic is given ---------------------------------------------------------------


def _bmc(spec: ClusterSpec, node: Node) -> Bmc:
    if node.bmc is None:  # the spec's rules require it
        raise SpecError(f"cluster {spec.name}", [(f"node {node.name}: bmc", "missing")])
    return node.bmc


def _image(spec: ClusterSpec, node: Node) -> Image:
    image = node.image or spec.spec.image
    if image is None:  # the spec's rules require one
        raise SpecError(f"cluster {spec.name}", [(f"node {node.name}: image", "missing")])
    return image


def _driver_info(node: Node, bmc: Bmc) -> dict[str, Any]:
    """Ironic's driver_info for the BMC. The password is read here, sent to Ironic (which
    keeps it and shows '******'), and never stored or logged by metalctl."""
    if bmc.driver == "fake-hardware":
        return {}
    password = bmc_password(node.name, bmc)
    if bmc.driver == "redfish":
        info: dict[str, Any] = {
            "redfish_address": bmc.address,
            "redfish_username": bmc.username,
            "redfish_password": password,
            "redfish_verify_ca": bmc.verify_ca,
        }
        if bmc.system_id:
            info["redfish_system_id"] = bmc.system_id
        return info
    host, _, port = (bmc.address or "").partition(":")
    info = {"ipmi_address": host, "ipmi_username": bmc.username, "ipmi_password": password}
    if port:
        info["ipmi_port"] = int(port)
    return info


def bmc_password(node: str, bmc: Bmc) -> str:
    """From the environment variable or the 0600 file the spec names."""
    if bmc.password_env:
        value = os.environ.get(bmc.password_env)
        if not value:
            raise ProvisionError(
                f"node {node}: the BMC password variable {bmc.password_env} is not set"
            )
        return value
    path = bmc.password_file or ""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise ProvisionError(
            f"node {node}: cannot read the BMC password file {path}: {exc.strerror}"
        ) from exc
    with open(fd, encoding="utf-8") as f:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode) or mode & 0o077:
            raise ProvisionError(
                f"node {node}: the BMC password file {path} must be a regular file only its "
                f"owner can read (mode {stat.S_IMODE(mode):04o})",
                hint=f"chmod 600 {path}",
            )
        value = f.read(4096).strip()
    if not value:
        raise ProvisionError(f"node {node}: the BMC password file {path} is empty")
    return value


def _instance_info(image: Image) -> dict[str, Any]:
    return {
        "image_source": image.url,
        "image_os_hash_algo": "sha256",
        "image_os_hash_value": image.sha256,
        "image_checksum": image.sha256,
    }


def config_drive(node: Node, uuid: str, key: str) -> dict[str, Any]:
    """The config drive Ironic builds and writes (OpenStack format): hostname, metalctl's
    SSH key, and user data that lets metalctl log in as the node's SSH user."""
    key = key.strip()
    user_data = [
        "#cloud-config",
        f"hostname: {node.name}",
        "manage_etc_hosts: true",
        "disable_root: false",
        "ssh_authorized_keys:",
        f"  - {key}",
    ]
    if node.ssh.user != "root":
        user_data += [
            "users:",
            "  - default",
            f"  - name: {node.ssh.user}",
            "    sudo: ALL=(ALL) NOPASSWD:ALL",
            "    shell: /bin/bash",
            "    ssh_authorized_keys:",
            f"      - {key}",
        ]
    return {
        "meta_data": {
            "uuid": uuid,
            "name": node.name,
            "hostname": node.name,
            "public_keys": {"metalctl": key},
        },
        "user_data": "\n".join(user_data) + "\n",
    }


PROVISIONER: TunableProvisioner = IronicProvisioner()
