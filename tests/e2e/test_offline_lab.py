"""An air-gapped lab (issue 12): nodes with no route out deploy the swarm from an image
preloaded with the workload's packages (`lab up --preload swarm --offline`)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from metalctl.provisioners.lab import network_name
from tests.e2e.conftest import Lab, deployed, swarm_node_rows

pytestmark = pytest.mark.e2e

INSTALL_TASKS = ("Install base packages (Debian)", "Install Docker from the Debian archive")


@pytest.fixture(scope="module")
def offline_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    flags = ("--preload", "swarm", "--offline")
    with deployed(tmp_path_factory.mktemp("offline"), 3, 3, lab_flags=flags) as lab:
        yield lab


def _iptables(*args: str) -> list[str]:
    return subprocess.run(
        ["iptables", *args], capture_output=True, text=True, check=True
    ).stdout.splitlines()


def test_the_nodes_have_no_route_out(offline_lab: Lab) -> None:
    """Asserted on the host's rules, without sending a packet anywhere: an internal Docker
    network, no masquerading for its subnet, and Docker's drop of anything that would leave
    it."""
    net = json.loads(
        subprocess.run(
            ["docker", "network", "inspect", network_name(offline_lab.name)],
            capture_output=True, text=True, check=True,
        ).stdout
    )[0]  # fmt: skip
    assert net["Internal"] is True
    subnet = net["IPAM"]["Config"][0]["Subnet"]
    bridge = "br-" + net["Id"][:12]
    nat = _iptables("-t", "nat", "-S", "POSTROUTING")
    assert not [r for r in nat if subnet in r and "MASQUERADE" in r], nat
    drops = _iptables("-S", "DOCKER-ISOLATION-STAGE-1")
    assert f"-A DOCKER-ISOLATION-STAGE-1 ! -d {subnet} -i {bridge} -j DROP" in drops, drops


def test_the_swarm_is_ready_and_apt_never_ran(offline_lab: Lab) -> None:
    assert swarm_node_rows(offline_lab.home, offline_lab.name) == sorted(
        [n, "Ready"] for n in offline_lab.node_names()
    )
    shown = json.loads(
        offline_lab.metalctl("runs", "show", "-c", offline_lab.name, "-o", "json").stdout
    )
    ran = [(t["host"], t["task"]) for t in shown["tasks"] if t["status"] != "skipped"]
    assert not [r for r in ran if r[1] in INSTALL_TASKS], ran
    checked = {
        t["host"]
        for t in shown["tasks"]
        if t["task"] == "Check which Docker packages are installed"
    }
    assert checked == set(offline_lab.node_names())


def test_second_deploy_changes_nothing(offline_lab: Lab) -> None:
    out = offline_lab.metalctl("deploy", "swarm", "-c", offline_lab.name, "-q", "-o", "json")
    changed = json.loads(out.stdout)["changed"]
    assert changed == {n: 0 for n in offline_lab.node_names()}
