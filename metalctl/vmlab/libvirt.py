"""libvirt domains of a Vagrant VM lab, driven with ``virsh`` (the lab's stand-in for a
BMC, as QMP is for metalctl's own QEMU VMs): state, power on/off/cycle, a blank disk.

Power is cold, like the QEMU lab's (power.py says why): off destroys the running domain
(a power cut), on starts it, cycle does both. The discovery agent's own ``poweroff``
leaves the domain shut off (libvirt's default on_poweroff is destroy).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Literal

from metalctl.errors import HostSetupError, ProvisionError

URI = "qemu:///system"
POOL = "metalctl"
DomainState = Literal["running", "off", "missing"]
PowerAction = Literal["on", "off", "cycle"]


def virsh(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("virsh")
    if tool is None:
        raise HostSetupError(
            "virsh not found", hint="install libvirt: 'bash scripts/setup-libvirt.sh' (as root)"
        )
    done = subprocess.run(
        [tool, "-c", URI, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise ProvisionError(f"virsh {' '.join(args)}: {(done.stderr or done.stdout).strip()}")
    return done


def require_running() -> None:
    """libvirtd answers and the storage pool Vagrant's VMs use exists."""
    if virsh("version", check=False).returncode != 0:
        raise HostSetupError(
            f"libvirtd does not answer on {URI}",
            hint="start it: 'bash scripts/setup-libvirt.sh' (as root)",
        )
    if virsh("pool-info", POOL, check=False).returncode != 0:
        raise HostSetupError(
            f"libvirt has no storage pool '{POOL}'",
            hint="'bash scripts/setup-libvirt.sh' defines it",
        )


def state(domain: str) -> DomainState:
    done = virsh("domstate", domain, check=False)
    if done.returncode != 0:
        return "missing"
    return "running" if done.stdout.strip() in ("running", "paused", "in shutdown") else "off"


def power(domain: str, action: PowerAction) -> DomainState:
    now = state(domain)
    if now == "missing":
        raise ProvisionError(f"libvirt has no domain {domain}")
    if action in ("off", "cycle") and now == "running":
        virsh("destroy", domain)
    if action in ("on", "cycle"):
        virsh("start", domain)
    return state(domain)


def disk_path(domain: str) -> Path:
    """The file of the domain's first disk (vda)."""
    root = ET.fromstring(virsh("dumpxml", domain).stdout)
    for disk in root.iter("disk"):
        source = disk.find("source")
        if disk.get("device") == "disk" and source is not None and source.get("file"):
            return Path(str(source.get("file")))
    raise ProvisionError(f"libvirt domain {domain} has no file-backed disk")


def blank_disk(domain: str) -> None:
    """An empty qcow2 of the same size in place of the (off) domain's disk: the next
    power-on finds nothing to boot and falls through to PXE (a BMC's "next boot: network")."""
    path = disk_path(domain)
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    size = int(json.loads(info.stdout)["virtual-size"])
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(path), str(size)], check=True, timeout=60
    )
    virsh("pool-refresh", POOL, check=False)


def ensure_network(name: str, bridge: str) -> None:
    """A libvirt network over metalctl's existing bridge (forward mode bridge: libvirt adds
    no address, DHCP, DNS or NAT). The VMs' NICs name it rather than the bare bridge, so
    vagrant-libvirt's address lookup (`vagrant status`, `destroy`) finds a network with no
    leases instead of crashing on a NIC without one."""
    if virsh("net-info", name, check=False).returncode != 0:
        xml = (
            f"<network><name>{name}</name><forward mode='bridge'/><bridge name='{bridge}'/>"
            "<portgroup name='pxe' default='yes'/></network>"
        )
        with tempfile.NamedTemporaryFile("w", suffix=".xml") as spec:
            spec.write(xml)
            spec.flush()
            virsh("net-define", spec.name)
    if "yes" not in _net_field(name, "Active"):
        virsh("net-start", name)


def remove_network(name: str) -> bool:
    if virsh("net-info", name, check=False).returncode != 0:
        return False
    virsh("net-destroy", name, check=False)
    virsh("net-undefine", name, check=False)
    return True


def _net_field(name: str, field: str) -> str:
    for line in virsh("net-info", name).stdout.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == field:
            return value.strip()
    return ""


def remove(domain: str) -> None:
    """Undefine a leftover domain with its storage and UEFI variables (what
    ``vagrant destroy`` would have done)."""
    if state(domain) == "running":
        virsh("destroy", domain, check=False)
    virsh("undefine", domain, "--nvram", "--remove-all-storage", check=False)
