"""Bare metal by PXE on QEMU VMs, end to end, as a user runs it:

    metalctl lab up --name N --vms 2 --uefi 1    blank VMs PXE-boot and are discovered
    metalctl provision --cluster N               the agent writes Debian 12, reboot, ready

(A power-cycle check of the UEFI VM timed out once in CI after 300 s and is out until it
is understood: see the issue 9 closing note.)

One BIOS (SeaBIOS + iPXE ROM) and one UEFI (OVMF firmware PXE -> TFTP snponly.efi ->
iPXE) VM; the images are built once and cached (/var/cache/metalctl).
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from metalctl.sshkeys import ssh_argv
from tests.cli import metalctl
from tests.e2e.conftest import make_home

pytestmark = pytest.mark.e2e


def _ssh(home: Path, address: str, *command: str) -> subprocess.CompletedProcess[str]:
    argv = ssh_argv(address, *command, key=home / "ssh" / "id_ed25519")
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def vm_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, dict]]:
    home = make_home(tmp_path_factory.mktemp("vmlab"))
    name = f"vml{secrets.token_hex(2)}"
    try:
        up = metalctl(
            "lab", "up", "--name", name, "--vms", "2", "--uefi", "1", "-o", "json",
            home=home, timeout=1800,
        )  # fmt: skip
        assert up.returncode == 0, up.stderr[-3000:]
        yield home, name, json.loads(up.stdout)
    finally:
        down = metalctl("lab", "down", "--name", name, home=home, timeout=300)
        assert down.returncode == 0, down.stderr


def _machines(home: Path) -> dict[str, dict]:
    listed = metalctl("machines", "list", "-o", "json", home=home)
    assert listed.returncode == 0, listed.stderr
    return {m["primary_mac"]: m for m in json.loads(listed.stdout)}


def test_blank_vms_are_discovered_with_their_facts(vm_lab: tuple[Path, str, dict]) -> None:
    home, _name, up = vm_lab
    machines = _machines(home)
    for row in up["nodes"]:
        machine = machines[row["mac"]]
        assert machine["state"] == "enrolled" and machine["node"] == row["name"]
        assert machine["boot_mode"] == row["firmware"]
        assert machine["disks"] == "vda 4096M"
        assert 900 <= machine["memory_mib"] <= 1024
        assert machine["cpus"] == 1
    shown = metalctl("machines", "show", up["nodes"][0]["mac"], "-o", "json", home=home)
    facts = json.loads(shown.stdout)["facts"]
    assert facts["dmi"]["serial"].startswith("MCVM-")
    assert [n["mac"] for n in facts["nics"]] == [up["nodes"][0]["mac"]]


def test_provision_installs_debian_and_the_nodes_are_ready(
    vm_lab: tuple[Path, str, dict],
) -> None:
    home, name, up = vm_lab
    done = metalctl("provision", "--cluster", name, "-o", "json", home=home, timeout=2400)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    states = {r["node"]: r["state"] for r in json.loads(done.stdout)}
    assert states == {row["name"]: "ready" for row in up["nodes"]}
    for row in up["nodes"]:
        result = _ssh(
            home, row["address"], "hostname; test -d /sys/firmware/efi && echo uefi; ip route"
        )
        assert result.returncode == 0, result.stderr
        lines = result.stdout.split("\n")
        assert lines[0] == row["name"]
        assert ("uefi" in lines) == (row["firmware"] == "uefi")
        # The provisioning network has no way out: no default route on the node.
        assert "default" not in result.stdout
    for row in up["nodes"]:
        assert _machines(home)[row["mac"]]["state"] == "provisioned"
