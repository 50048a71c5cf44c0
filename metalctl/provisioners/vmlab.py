"""The vmlab provisioner: the PXE provisioner on QEMU VMs of 'metalctl lab up --vms',
with power control through each VM's QMP socket (the VM lab's stand-in for a BMC)."""

from __future__ import annotations

from metalctl.errors import ConflictError
from metalctl.provisioners.base import Capabilities, PowerAction, Provisioner, Say
from metalctl.provisioners.pxe import PxeProvisioner
from metalctl.provisioners.vmlab_state import require, vm_config
from metalctl.spec import ClusterSpec
from metalctl.store import Store
from metalctl.vmlab import qemu
from metalctl.vmlab.power import power as vm_power


class VmLabProvisioner(PxeProvisioner):
    name = "vmlab"
    capabilities = Capabilities(creates_machines=False, power=True, installs_os=True)

    def boot_for_deploy(self, spec: ClusterSpec, node: str, mac: str, say: Say) -> None:
        lab = require(spec.name)
        vm = lab.vm(node)
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


PROVISIONER: Provisioner = VmLabProvisioner()
