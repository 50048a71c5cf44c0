"""The vmlab provisioner: the PXE provisioner on the VMs of 'metalctl lab up --vms', with
power control through each VM's QMP socket (the VM lab's stand-in for a BMC), or through
libvirt for a lab whose VMs Vagrant made ('lab up --vagrant')."""

from __future__ import annotations

from metalctl.errors import ConflictError
from metalctl.provisioners import vmlab_vagrant
from metalctl.provisioners.base import Capabilities, PowerAction, Provisioner, Say
from metalctl.provisioners.pxe import PxeProvisioner
from metalctl.provisioners.vmlab_state import require, vm_config
from metalctl.spec import ClusterSpec
from metalctl.store import Store
from metalctl.vmlab import libvirt, qemu
from metalctl.vmlab.power import power as vm_power


class VmLabProvisioner(PxeProvisioner):
    name = "vmlab"
    capabilities = Capabilities(creates_machines=False, power=True, installs_os=True)

    def boot_for_deploy(self, spec: ClusterSpec, node: str, mac: str, say: Say) -> None:
        lab = require(spec.name)
        vm = lab.vm(node)
        if lab.driver == "vagrant":
            _boot_domain_for_deploy(vmlab_vagrant.domain(vm), vm.firmware, node, say)
            return
        if vm.firmware == "uefi":
            # UEFI VMs boot their disk first (qemu.py says why): a blank disk makes this
            # boot a PXE boot, as a BMC's "next boot: network" would.
            config = vm_config(lab, vm)
            say(f"{node}: blank disk, power on (UEFI: the firmware falls through to PXE)")
            qemu.stop(config)
            config.disk.unlink(missing_ok=True)
            qemu.create_disk(config.disk, config.disk_size)
            qemu.start(config)
            return
        # Off (the discovery agent powered it off) or on: a fresh power-on PXE-boots it.
        say(f"{node}: power cycle so that it PXE-boots")
        vm_power(vm_config(lab, vm), "cycle")

    def power(self, spec: ClusterSpec, node: str, action: PowerAction) -> None:
        lab = require(spec.name)
        if lab.driver == "vagrant":
            libvirt.power(vmlab_vagrant.domain(lab.vm(node)), action)
            return
        vm_power(vm_config(lab, lab.vm(node)), action)

    def release(self, store: Store, spec: ClusterSpec, node: str) -> None:
        """The VM stays until 'lab down' (its disk is rewritten by the next provision)."""

    def add_machine(
        self, store: Store, spec: ClusterSpec, role: str, name: str | None, say: Say
    ) -> ClusterSpec:
        raise ConflictError(
            f"VM lab {spec.name} has a fixed set of VMs",
            hint="make a bigger lab: 'metalctl lab down' then 'metalctl lab up --vms K'",
        )


def _boot_domain_for_deploy(domain: str, firmware: str, node: str, say: Say) -> None:
    """As for a QEMU VM: BIOS PXE-boots on every power-on; UEFI boots its disk first, so
    its disk is blanked (power off first) and it falls through to PXE."""
    if firmware == "uefi":
        say(f"{node}: blank disk, power on (UEFI: the firmware falls through to PXE)")
        libvirt.power(domain, "off")
        libvirt.blank_disk(domain)
        libvirt.power(domain, "on")
        return
    say(f"{node}: power cycle so that it PXE-boots")
    libvirt.power(domain, "cycle")


PROVISIONER: Provisioner = VmLabProvisioner()
