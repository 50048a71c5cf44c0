"""iPXE scripts that boot an OS installer from its mirror (templates/installer-*.ipxe.j2).

EL9 (Rocky / Alma / CentOS Stream 9): the mirror's pxeboot kernel and initrd, with
``inst.repo`` the mirror's BaseOS tree and ``inst.ks`` this node's kickstart from the boot
service (``GET /v1/deploy/kickstart?mac=MAC``, rendered by kickstart.py). Which machines
get this script is the boot service's decision (not wired yet: docs/pxe-provisioning.md
"EL9 by kickstart").
"""

from __future__ import annotations

from dataclasses import dataclass

from metalctl.boot import kickstart
from metalctl.boot.kickstart import DEFAULT_CONSOLE, FLAVOURS, Flavour
from metalctl.errors import UsageError


@dataclass(frozen=True)
class El9InstallerScript:
    """``mirror_url``: the flavour's 9 tree (``MIRROR/BaseOS/x86_64/os`` is the install
    tree); ``base_url``: the boot service as the machine reaches it; ``kernel_args``: extra
    kernel arguments for the installer (the console)."""

    mac: str
    mirror_url: str
    base_url: str
    flavour: Flavour = "rocky"
    machine_id: str | None = None
    kernel_args: str = DEFAULT_CONSOLE

    def __post_init__(self) -> None:
        problems = [
            p
            for p in (
                kickstart.check_mac("mac", self.mac),
                kickstart.check_url("mirror_url", self.mirror_url),
                kickstart.check_url("base_url", self.base_url),
                kickstart.check_flavour("flavour", self.flavour),
                None
                if self.machine_id is None or kickstart.check_hostname("", self.machine_id) is None
                else f"machine_id {self.machine_id!r} is not a machine id like m-0123456789ab",
                kickstart.check_console("kernel_args", self.kernel_args),
            )
            if p
        ]
        if problems:
            raise UsageError("invalid installer script settings: " + "; ".join(problems))


def render_el9_installer(script: El9InstallerScript) -> str:
    """The iPXE script that boots the EL9 installer with this node's kickstart."""
    return kickstart.render(
        "installer-el9.ipxe.j2",
        mac=script.mac.lower(),
        machine_id=script.machine_id,
        flavour_name=FLAVOURS[script.flavour][0],
        tree=f"{script.mirror_url.rstrip('/')}/BaseOS/x86_64/os",
        base_url=script.base_url.rstrip("/"),
        kernel_args=script.kernel_args,
    )
