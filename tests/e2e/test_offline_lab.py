"""Air-gapped labs (issue 12): nodes with no route out deploy the swarm, either from an
image preloaded with the workload's packages (`lab up --preload swarm --offline`) or
through the admin host's package cache, filled ahead (`metalctl cache fill`, then
`lab up --package-cache --offline`)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from metalctl.boot.package_cache import read_transfers, running_pid
from metalctl.provisioners import lab_cache
from metalctl.provisioners.lab import network_name
from tests.cli import metalctl
from tests.e2e.conftest import Lab, deployed, make_home, swarm_node_rows

pytestmark = pytest.mark.e2e

INSTALL_TASKS = ("Install base packages (Debian)", "Install Docker from the Debian archive")


@pytest.fixture(scope="module")
def offline_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    flags = ("--preload", "swarm", "--offline")
    with deployed(tmp_path_factory.mktemp("offline"), 3, 3, lab_flags=flags) as lab:
        yield lab


@pytest.fixture(scope="module")
def filled_cache(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`metalctl cache fill` into the host-wide cache (a later CI run finds it warm)."""
    home = make_home(tmp_path_factory.mktemp("fill"))
    out = metalctl("cache", "fill", "--workload", "swarm", "-o", "json", home=home, timeout=1200)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


@pytest.fixture(scope="module")
def cached_lab(
    tmp_path_factory: pytest.TempPathFactory, filled_cache: dict[str, Any]
) -> Iterator[Lab]:
    """Two nodes (no preload) with no route out, whose apt goes through the filled cache."""
    flags = ("--package-cache", "--offline")
    with deployed(tmp_path_factory.mktemp("cached"), 2, 1, lab_flags=flags) as lab:
        yield lab


def _network(lab: Lab) -> dict[str, Any]:
    return dict(
        json.loads(
            subprocess.run(
                ["docker", "network", "inspect", network_name(lab.name)],
                capture_output=True, text=True, check=True,
            ).stdout
        )[0]
    )  # fmt: skip


def _iptables(*args: str) -> list[str]:
    return subprocess.run(
        ["iptables", *args], capture_output=True, text=True, check=True
    ).stdout.splitlines()


@pytest.mark.parametrize("which", ["offline_lab", "cached_lab"])
def test_the_nodes_have_no_route_out(which: str, request: pytest.FixtureRequest) -> None:
    """Asserted on the host's rules, without sending a packet anywhere: an internal Docker
    network, no masquerading for its subnet, and Docker's drop of anything that would leave
    it."""
    net = _network(request.getfixturevalue(which))
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


def test_cache_fill_holds_the_workloads_packages(filled_cache: dict[str, Any]) -> None:
    """Whether this run fetched them or an earlier one did, the cache has them now."""
    cached = {p.name.split("_", 1)[0] for p in Path(filled_cache["cache_dir"]).rglob("*.deb")}
    assert {"docker.io", "python3-docker", "tzdata"} <= cached, sorted(cached)
    assert filled_cache["served_files"] > filled_cache["fetched_debs"] >= 0
    assert filled_cache["cache_bytes"] > 50 << 20  # docker.io alone is ~ 30 MiB


def test_cached_lab_deploys_from_the_filled_cache(cached_lab: Lab) -> None:
    """The roles installed the packages (not preloaded), every node through the cache, and
    the cache fetched no package from the archive: all came from the fill."""
    assert swarm_node_rows(cached_lab.home, cached_lab.name) == sorted(
        [n, "Ready"] for n in cached_lab.node_names()
    )
    shown = json.loads(
        cached_lab.metalctl("runs", "show", "-c", cached_lab.name, "-o", "json").stdout
    )
    installed = {
        t["host"]
        for t in shown["tasks"]
        if t["task"] == "Install Docker from the Debian archive" and t["status"] == "changed"
    }
    assert installed == set(cached_lab.node_names())
    layout = lab_cache.layout_for(_network(cached_lab)["Id"])
    assert running_pid(layout) is not None
    log = layout.transfer_log.read_text()
    for node in cached_lab.node_names():
        served = [line for line in log.splitlines() if f"|{cached_lab.address(node)}|" in line]
        assert [line for line in served if "/docker.io_" in line], node
    assert read_transfers(layout.transfer_log).fetched_debs == 0, log


def test_cached_lab_second_deploy_changes_nothing(cached_lab: Lab) -> None:
    out = cached_lab.metalctl("deploy", "swarm", "-c", cached_lab.name, "-q", "-o", "json")
    assert json.loads(out.stdout)["changed"] == {n: 0 for n in cached_lab.node_names()}


def test_a_second_lab_with_the_cache_is_refused_before_anything_is_made(
    cached_lab: Lab,
) -> None:
    """One daemon at a time uses the host-wide package directory."""
    other = f"{cached_lab.name}x"
    proc = cached_lab.metalctl("lab", "up", "--name", other, "--package-cache", check=False)
    assert proc.returncode == 5, proc.stderr
    assert f"in use by lab {cached_lab.name}" in proc.stderr
    made = subprocess.run(
        ["docker", "network", "ls", "-q", "--filter", f"name={network_name(other)}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert made.strip() == ""


def test_lab_down_stops_the_cache_and_keeps_the_packages(cached_lab: Lab) -> None:
    layout = lab_cache.layout_for(_network(cached_lab)["Id"])
    pid = running_pid(layout)
    assert pid is not None
    cached_lab.metalctl("lab", "down", "--name", cached_lab.name)
    assert running_pid(layout) is None
    cmdline = Path(f"/proc/{pid}/cmdline")
    assert not cmdline.exists() or not cmdline.read_bytes()  # gone, or a zombie awaiting init
    assert not layout.root.exists()
    assert any(lab_cache.packages_dir().rglob("docker.io_*.deb"))
