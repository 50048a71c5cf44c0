"""The PXE provisioner: blank machines, discovered by the boot service, get an OS image
written by the discovery image's agent and boot it to ready state.

    provision: for each node, its machine (spec mac:/serial:/uuid:) and disk (rootDevice
    hint) -> a deployment (job + cloud-init seed) -> the machine PXE-boots (power on or
    cycle; without power control the operator does it) -> the agent writes and verifies
    the image -> provisioned -> SSH with metalctl's key answers with the node's hostname.

The boot service (``metalctl boot serve``) must be running on the provisioning network.
``vmlab.py`` is this provisioner with power control over QEMU's QMP.
"""

from __future__ import annotations

import functools
import os
import secrets
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from metalctl import deployments, lifecycle
from metalctl.deployments import Deployment, DeploymentJob, ImageRef
from metalctl.errors import ConflictError, MetalctlError, ProvisionError, WaitTimeout
from metalctl.provisioners import pxe_plan
from metalctl.provisioners.base import Capabilities, PowerAction, Provisioner, Say, ssh_banner
from metalctl.spec import ClusterSpec, Node
from metalctl.sshkeys import public_key, ssh_argv
from metalctl.store import MACHINE_DISCOVERED, MACHINE_ENROLLED, Store
from metalctl.wait import wait_for

DEPLOY_TIMEOUT = 30 * 60.0
READY_TIMEOUT = 5 * 60.0
_POLL_SECONDS = 2.0
_SAY_EVERY = 10.0


class PxeProvisioner:
    name = "pxe"
    capabilities = Capabilities(creates_machines=False, power=False, installs_os=True)

    def enroll(
        self, store: Store, spec: ClusterSpec, reason: str, *, replace: bool = False
    ) -> None:
        lifecycle.register_cluster(
            store, spec, initial_state=lifecycle.DISCOVERED, reason=reason, replace=replace
        )
        machines = store.list_machines()
        for node in spec.nodes:
            try:
                machine = pxe_plan.machine_for(node, spec.name, machines)
            except ConflictError:
                continue  # not discovered yet: provision says so
            if machine.state == MACHINE_DISCOVERED:
                store.set_machine_state(
                    machine.id, MACHINE_ENROLLED, reason, cluster=spec.name, node=node.name
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
        """Deploy the named nodes at once; returns {node: why} for those that failed."""
        failed: dict[str, str] = {}
        started: dict[str, str] = {}  # node -> machine id
        installer = spec.spec.pxe.installer if spec.spec.pxe else None
        image = None if installer else _image_ref(spec)
        key = public_key()
        for name in names:
            node = spec.node(name)
            try:
                started[name] = self._start(store, spec, node, image, key, say)
            except MetalctlError as exc:
                failed[name] = exc.message
        finished = self._wait_deployments(store, spec, started, say, timeout or DEPLOY_TIMEOUT)
        for name, done in finished.items():
            if done.status != deployments.OK:
                failed[name] = f"image not written: {done.message}"
                continue
            try:
                self._wait_ready(spec.node(name), say)
            except MetalctlError as exc:
                failed[name] = exc.message
        return failed

    def _start(
        self,
        store: Store,
        spec: ClusterSpec,
        node: Node,
        image: ImageRef | None,
        key: str,
        say: Say,
    ) -> str:
        """Record the node's deployment and make its machine PXE-boot; returns the machine id."""
        machine = pxe_plan.machine_for(node, spec.name, store.list_machines())
        if image is None:
            job = pxe_plan.kickstart_job(spec, node, machine.primary_mac, key)
            reason = f"provision {node.name}: {spec.spec.pxe.installer.flavour} 9 by kickstart"  # type: ignore[union-attr]
        else:
            disk = pxe_plan.choose_disk(node.name, machine.facts, node.root_device, image.size)
            pxe = spec.spec.pxe
            seed = pxe_plan.seed(
                node,
                machine.id,
                machine.primary_mac,
                _network(spec),
                key,
                secrets.token_hex(4),
                pxe.apt_proxy if pxe else None,
            )
            job = DeploymentJob(node.name, disk.name, disk.size, disk.serial, image, seed)
            reason = f"provision {node.name}: {image.name} to {disk.name} ({disk.size >> 20} MiB)"
        deployments.start(store, machine.id, spec.name, job, reason)
        say(f"{node.name}: machine {machine.id} ({machine.primary_mac}), {reason}")
        self.boot_for_deploy(spec, node.name, machine.primary_mac, say)
        return machine.id

    def boot_for_deploy(self, spec: ClusterSpec, node: str, mac: str, say: Say) -> None:
        """Make the machine PXE-boot. Without power control a person does it."""
        say(f"{node}: power on or reboot machine {mac} now; it must PXE-boot")

    def _wait_deployments(
        self, store: Store, spec: ClusterSpec, ids: dict[str, str], say: Say, timeout: float
    ) -> dict[str, Deployment]:
        """Wait for the deployments of ``ids`` (node -> machine id) to finish."""
        if not ids:
            return {}
        names = list(ids)
        done: dict[str, Deployment] = {}
        last_said = 0.0

        def all_finished() -> bool:
            nonlocal last_said
            report = []
            for name, machine_id in ids.items():
                found = deployments.get(store, machine_id)
                if found is None:
                    raise ProvisionError(f"node {name}: its deployment disappeared")
                if found.finished and name not in done:
                    done[name] = found
                    say(f"{name}: {_describe(found)}")
                elif not found.finished:
                    report.append(f"{name}: {_describe(found)}")
            if report and time.monotonic() - last_said >= _SAY_EVERY:
                last_said = time.monotonic()
                for line in report:
                    say(line)
            return len(done) == len(ids)

        try:
            wait_for(
                all_finished,
                what="the agents of "
                + ", ".join(n for n in names if n not in done)
                + " to write their image",
                timeout=timeout,
                interval=_POLL_SECONDS,
                hint="is 'metalctl boot serve' running on the provisioning network? the "
                "machine's console shows its agent's steps",
            )
        except WaitTimeout as exc:
            for name in names:
                if name not in done:
                    done[name] = _timed_out(store, ids[name], exc.message)
        return done

    def _wait_ready(self, node: Node, say: Say) -> None:
        say(f"{node.name}: waiting for SSH on {node.address} (booting the installed OS)")
        wait_for(
            functools.partial(ssh_banner, node.address, node.ssh.port),
            what=f"node {node.name}: an SSH banner on {node.address}:{node.ssh.port}",
            timeout=READY_TIMEOUT,
            interval=2.0,
            hint="the node's console log shows how far its boot got",
        )
        name = wait_for(
            functools.partial(_ssh_hostname, node),
            what=f"node {node.name}: SSH login with metalctl's key and cloud-init done",
            timeout=300.0,
            interval=2.0,
        )
        if name != node.name:
            raise ProvisionError(f"node {node.name}: the installed OS calls itself '{name}'")
        say(f"{node.name}: ready (SSH with metalctl's key, hostname {name})")

    def add_machine(
        self, store: Store, spec: ClusterSpec, role: str, name: str | None, say: Say
    ) -> ClusterSpec:
        raise ConflictError(
            f"cluster {spec.name} uses provisioner '{self.name}', which cannot create machines",
            hint="add the machine to the spec's nodes (with its mac:), register it with -f, "
            "then 'metalctl provision' and 'metalctl nodes add --name NODE'",
        )

    def power(self, spec: ClusterSpec, node: str, action: PowerAction) -> None:
        raise ConflictError(
            f"cluster {spec.name} uses provisioner '{self.name}', which has no power control",
            hint="power the machine through its BMC or by hand",
        )

    def release(self, store: Store, spec: ClusterSpec, node: str) -> None:
        """The machine keeps its disk; a later provision overwrites it."""


def _image_ref(spec: ClusterSpec) -> ImageRef:
    from metalctl.images import catalog  # the image cache is read only when provisioning

    pxe = spec.spec.pxe
    record = catalog.resolve(pxe.image if pxe else "debian-12")
    path, compression, stored = catalog.image_path(record), record.compression, record.stored_size
    if compression == "zstd" and not (pxe and pxe.stream_compressed):
        path, compression, stored = _raw_copy(path, record.sha256), "none", record.size
    return ImageRef(
        name=record.name,
        sha256=record.sha256,
        size=record.size,
        path=str(path),
        compression=compression,
        stored_size=stored,
    )


def _raw_copy(zst: Path, sha256: str) -> Path:
    """The image decompressed once beside its .zst (sparse), for sending raw; the agent
    checks its sha256 as always."""
    raw = zst.with_name(f"{sha256}.raw")
    if raw.exists():
        return raw
    tmp = raw.with_name(f".{raw.name}.{os.getpid()}.tmp")
    try:
        subprocess.run(
            ["zstd", "-d", "-q", "-f", "--sparse", "-o", str(tmp), str(zst)],
            check=True,
            capture_output=True,
            timeout=600,
        )
        os.replace(tmp, raw)
    except (OSError, subprocess.SubprocessError) as exc:
        tmp.unlink(missing_ok=True)
        raise ProvisionError(f"cannot decompress {zst} for serving: {exc}") from exc
    return raw


def _network(spec: ClusterSpec) -> str:
    if spec.spec.pxe is None:  # the spec's rules require it for this provisioner
        raise ConflictError(f"cluster {spec.name} has no pxe: section")
    return spec.spec.pxe.network


def _describe(found: Deployment) -> str:
    image = found.job.image
    seconds = (found.finished_at or found.updated_at) - found.created_at
    if found.status == deployments.OK and image is None:
        return f"installed by kickstart ({seconds:.0f} s)"
    if found.status == deployments.OK and image is not None:
        return f"image written and verified ({image.size >> 20} MiB, {seconds:.0f} s)"
    if found.status == deployments.FAILED:
        return f"deployment failed: {found.message}"
    stored = image.stored_size if image else 1
    if found.phase == "streaming" and found.bytes_sent:
        elapsed = max(time.time() - found.created_at, 0.001)
        rate = found.bytes_sent / elapsed / (1 << 20)
        share = 100 * found.bytes_sent / stored
        return f"streaming {found.bytes_sent >> 20}/{stored >> 20} MiB ({share:.0f}%, {rate:.1f} MiB/s)"
    return found.phase


def _timed_out(store: Store, machine_id: str, message: str) -> Deployment:
    return deployments.finish(store, machine_id, ok=False, message=message, result={})


# Ready means the first boot's work is done AND on disk: cloud-init writes root's key, the
# host keys and its own records in the first minute, and ext4 keeps new files in memory for
# up to 30 s; an operator who power-cycles a "ready" node must not get one whose sshd has
# empty host keys. An image without cloud-init skips the wait (the ';').
READY_COMMAND = "cloud-init status --wait >/dev/null 2>&1; sync; hostname"


def _ssh_hostname(node: Node) -> str | None:
    argv = ssh_argv(node.address, READY_COMMAND, user=node.ssh.user, port=node.ssh.port)
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=150, check=False)
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


PROVISIONER: Provisioner = PxeProvisioner()
