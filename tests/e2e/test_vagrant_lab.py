"""The Vagrant test drive, end to end, as `make vagrant-demo` runs it (vagrant-libvirt,
QEMU domains of type 'qemu', i.e. TCG):

    metalctl lab up --vms 2 --uefi 1 --vagrant   bridge + boot service, `vagrant up` of two
                                                 blank VMs (BIOS, UEFI): discovered
    metalctl provision                           Debian 12 on their disks: ready
    metalctl deploy swarm; docker node ls        both Ready, over mutual TLS
    metalctl lab down                            no domain, volume, bridge or process left

libvirtd, vagrant and vagrant-libvirt come from `make setup` (scripts/setup-libvirt.sh).
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
from tests.e2e.conftest import make_home, swarm_node_rows

pytestmark = pytest.mark.e2e

POOL_DIR = Path("/var/lib/metalctl/vagrant-pool")


def _virsh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["virsh", "-c", "qemu:///system", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _domains(names: list[str]) -> dict[str, str]:
    """{domain: state} of the lab's libvirt domains that exist."""
    found = {}
    for name in names:
        state = _virsh("domstate", name)
        if state.returncode == 0:
            found[name] = state.stdout.strip()
    return found


@pytest.fixture(scope="module")
def vagrant_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, dict]]:
    home = make_home(tmp_path_factory.mktemp("vagrant"))
    name = f"vg{secrets.token_hex(2)}"
    try:
        up = metalctl(
            "lab", "up", "--name", name, "--vms", "2", "--uefi", "1", "--vagrant", "-o", "json",
            home=home, timeout=1800,
        )  # fmt: skip
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-3000:]
        yield home, name, json.loads(up.stdout)
    finally:
        if (home / "clusters" / name / "vmlab.json").exists():  # the last test removes it
            down = metalctl("lab", "down", "--name", name, home=home, timeout=600)
            assert down.returncode == 0, down.stderr


def test_vagrant_up_vms_are_libvirt_domains_and_discovered(
    vagrant_lab: tuple[Path, str, dict],
) -> None:
    home, name, up = vagrant_lab
    rows = up["nodes"]
    assert [r["firmware"] for r in rows] == ["bios", "uefi"]
    # Vagrant made them (the Vagrantfile's prefix); the discovery agent powered them off.
    domains = _domains([f"metalctl-{r['name']}" for r in rows])
    assert set(domains) == {f"metalctl-{r['name']}" for r in rows}, domains
    listed = metalctl("machines", "list", "-o", "json", home=home)
    machines = {m["primary_mac"]: m for m in json.loads(listed.stdout)}
    for row in rows:
        machine = machines[row["mac"]]
        assert machine["state"] == "enrolled" and machine["node"] == row["name"]
        assert machine["boot_mode"] == row["firmware"]
        assert machine["disks"] == "vda 4096M"
        assert machine["serial"].startswith("MCVM-")  # the plan's SMBIOS serial, via Vagrant
    env = metalctl("lab", "vagrant-env", "--name", name, home=home)
    assert env.returncode == 0, env.stderr
    assert f"export METALCTL_BRIDGE={_bridge(home, name)}" in env.stdout


def _bridge(home: Path, name: str) -> str:
    return str(json.loads((home / "clusters" / name / "vmlab.json").read_text())["bridge"])


def test_provision_and_deploy_swarm_on_the_vagrant_vms(
    vagrant_lab: tuple[Path, str, dict],
) -> None:
    home, name, up = vagrant_lab
    done = metalctl("provision", "--cluster", name, "-o", "json", home=home, timeout=2400)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    assert {r["node"]: r["state"] for r in json.loads(done.stdout)} == {
        row["name"]: "ready" for row in up["nodes"]
    }
    for row in up["nodes"]:
        argv = ssh_argv(row["address"], "hostname; test -d /sys/firmware/efi && echo uefi; true",
                        key=home / "ssh" / "id_ed25519")  # fmt: skip
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split()[0] == row["name"]
        assert ("uefi" in result.stdout.split()) == (row["firmware"] == "uefi")
    deployed = metalctl("deploy", "swarm", "--cluster", name, "-q", "-o", "json", home=home,
                        timeout=2400)  # fmt: skip
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    rows = swarm_node_rows(home, name)
    assert rows == sorted([row["name"], "Ready"] for row in up["nodes"])


def test_lab_down_leaves_no_vm_volume_network_or_process(
    vagrant_lab: tuple[Path, str, dict],
) -> None:
    home, name, up = vagrant_lab
    bridge = _bridge(home, name)
    runtime = Path(json.loads((home / "clusters" / name / "vmlab.json").read_text())["runtime"])
    domains = [f"metalctl-{r['name']}" for r in up["nodes"]]
    down = metalctl("lab", "down", "--name", name, home=home, timeout=600)
    assert down.returncode == 0, down.stderr
    assert _domains(domains) == {}
    assert not [p for p in POOL_DIR.iterdir() if any(p.name.startswith(d) for d in domains)]
    assert not runtime.exists()  # plan, .vagrant state, consoles, UEFI variables
    assert not Path(f"/sys/class/net/{bridge}").exists()
    procs = subprocess.run(["pgrep", "-af", bridge], capture_output=True, text=True, check=False)
    assert procs.stdout.strip() == "", procs.stdout  # boot service, dnsmasq
    listed = metalctl("machines", "list", "-o", "json", home=home)
    assert json.loads(listed.stdout) == []
