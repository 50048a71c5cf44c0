"""Power a lab VM as a BMC powers a server: off, on, cycle.

``off`` holds the machine in reset through QMP (QEMU keeps running, so ``lab up`` leaves
it alone; status ``prelaunch``). ``on`` and ``cycle`` start a fresh QEMU process: the cold
boot of a machine whose power came back, RAM cleared, firmware from its first instruction.
``on`` does nothing to a VM that runs.

Why not QMP ``system_reset`` for ``on``: after a Debian guest had run, a warm reset under
TCG left OVMF silent for 3-155 s before its first output, and the guest reached systemd
15-167 s after the reset; a fresh process: first output at 3-5 s and systemd at 15-20 s,
every time (OVMF 2022.11, QEMU 7.2; ``bench/bench_vm_power.py``). One warm stall ran past
a 400 s wait in CI.
"""

from __future__ import annotations

from metalctl.errors import UsageError
from metalctl.vmlab import qemu, qmp
from metalctl.vmlab.qmp import PowerAction, PowerState


def power_state(config: qemu.VmConfig) -> PowerState:
    """``on`` when the VM's QEMU runs the machine; a stopped process is ``off`` too."""
    if not qemu.is_running(config):
        return "off"
    return qmp.power_state(config.qmp_path, vm=config.name)


def power(config: qemu.VmConfig, action: PowerAction) -> PowerState:
    """Power the VM ``on``, ``off`` or ``cycle`` it; returns the state reached (checked)."""
    if action not in ("on", "off", "cycle"):
        raise UsageError(f"power action must be on, off or cycle, not {action!r}")
    if action == "off":
        if qemu.is_running(config):
            qmp.hold_in_reset(config.qmp_path, vm=config.name)
    elif action == "cycle" or power_state(config) == "off":
        qemu.stop(config)
        qemu.start(config)
    return power_state(config)
