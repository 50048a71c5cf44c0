"""The plan and environment `lab up --vagrant` hands to the Vagrantfile."""

from __future__ import annotations

import json
import re
from pathlib import Path

from metalctl.provisioners import vmlab_vagrant
from metalctl.provisioners.vmlab_state import VmLab, VmRecord


def _lab(tmp_path: Path) -> VmLab:
    vms = (
        VmRecord("t-1", "52:54:00:aa:bb:01", "bios", "", "MCVM-aabbcc-1", "u-1"),
        VmRecord("t-2", "52:54:00:aa:bb:02", "uefi", "", "MCVM-aabbcc-2", "u-2"),
    )
    return VmLab("t", str(tmp_path / "home"), "mcbtest", "10.215.9.0/24", "10.215.9.1", 8080,
                 str(tmp_path / "run"), vms, driver="vagrant")  # fmt: skip


def test_plan_carries_what_the_vagrantfile_reads(tmp_path: Path) -> None:
    lab = _lab(tmp_path)
    plan = json.loads(vmlab_vagrant.write_plan(lab).read_text())
    assert plan["bridge"] == "mcbtest" and plan["network"] == "metalctl-mcbtest"
    assert [vm["node"] for vm in plan["vms"]] == ["t-1", "t-2"]
    uefi = plan["vms"][1]
    assert uefi["firmware"] == "uefi" and uefi["serial"] == "MCVM-aabbcc-2"
    # Console and UEFI variables live in the lab's runtime folder: lab down removes them.
    assert Path(uefi["nvram"]).parent == lab.vm_dir("t-2")
    assert Path(uefi["console"]).parent == lab.vm_dir("t-2")
    # Every key the Vagrantfile reads from a VM is in the plan.
    text = vmlab_vagrant.vagrantfile().read_text()
    assert set(re.findall(r'vm\["(\w+)"\]', text)) <= set(uefi)
    assert set(re.findall(r'plan\["(\w+)"\]', text)) <= set(plan)


def test_environment_keeps_vagrant_state_in_the_lab_and_off_the_internet(
    tmp_path: Path,
) -> None:
    lab = _lab(tmp_path)
    env = vmlab_vagrant.environment(lab)
    assert Path(env["VAGRANT_DOTFILE_PATH"]).parent == lab.run_dir
    assert env["VAGRANT_CHECKPOINT_DISABLE"] == "1"
    assert env["VAGRANT_DEFAULT_PROVIDER"] == "libvirt"
    assert Path(env["VAGRANT_CWD"], "Vagrantfile").is_file()
    assert vmlab_vagrant.domain(lab.vms[0]) == "metalctl-t-1"
    assert (
        f'default_prefix = "{vmlab_vagrant.DOMAIN_PREFIX}"'
        in vmlab_vagrant.vagrantfile().read_text()
    )
