"""The top-level Vagrantfile passes `vagrant validate` for both providers it has.

libvirt is also run for real (tests/e2e/test_vagrant_lab.py). VirtualBox cannot run here:
its block is validated with a stand-in `VBoxManage` on PATH that only answers
`--version` (Vagrant asks nothing else to validate), which is named as such below.
Each provider also gets a Vagrantfile with a wrong option, so a pass means something.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from metalctl.paths import project_root

VAGRANTFILE = project_root() / "Vagrantfile"


def _validate(folder: Path, provider: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "VAGRANT_CWD": str(folder),
        "VAGRANT_DOTFILE_PATH": str(folder / ".vagrant"),
        "VAGRANT_DEFAULT_PROVIDER": provider,
        "VAGRANT_CHECKPOINT_DISABLE": "1",
        **extra,
    }
    return subprocess.run(
        ["vagrant", "validate"], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def _plan(tmp_path: Path, bridge: str) -> Path:
    plan = tmp_path / "plan.json"
    vms = [
        {"node": "t-1", "mac": "52:54:00:aa:00:01", "firmware": "bios", "serial": "S1",
         "uuid": "00000000-0000-4000-8000-000000000001"},
        {"node": "t-2", "mac": "52:54:00:aa:00:02", "firmware": "uefi", "serial": "S2",
         "uuid": "00000000-0000-4000-8000-000000000002", "nvram": str(tmp_path / "vars.fd")},
    ]  # fmt: skip
    plan.write_text(json.dumps({"bridge": bridge, "memory_mib": 1024, "disk_gib": 4, "vms": vms}))
    return plan


def _copy(tmp_path: Path, breakage: tuple[str, str] | None = None) -> Path:
    folder = tmp_path / "vf"
    folder.mkdir(exist_ok=True)
    text = VAGRANTFILE.read_text()
    if breakage:
        assert breakage[0] in text
        text = text.replace(breakage[0], breakage[1], 1)
    (folder / "Vagrantfile").write_text(text)
    return folder


@pytest.fixture
def bridge() -> Iterator[str]:
    """An empty bridge (no address, down) standing for the lab's: vagrant-libvirt asks
    libvirt whether the device exists."""
    name = f"mcbvt{secrets.token_hex(3)}"
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], check=False)


def test_libvirt_block_validates_with_a_plan_and_names_a_missing_bridge(
    tmp_path: Path, bridge: str
) -> None:
    folder = _copy(tmp_path)
    good = _validate(folder, "libvirt", METALCTL_VAGRANT_PLAN=str(_plan(tmp_path, bridge)))
    assert good.returncode == 0, good.stdout + good.stderr
    bad = _validate(folder, "libvirt", METALCTL_VAGRANT_PLAN=str(_plan(tmp_path, "mcbnothere0")))
    assert bad.returncode != 0
    assert "mcbnothere0" in bad.stdout + bad.stderr


def test_libvirt_block_without_a_plan_uses_the_environment(tmp_path: Path, bridge: str) -> None:
    folder = _copy(tmp_path)
    done = _validate(
        folder, "libvirt", METALCTL_NODES="3", METALCTL_UEFI="1", METALCTL_BRIDGE=bridge
    )
    assert done.returncode == 0, done.stdout + done.stderr
    broken = _copy(tmp_path, ("lv.cpus = 1", "lv.cpus = 1\n        lv.no_such_option = 1"))
    wrong = _validate(broken, "libvirt", METALCTL_BRIDGE=bridge)
    assert wrong.returncode != 0 and "no_such_option" in wrong.stdout + wrong.stderr


def test_virtualbox_block_validates(tmp_path: Path) -> None:
    stand_in = tmp_path / "bin" / "VBoxManage"  # a stand-in, not VirtualBox
    stand_in.parent.mkdir()
    stand_in.write_text('#!/bin/sh\n[ "$1" = --version ] && echo 7.0.12r159484\nexit 0\n')
    stand_in.chmod(0o755)
    path = f"{stand_in.parent}:{os.environ['PATH']}"
    plan = str(_plan(tmp_path, "lo"))
    good = _validate(_copy(tmp_path), "virtualbox", PATH=path, METALCTL_VAGRANT_PLAN=plan)
    assert good.returncode == 0, good.stdout + good.stderr
    broken = _copy(tmp_path, ("vb.cpus = 1", "vb.cpus = 1\n        vb.no_such_option = 1"))
    wrong = _validate(broken, "virtualbox", PATH=path, METALCTL_VAGRANT_PLAN=plan)
    assert wrong.returncode != 0 and "no_such_option" in wrong.stdout + wrong.stderr
