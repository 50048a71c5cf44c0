"""What a PXE-booting MAC gets: the decision (pure) and the iPXE script (templates/).

unknown or discovered   -> the discovery image, with a fresh per-boot token
provisioning            -> the same image in deploy mode, with a fresh deploy token
provisioned             -> its local disk (BIOS: sanboot the first disk; UEFI: exit)
anything else (enrolled, failed) -> wait and ask again: no discovery loop, no blank-disk boot
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Literal

import jinja2

from metalctl.boot.config import BootConfig
from metalctl.store import (
    MACHINE_DISCOVERED,
    MACHINE_PROVISIONED,
    MACHINE_PROVISIONING,
    MachineRecord,
)

Action = Literal["discovery", "deploy", "local", "wait"]
Firmware = Literal["bios", "uefi"]


def boot_action(machine: MachineRecord | None) -> Action:
    if machine is None or machine.state == MACHINE_DISCOVERED:
        return "discovery"
    if machine.state == MACHINE_PROVISIONING:
        return "deploy"
    if machine.state == MACHINE_PROVISIONED:
        return "local"
    return "wait"


def firmware(machine: MachineRecord, platform: str | None) -> Firmware:
    """How the machine booted: iPXE's ${platform} of this boot when the chain URL carries
    it (pcbios or efi), else the boot mode its discovery facts reported, else BIOS."""
    if platform == "efi":
        return "uefi"
    if platform == "pcbios":
        return "bios"
    return "uefi" if machine.facts.get("boot_mode") == "uefi" else "bios"


@dataclass(frozen=True)
class DiscoveryScript:
    mac: str
    token: str
    expires_at: float
    base_url: str
    machine: MachineRecord | None = None
    mode: Literal["discover", "deploy"] = "discover"


def render_discovery(script: DiscoveryScript, config: BootConfig) -> str:
    """The discovery image's script; in deploy mode the same image runs the deploy job."""
    return _render(
        "discovery.ipxe.j2" if script.mode == "discover" else "deploy.ipxe.j2",
        mac=script.mac,
        token=script.token,
        expires=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(script.expires_at)),
        base_url=script.base_url,
        machine_id=None if script.machine is None else script.machine.id,
        kernel=config.discovery_kernel,
        initrd=config.discovery_initrd,
        kernel_args=config.kernel_args,
    )


def render_local(mac: str, machine: MachineRecord, fw: Firmware) -> str:
    return _render(f"local-{fw}.ipxe.j2", mac=mac, machine_id=machine.id, state=machine.state)


def render_wait(mac: str, machine: MachineRecord, base_url: str, config: BootConfig) -> str:
    return _render(
        "wait.ipxe.j2",
        mac=mac,
        machine_id=machine.id,
        state=machine.state,
        cluster=machine.cluster,
        node=machine.node,
        base_url=base_url,
        retry_seconds=config.wait_retry_seconds,
    )


@functools.cache
def _environment() -> jinja2.Environment:
    # Not HTML: no autoescape. Every value is checked before it gets here (MACs by regex,
    # tokens are urlsafe base64, settings by BootConfig); StrictUndefined turns a missing
    # value into an error instead of an empty kernel argument.
    return jinja2.Environment(
        loader=jinja2.PackageLoader("metalctl.boot", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def _render(name: str, **values: object) -> str:
    return _environment().get_template(name).render(**values)
