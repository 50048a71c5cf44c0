"""`metalctl lab up --vms K` / `lab down` of a VM lab: blank QEMU VMs that PXE-boot from
metalctl's own boot service on a bridge with no route out, like servers in a rack.

    up:   images (cached) -> bridge + taps -> boot service (dnsmasq DHCP/TFTP + HTTP, as a
          background `metalctl boot serve`) -> blank disks, VMs powered on -> every VM
          PXE-boots the discovery image and reports its facts -> discovered, powered off
          -> the cluster (provisioner vmlab) with one node per VM, enrolled.
    down: VMs, boot service, taps, bridge, runtime folder, machines, cluster: all gone.

Then `metalctl provision --cluster NAME` writes the OS image; `deploy swarm` goes on.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from metalctl import lifecycle, provisioners
from metalctl.errors import ConflictError, HostSetupError, ProvisionError
from metalctl.paths import ClusterPaths, metalctl_home
from metalctl.provisioners import vmlab_state, vmlab_vagrant
from metalctl.provisioners.vmlab_state import RUNTIME_ROOT, VmLab, VmRecord, vm_config
from metalctl.spec import ClusterSpec, parse_spec
from metalctl.store import Store
from metalctl.vmlab import libvirt, network, qemu
from metalctl.wait import wait_for

Say = Callable[[str], None]
SUBNET_POOL = ipaddress.IPv4Network("10.215.0.0/16")
BOOT_PORT = 8080
DISCOVERY_TIMEOUT = 600.0
_BOOT_SERVE_LOG = "boot-serve.log"
_BOOT_SERVE_PID = "boot-serve.pid"


@dataclass(frozen=True)
class VmLabUp:
    spec: ClusterSpec
    lab: VmLab
    machines: dict[str, str]  # node -> machine id


def vm_lab_up(
    store: Store,
    name: str,
    vms: int,
    uefi: int,
    managers: int,
    say: Say,
    *,
    timeout: float = DISCOVERY_TIMEOUT,
    image: str = "debian-12",
    driver: str = "qemu",
) -> VmLabUp:
    """driver: qemu (metalctl starts the VMs) or vagrant (the Vagrantfile's libvirt VMs)."""
    if not 0 <= uefi <= vms:
        raise ConflictError(f"--uefi {uefi} is more than the {vms} VMs")
    _refuse_other_cluster(store, name)
    if driver == "vagrant":
        libvirt.require_running()
        vmlab_vagrant.vagrantfile()
    _ensure_images(image, say)
    lab = vmlab_state.load(name) or _plan(name, vms, uefi, driver)
    if (
        len(lab.vms) != vms
        or sum(v.firmware == "uefi" for v in lab.vms) != uefi
        or lab.driver != driver
    ):
        raise ConflictError(
            f"VM lab {name} exists with {len(lab.vms)} VMs ({lab.driver}); it cannot change shape",
            hint=f"'metalctl lab down --name {name}' first",
        )
    vmlab_state.save(lab)
    _ensure_network(lab, say)
    _ensure_boot_service(lab, say)
    spec = _spec(lab, managers, image)
    backend = provisioners.get("vmlab")
    backend.enroll(store, spec, "lab up --vms")
    _ensure_vms(store, lab, say)
    machines = _wait_discovered(store, lab, say, timeout)
    backend.enroll(store, spec, "lab up --vms: machines discovered")
    return VmLabUp(spec, lab, machines)


def _refuse_other_cluster(store: Store, name: str) -> None:
    known = {c.name: c for c in store.list_clusters()}
    if name in known and known[name].provisioner != "vmlab":
        raise ConflictError(
            f"cluster {name} exists with provisioner '{known[name].provisioner}', not a VM lab",
            hint="pick another --name",
        )
    lab = vmlab_state.load(name)
    if lab is not None and lab.home != str(metalctl_home()):
        raise ConflictError(f"VM lab {name} belongs to metalctl home {lab.home}")


def _ensure_images(image: str, say: Say) -> None:
    from metalctl.images import catalog, debian, discovery

    if discovery.find_discovery() is None:
        say("building the discovery image (kernel + initramfs with the agent; cached)")
        discovery.build_discovery(say)
    try:
        catalog.resolve(image)
    except Exception:
        if image != "debian-12":
            raise
        say("building the Debian 12 OS image (a few minutes, once; cached)")
        debian.build_debian12(say)


def _plan(name: str, vms: int, uefi: int, driver: str) -> VmLab:
    home = str(metalctl_home())
    key = f"{home}:{name}"
    digest = hashlib.sha256(key.encode()).digest()
    subnet = _free_subnet()
    bridge = network.bridge_name(key)
    records = []
    for i in range(1, vms + 1):
        records.append(
            VmRecord(
                node=f"{name}-{i}",
                mac=f"52:54:00:{digest[0]:02x}:{digest[1]:02x}:{i:02x}",
                firmware="uefi" if i > vms - uefi else "bios",
                tap=network.tap_name(key, i) if driver == "qemu" else "",  # libvirt's own
                serial=f"MCVM-{digest[:3].hex()}-{i}",
                uuid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"metalctl:{key}:{i}")),
            )
        )
    return VmLab(
        name=name,
        home=home,
        bridge=bridge,
        network=str(subnet),
        server_address=str(subnet.network_address + 1),
        port=BOOT_PORT,
        runtime=str(RUNTIME_ROOT / bridge),
        vms=tuple(records),
        driver=driver,
    )


def _free_subnet() -> ipaddress.IPv4Network:
    used = [ipaddress.ip_network(r, strict=False) for r in _routes()]
    for candidate in SUBNET_POOL.subnets(new_prefix=24):
        if not any(candidate.overlaps(u) for u in used if u.version == 4):
            return candidate
    raise ProvisionError("no free /24 left in 10.215.0.0/16 for a VM lab")


def _routes() -> list[str]:
    out = subprocess.run(["ip", "-j", "route"], capture_output=True, text=True, check=False)
    try:
        return [
            r["dst"]
            for r in json.loads(out.stdout or "[]")
            if r.get("dst") not in (None, "default")
        ]
    except (ValueError, KeyError, TypeError):
        return []


def _address(lab: VmLab, index: int) -> str:
    return str(ipaddress.IPv4Network(lab.network).network_address + 10 + index)


def _spec(lab: VmLab, managers: int, image: str) -> ClusterSpec:
    names = [vm.node for vm in lab.vms]
    managers = min(managers, len(names))
    nodes = "".join(
        f"    - {{name: {vm.node}, address: {_address(lab, i)}, mac: '{vm.mac}'}}\n"
        for i, vm in enumerate(lab.vms, start=1)
    )
    text = (
        "apiVersion: metalctl/v1alpha1\nkind: Cluster\n"
        f"metadata: {{name: {lab.name}}}\n"
        "spec:\n  provisioner: vmlab\n"
        f"  pxe: {{image: {image}, network: {lab.network}, "
        f"aptProxy: 'http://{lab.server_address}:3142'}}\n"
        f"  nodes:\n{nodes}"
        f"  swarm: {{master: {names[0]}, managers: [{', '.join(names[:managers])}]}}\n"
        f"  consul: {{servers: [{', '.join(names[:managers])}]}}\n"
    )
    return parse_spec(text, source=f"VM lab {lab.name}")


def _ensure_network(lab: VmLab, say: Say) -> None:
    net = ipaddress.IPv4Network(lab.network)
    say(f"bridge {lab.bridge} ({lab.network}, no route out)")
    network.create_bridge(
        lab.bridge,
        ipaddress.IPv4Interface(f"{lab.server_address}/{net.prefixlen}"),
        ipaddress.IPv6Interface(f"fd00:215:{net.network_address.packed[2]:x}::1/64"),
    )
    for vm in lab.vms:
        if vm.tap:
            network.add_tap(vm.tap, lab.bridge)


def _ensure_boot_service(lab: VmLab, say: Say) -> None:
    run = lab.run_dir
    files = run / "files" / "discovery"
    files.mkdir(parents=True, exist_ok=True)
    run.chmod(0o755)
    from metalctl.images import discovery

    image = discovery.find_discovery()
    if image is None:
        raise ProvisionError("the discovery image is missing from the cache")
    for src, dest in ((image.kernel, files / "vmlinuz"), (image.initrd, files / "initrd.img")):
        shutil.copyfile(src, dest)
    if _boot_serve_pid(lab) is not None:
        return
    net = ipaddress.IPv4Network(lab.network)
    first, last = net.network_address + 100, net.network_address + 199
    argv = [
        sys.executable, "-m", "metalctl", "boot", "serve",
        "--interface", lab.bridge,
        "--address", lab.server_address,
        "--dhcp-range", f"{first},{last}",
        "--port", str(lab.port),
        "--state-dir", str(run / "boot"),
        "--files-dir", str(run / "files"),
        # The VMs' apt goes through the admin host (no route out): spec.pxe.aptProxy.
        "--package-cache",
    ]  # fmt: skip
    say(f"starting the boot service on {lab.boot_url} (log: {run / _BOOT_SERVE_LOG})")
    with open(run / _BOOT_SERVE_LOG, "ab") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
    (run / _BOOT_SERVE_PID).write_text(f"{proc.pid}\n")
    wait_for(
        lambda: _healthy(lab),
        what=f"the boot service of VM lab {lab.name} on {lab.boot_url}",
        timeout=60,
        interval=0.5,
        abort=lambda: None if proc.poll() is None else _log_tail(run / _BOOT_SERVE_LOG),
    )


def _healthy(lab: VmLab) -> bool:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{lab.boot_url}/healthz", timeout=2) as reply:
        return bool(reply.status == 200)


def _boot_serve_pid(lab: VmLab) -> int | None:
    try:
        pid = int((lab.run_dir / _BOOT_SERVE_PID).read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"boot\0serve" in cmdline and lab.bridge.encode() in cmdline else None


def _log_tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()[-8:]
    except OSError:
        return "it exited"
    return "it exited: " + " | ".join(lines)


def _ensure_vms(store: Store, lab: VmLab, say: Say) -> None:
    if lab.driver == "vagrant":
        vmlab_vagrant.up(lab, say)
        return
    for vm in lab.vms:
        config = vm_config(lab, vm)
        if qemu.is_running(config):
            continue
        config.state_dir.mkdir(parents=True, exist_ok=True)
        if not config.disk.exists():
            qemu.create_disk(config.disk, config.disk_size)
        say(f"{vm.node}: starting VM ({vm.firmware.upper()}, MAC {vm.mac}, blank disk)")
        qemu.start(config)


def _wait_discovered(store: Store, lab: VmLab, say: Say, timeout: float) -> dict[str, str]:
    found: dict[str, str] = {}

    def probe() -> bool:
        for vm in lab.vms:
            machine = store.find_machine(vm.mac)
            if machine is not None and vm.node not in found:
                found[vm.node] = machine.id
                say(f"{vm.node}: discovered as machine {machine.id}")
        return len(found) == len(lab.vms)

    def abort() -> str | None:
        if _boot_serve_pid(lab) is None:
            return "the boot service stopped: " + _log_tail(lab.run_dir / _BOOT_SERVE_LOG)
        for vm in lab.vms:
            if not _vm_exists(lab, vm):
                return f"VM {vm.node} is gone; its console: {lab.vm_dir(vm.node) / 'console.log'}"
        return None

    wait_for(
        probe,
        what="VMs "
        + ", ".join(vm.node for vm in lab.vms if vm.node not in found)
        + " to PXE-boot and report their facts",
        timeout=timeout,
        interval=1.0,
        abort=abort,
        hint=f"each VM's console log is in {lab.run_dir / 'vms'}; the boot service's in "
        f"{lab.run_dir / _BOOT_SERVE_LOG}",
    )
    return found


def _vm_exists(lab: VmLab, vm: VmRecord) -> bool:
    if lab.driver == "vagrant":  # a discovered domain is shut off, not gone
        return libvirt.state(vmlab_vagrant.domain(vm)) != "missing"
    return qemu.is_running(vm_config(lab, vm))


def vm_lab_down(store: Store, name: str, say: Say) -> list[str]:
    """Remove everything of the VM lab: VMs, boot service, network, runtime, store."""
    lab = vmlab_state.require(name)
    if lab.home != str(metalctl_home()):
        raise ConflictError(f"VM lab {name} belongs to metalctl home {lab.home}; left alone")
    removed: list[str] = []
    if lab.driver == "vagrant":
        removed += vmlab_vagrant.destroy(lab)
    for vm in lab.vms if lab.driver == "qemu" else ():
        config = vm_config(lab, vm)
        if qemu.is_running(config):
            qemu.stop(config)
            removed.append(f"VM {vm.node}")
    pid = _boot_serve_pid(lab)
    if pid is not None:
        _stop_process(pid)
        removed.append("boot service")
    network.remove(lab.bridge, *(vm.tap for vm in lab.vms if vm.tap))
    removed.append(f"bridge {lab.bridge} and {len(lab.vms)} taps")
    run = lab.run_dir.resolve()
    if run.parent == RUNTIME_ROOT and run.name == lab.bridge and run.exists():
        shutil.rmtree(run)
        removed.append(f"runtime {run}")
    for vm in lab.vms:
        if store.find_machine(vm.mac) is not None:
            store.forget_machine(vm.mac, f"lab down {name}")
    if name in {c.name for c in store.list_clusters()}:
        lifecycle.forget_cluster(store, name, reason="lab down")
        removed.append(f"cluster {name} (store)")
    root = ClusterPaths.for_cluster(name).root
    if root.exists() and root.resolve().parent == (metalctl_home() / "clusters").resolve():
        shutil.rmtree(root)
        removed.append(f"state {root}")
    say(f"VM lab {name} removed")
    return removed


def _stop_process(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if _gone(pid):
            return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"  # a zombie has exited; its parent just has not reaped it


def require_root() -> None:
    if os.geteuid() != 0:
        raise HostSetupError("a VM lab needs root (bridges, taps, QEMU, dnsmasq)")
