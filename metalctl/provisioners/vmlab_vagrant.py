"""A VM lab whose VMs Vagrant makes (``metalctl lab up --vagrant``): the top-level
Vagrantfile with vagrant-libvirt, reading the plan metalctl writes.

metalctl keeps what it owns in a QEMU lab (bridge, boot service, plan: MACs, firmware,
SMBIOS serial/UUID); Vagrant defines, starts and destroys the libvirt domains. Vagrant's
state (``.vagrant``) lives in the lab's runtime folder, not in the checkout, so two labs
never share it and ``lab down`` removes it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from metalctl.errors import HostSetupError, ProvisionError
from metalctl.paths import project_root, write_public
from metalctl.provisioners.vmlab_state import DISK_BYTES, MEMORY_MIB, VmLab, VmRecord
from metalctl.vmlab import libvirt

Say = Callable[[str], None]
UP_TIMEOUT = 900.0
DOMAIN_PREFIX = "metalctl-"  # the Vagrantfile's libvirt default_prefix


def domain(vm: VmRecord) -> str:
    return f"{DOMAIN_PREFIX}{vm.node}"


def vagrantfile() -> Path:
    path = project_root() / "Vagrantfile"
    if not path.is_file():
        raise HostSetupError(
            f"no Vagrantfile in {path.parent}",
            hint="run metalctl from a checkout of the project (the Vagrantfile is at its top)",
        )
    return path


def network_name(lab: VmLab) -> str:
    return f"metalctl-{lab.bridge}"


def plan_path(lab: VmLab) -> Path:
    return lab.run_dir / "vagrant-plan.json"


def environment(lab: VmLab) -> dict[str, str]:
    """What `vagrant` needs to act on this lab's VMs (also printed by `lab vagrant-env`)."""
    return {
        "VAGRANT_CWD": str(vagrantfile().parent),
        "VAGRANT_DOTFILE_PATH": str(lab.run_dir / "vagrant"),
        "VAGRANT_DEFAULT_PROVIDER": "libvirt",
        "VAGRANT_CHECKPOINT_DISABLE": "1",  # no version check against the internet
        "METALCTL_VAGRANT_PLAN": str(plan_path(lab)),
    }


def write_plan(lab: VmLab) -> Path:
    vms = []
    for vm in lab.vms:
        vm_dir = lab.vm_dir(vm.node)
        vm_dir.mkdir(parents=True, exist_ok=True)
        vms.append(
            {
                "node": vm.node,
                "mac": vm.mac,
                "firmware": vm.firmware,
                "serial": vm.serial,
                "uuid": vm.uuid,
                "console": str(vm_dir / "console.log"),
                "nvram": str(vm_dir / "OVMF_VARS.fd"),
            }
        )
    plan = {
        "bridge": lab.bridge,
        "network": network_name(lab),
        "memory_mib": MEMORY_MIB,
        "disk_gib": DISK_BYTES >> 30,
        "vms": vms,
    }
    write_public(plan_path(lab), json.dumps(plan, indent=2))
    return plan_path(lab)


def run(lab: VmLab, *args: str, timeout: float = UP_TIMEOUT) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("vagrant")
    if tool is None:
        raise HostSetupError(
            "vagrant not found", hint="'bash scripts/setup-libvirt.sh' installs it (as root)"
        )
    log = lab.run_dir / "vagrant.log"
    env = {**os.environ, **environment(lab)}
    started = time.monotonic()
    done = subprocess.run(
        [tool, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    seconds = time.monotonic() - started
    with log.open("a") as out:  # bench_vagrant.py reads the seconds: Vagrant's own share
        out.write(f"$ vagrant {' '.join(args)}  (exit {done.returncode}, {seconds:.1f} s)\n")
        out.write(done.stdout + done.stderr)
    return done


def up(lab: VmLab, say: Say) -> None:
    """`vagrant up` (idempotent: running VMs are left as they are). No box: Vagrant
    defines and starts the domains and returns; nothing waits for SSH."""
    libvirt.require_running()
    libvirt.ensure_network(network_name(lab), lab.bridge)
    write_plan(lab)
    say(f"vagrant up: {len(lab.vms)} VMs on {lab.bridge} (log: {lab.run_dir / 'vagrant.log'})")
    done = run(lab, "up", "--provider", "libvirt")
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-6:])
        raise ProvisionError(
            f"vagrant up failed (exit {done.returncode}): {tail}",
            hint=f"the full output is in {lab.run_dir / 'vagrant.log'}",
        )


def destroy(lab: VmLab) -> list[str]:
    """Every domain of the lab gone, with its disk and UEFI variables."""
    removed: list[str] = []
    names = [domain(vm) for vm in lab.vms]
    for name in names:  # a power cut: nothing on the VMs is worth a graceful halt
        if libvirt.state(name) == "running":
            libvirt.power(name, "off")
    if plan_path(lab).exists() and shutil.which("vagrant"):
        run(lab, "destroy", "-f", timeout=300)
    for name in names:
        if libvirt.state(name) != "missing":
            libvirt.remove(name)
        removed.append(f"domain {name}")
    if libvirt.remove_network(network_name(lab)):
        removed.append(f"libvirt network {network_name(lab)}")
    return removed
