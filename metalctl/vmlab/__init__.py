"""The QEMU side of the VM lab: a bridge and taps per cluster (``network``), VMs that PXE-boot
like rack servers (``qemu``), and their power control
(``power``: QMP for off, a fresh QEMU process for on).

No CLI here: ``metalctl lab up --vms K`` and the ``pxe`` provisioner build on these.
Needs root, iproute2, iptables, qemu-system-x86, qemu-utils, ovmf, ipxe-qemu, seabios.
"""

from metalctl.vmlab.network import (
    Bridge,
    Leftovers,
    add_tap,
    bridge_name,
    create_bridge,
    leftovers,
    remove,
    tap_name,
)
from metalctl.vmlab.power import power, power_state
from metalctl.vmlab.qemu import (
    VmConfig,
    console_problems,
    console_tail,
    create_disk,
    is_running,
    mac_address,
    start,
    stop,
)
from metalctl.vmlab.qmp import QmpClient

__all__ = [
    "Bridge",
    "Leftovers",
    "QmpClient",
    "VmConfig",
    "add_tap",
    "bridge_name",
    "console_problems",
    "console_tail",
    "create_bridge",
    "create_disk",
    "is_running",
    "leftovers",
    "mac_address",
    "power",
    "power_state",
    "remove",
    "start",
    "stop",
    "tap_name",
]
