"""What a VM lab is made of, recorded in its cluster folder (``vmlab.json``): the bridge,
the runtime folder with disks, QMP sockets and the boot service, and each VM.

The runtime folder lives under /var/lib/metalctl/vmlab/BRIDGE, not under $METALCTL_HOME:
QMP sockets need short paths (108 bytes) and dnsmasq (which drops root) must read the TFTP
files, which a 0700 home would hide.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from metalctl.errors import NotFoundError
from metalctl.paths import ClusterPaths, write_public
from metalctl.vmlab import qemu

RUNTIME_ROOT = Path("/var/lib/metalctl/vmlab")
RECORD = "vmlab.json"


@dataclass(frozen=True)
class VmRecord:
    node: str
    mac: str
    firmware: str  # bios | uefi
    tap: str
    serial: str
    uuid: str


@dataclass(frozen=True)
class VmLab:
    name: str
    home: str  # the metalctl home that made it
    bridge: str
    network: str  # 10.215.X.0/24
    server_address: str  # the bridge's address: boot service, package cache
    port: int
    runtime: str
    vms: tuple[VmRecord, ...]
    # qemu: metalctl starts QEMU itself (taps, QMP); vagrant: the Vagrantfile's
    # vagrant-libvirt domains on the same bridge (vmlab_vagrant.py), power through libvirt.
    driver: str = "qemu"

    @property
    def run_dir(self) -> Path:
        return Path(self.runtime)

    def vm_dir(self, node: str) -> Path:
        return self.run_dir / "vms" / node

    def qmp_socket(self, node: str) -> Path:
        return self.vm_dir(node) / "qmp.sock"

    def vm(self, node: str) -> VmRecord:
        for vm in self.vms:
            if vm.node == node:
                return vm
        raise NotFoundError(f"VM lab {self.name} has no VM for node {node}")

    @property
    def boot_url(self) -> str:
        return f"http://{self.server_address}:{self.port}"


DISK_BYTES = 4 << 30
MEMORY_MIB = 1024


def vm_config(lab: VmLab, vm: VmRecord) -> qemu.VmConfig:
    vm_dir = lab.vm_dir(vm.node)
    return qemu.VmConfig(
        name=vm.node,
        mac=vm.mac,
        tap=vm.tap,
        disk=vm_dir / "disk.qcow2",
        disk_size=DISK_BYTES,
        firmware="uefi" if vm.firmware == "uefi" else "bios",
        memory_mib=MEMORY_MIB,
        serial=vm.serial,
        uuid=vm.uuid,
        state_dir=vm_dir,
    )


def save(lab: VmLab) -> None:
    write_public(
        ClusterPaths.for_cluster(lab.name).root / RECORD, json.dumps(asdict(lab), indent=2)
    )


def load(name: str) -> VmLab | None:
    path = ClusterPaths.for_cluster(name).root / RECORD
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    data["vms"] = tuple(VmRecord(**vm) for vm in data["vms"])
    return VmLab(**data)


def require(name: str) -> VmLab:
    lab = load(name)
    if lab is None:
        raise NotFoundError(
            f"cluster {name} is no VM lab (no {RECORD} in its folder)",
            hint=f"create it with 'metalctl lab up --name {name} --vms K'",
        )
    return lab
