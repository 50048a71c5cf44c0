"""What a PXE deployment of one node will be, decided from the spec and the machine's
discovery facts alone (pure functions: no store, no network)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from metalctl.deployments import DeploymentJob, KickstartJob
from metalctl.errors import ConflictError
from metalctl.spec import ClusterSpec, Node, RootDevice
from metalctl.store import MachineRecord


@dataclass(frozen=True)
class Disk:
    name: str
    size: int
    serial: str


def machine_for(node: Node, cluster: str, machines: Sequence[MachineRecord]) -> MachineRecord:
    """The machine the spec's node names (mac:, serial: or uuid:), or the one enrolled
    as this node. ConflictError when none or several match."""
    found = [m for m in machines if _matches(node, cluster, m)]
    if not found:
        wanted = _identity_text(node) or "no mac:/serial:/uuid: and none enrolled as it"
        raise ConflictError(
            f"node {node.name}: no discovered machine matches ({wanted})",
            hint="power the machine on so that it PXE-boots and is discovered "
            "('metalctl machines list' shows what was), or correct the node's mac:",
        )
    if len(found) > 1:
        ids = ", ".join(m.id for m in found)
        raise ConflictError(f"node {node.name}: several machines match: {ids}")
    return found[0]


def _matches(node: Node, cluster: str, machine: MachineRecord) -> bool:
    if node.mac and node.mac in machine.macs:
        return True
    if node.serial and machine.serial == node.serial:
        return True
    if node.uuid and machine.smbios_uuid == node.uuid:
        return True
    return machine.cluster == cluster and machine.node == node.name


def _identity_text(node: Node) -> str:
    parts = [
        f"{k} {v}" for k, v in (("mac", node.mac), ("serial", node.serial), ("uuid", node.uuid))
    ]
    return ", ".join(p for p in parts if not p.endswith(" None"))


def choose_disk(node: str, facts: dict[str, Any], hint: RootDevice | None, image_size: int) -> Disk:
    """The disk the image goes to: the one the hint names, else the smallest that holds
    the image (Ironic's rule: the OS disk is usually the small one)."""
    disks = [
        Disk(str(d["name"]), int(d["size_bytes"]), str(d.get("serial") or ""))
        for d in facts.get("disks", [])
    ]
    wwns = {str(d["name"]): str(d.get("wwn") or "") for d in facts.get("disks", [])}
    fitting = [d for d in disks if d.size >= image_size]
    if hint is not None:
        fitting = [
            d
            for d in fitting
            if (hint.serial is None or d.serial == hint.serial)
            and (hint.wwn is None or wwns[d.name] == hint.wwn)
            and (hint.name is None or d.name == hint.name)
            and (hint.min_size_gib is None or d.size >= hint.min_size_gib << 30)
        ]
    if not fitting:
        seen = ", ".join(f"{d.name} ({d.size >> 20} MiB, serial {d.serial or '-'})" for d in disks)
        raise ConflictError(
            f"node {node}: no disk fits the image ({image_size >> 20} MiB)"
            + (" and the rootDevice hint" if hint else "")
            + f"; the machine has: {seen or 'no disks'}",
            hint="correct spec.nodes[].rootDevice, or use a machine with a larger disk",
        )
    return min(fitting, key=lambda d: (d.size, d.name))


def seed(
    node: Node,
    machine_id: str,
    mac: str,
    network: str,
    ssh_public_key: str,
    nonce: str,
    apt_proxy: str | None = None,
) -> dict[str, str]:
    """cloud-init NoCloud files: hostname, metalctl's key for root, the node's address on
    the NIC that PXE-booted (no gateway, no DNS: the provisioning network has no way out),
    apt through the admin host's package cache when there is one."""
    prefix = ipaddress.IPv4Network(network).prefixlen
    meta = {"instance-id": f"metalctl-{machine_id}-{nonce}", "local-hostname": node.name}
    user = {
        "hostname": node.name,
        "manage_etc_hosts": True,
        # root logs in with metalctl's key (ansible's user); without this cloud-init puts
        # a "log in as debian" stub before the key.
        "disable_root": False,
        "ssh_pwauth": False,
        "ssh_authorized_keys": [ssh_public_key.strip()],
        "locale": "C.UTF-8",
        "ssh_genkeytypes": ["ed25519", "ecdsa"],
    }
    if apt_proxy:
        user["apt"] = {"proxy": apt_proxy}
    net = {
        "version": 2,
        "ethernets": {
            "prov0": {
                "match": {"macaddress": mac},
                "dhcp4": False,
                "addresses": [f"{node.address}/{prefix}"],
            }
        },
    }
    return {
        "meta-data": yaml.safe_dump(meta, sort_keys=False),
        "user-data": "#cloud-config\n" + yaml.safe_dump(user, sort_keys=False),
        "network-config": yaml.safe_dump(net, sort_keys=False),
    }


def kickstart_job(spec: ClusterSpec, node: Node, mac: str, ssh_public_key: str) -> DeploymentJob:
    """EL9 by kickstart: no image; the installer partitions the disk the hint names."""
    pxe = spec.spec.pxe
    if pxe is None or pxe.installer is None:
        raise ConflictError(f"cluster {spec.name} has no spec.pxe.installer")
    hint = node.root_device
    root = None
    if hint is not None and hint.serial:
        root = f"serial:{hint.serial}"
    elif hint is not None and hint.wwn:
        root = f"/dev/disk/by-id/wwn-{hint.wwn}"
    elif hint is not None and hint.name:
        root = hint.name
    job = KickstartJob(
        flavour=pxe.installer.flavour,
        mirror=pxe.installer.mirror,
        mac=mac,
        ssh_public_key=ssh_public_key.strip(),
        address=node.address,
        prefix=ipaddress.IPv4Network(pxe.network).prefixlen,
        root_device=root,
    )
    return DeploymentJob(node.name, "", 0, "", None, {}, kickstart=job)
