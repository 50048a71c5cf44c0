"""Bare metal by PXE on QEMU VMs, end to end, as a user runs it:

    metalctl lab up --name N --vms 2 --uefi 1    blank VMs PXE-boot and are discovered
    metalctl provision --cluster N               the agent writes Debian 12, reboot, ready
    metalctl power cycle --cluster N NODE        at once: the disk boots again, sshd included
    metalctl deploy swarm --cluster N            packages only from the admin host's cache
    docker node ls (mutual TLS, swarm env)       both VMs Ready

One BIOS (SeaBIOS + iPXE ROM) and one UEFI (OVMF firmware PXE -> TFTP snponly.efi ->
iPXE) VM; the images are built once and cached (/var/cache/metalctl).
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from metalctl.errors import WaitTimeout
from metalctl.sshkeys import ssh_argv
from metalctl.wait import wait_for
from tests.cli import metalctl
from tests.e2e.conftest import make_home, swarm_node_rows

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


def _console_tail(home: Path, cluster: str, node: str, lines: int = 60) -> str:
    """The VM's serial console, last lines: what a failed boot printed (in CI, the only trace
    left once the lab is torn down)."""
    try:
        record = json.loads((home / "clusters" / cluster / "vmlab.json").read_text())
        console = Path(record["runtime"]) / "vms" / node / "console.log"
        text = console.read_bytes()[-(64 << 10) :].decode(errors="replace")
    except (OSError, ValueError, KeyError) as exc:
        return f"(no console log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


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


def test_power_cycle_right_after_ready_boots_the_disk_again(
    vm_lab: tuple[Path, str, dict],
) -> None:
    """A power cut straight after 'ready' (the first boot's files are hardly a second old)
    must leave a node that boots its disk again with a working sshd (it once did not:
    empty host keys), and is not rediscovered or reinstalled."""
    home, name, up = vm_lab
    target = up["nodes"][-1]  # the UEFI VM: its firmware's way back to the disk is longest
    boot_id = _ssh(home, target["address"], "cat /proc/sys/kernel/random/boot_id").stdout
    assert boot_id, "the node was not reachable before the power cycle"
    cycled = metalctl("power", "cycle", "--cluster", name, target["name"], home=home)
    assert cycled.returncode == 0, cycled.stderr

    def booted_again() -> bool:
        now = _ssh(home, target["address"], "cat /proc/sys/kernel/random/boot_id")
        return now.returncode == 0 and now.stdout != boot_id

    try:
        wait_for(booted_again, what=f"{target['name']} to boot its disk again", timeout=600,
                 interval=3)  # fmt: skip
    except WaitTimeout as exc:
        pytest.fail(f"{exc}\nconsole:\n{_console_tail(home, name, target['name'])}")
    again = _ssh(home, target["address"], "hostname; systemctl is-active ssh")
    assert again.stdout.split() == [target["name"], "active"], again.stdout + again.stderr
    assert _machines(home)[target["mac"]]["state"] == "provisioned"


def test_deploy_swarm_on_the_vms_with_packages_from_the_admin_host(
    vm_lab: tuple[Path, str, dict],
) -> None:
    home, name, up = vm_lab
    for row in up["nodes"]:
        # No way out: the kernel has no route to an outside address (nothing is sent).
        routed = _ssh(home, row["address"], "ip route get 192.0.2.1")
        assert routed.returncode != 0 and "unreachable" in routed.stderr, routed
        # apt on the node goes through the admin host's package cache.
        proxy = _ssh(home, row["address"], "apt-config dump Acquire::http::Proxy")
        assert f"http://{urlparse(up['boot_service']).hostname}:" in proxy.stdout, proxy.stdout
    deployed = metalctl("deploy", "swarm", "--cluster", name, "-q", "-o", "json", home=home,
                        timeout=2400)  # fmt: skip
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    rows = swarm_node_rows(home, name)
    assert rows == sorted([row["name"], "Ready"] for row in up["nodes"])
