"""Ironic path to a swarm, end to end, as a user runs it:

    metalctl lab up --name L --nodes 2 --managers 1   the machines' installed OS (stand-ins)
    a standalone Ironic on loopback (fake-hardware)   the BMCs and the deploy (stand-ins)
    metalctl deploy swarm -f rack.yaml                the spec says provision: true, so first
                                                      Ironic: enroll, manage, provide, deploy
                                                      with a config drive -> active; SSH at
                                                      each node's address: ready; then the
                                                      roles, over SSH with metalctl's key
    docker node ls (mutual TLS, swarm env)            every node Ready

Fake-hardware deploys nothing, so what answers at a node's address is a lab container: a
stand-in for the OS that Ironic would have written (same name, metalctl's key installed by
`lab up`, as the config drive would). The rack's spec (provisioner ironic, made-up MACs)
is its own cluster next to the lab's: the lab keeps its containers and `lab down`.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.cli import metalctl
from tests.e2e.conftest import Lab, lab_objects, make_home
from tests.integration.ironic_support import IronicServer, fake_node, ironic_spec, standalone_ironic

pytestmark = pytest.mark.e2e

NODES = 2


@pytest.fixture
def installed_os(tmp_path: Path) -> Iterator[tuple[Path, str, list[dict[str, str]]]]:
    """(home, lab name, [{name, address}]): lab containers standing in for the OS that
    Ironic installs; removed afterwards, also when the test fails."""
    home = make_home(tmp_path)
    lab = f"irl{secrets.token_hex(2)}"
    try:
        up = metalctl(
            "lab", "up", "--name", lab, "--nodes", str(NODES), "--managers", "1", "-o", "json",
            home=home, timeout=1800,
        )  # fmt: skip
        assert up.returncode == 0, up.stderr[-3000:]
        rows = json.loads(up.stdout)["nodes"]
        yield home, lab, [{"name": r["name"], "address": r["address"]} for r in rows]
    finally:
        down = metalctl("lab", "down", "--name", lab, home=home, timeout=300)
        assert down.returncode == 0, down.stderr
        assert lab_objects(lab) == []


@pytest.fixture
def ironic(tmp_path: Path) -> Iterator[IronicServer]:
    with standalone_ironic(tmp_path / "ironic") as server:
        yield server


def _ironic_nodes(server: IronicServer) -> dict[str, tuple[str, dict[str, object]]]:
    """{name: (provision_state, instance_info)} from Ironic's database (its API masks the
    config drive)."""
    db = sqlite3.connect(server.db)
    try:
        rows = db.execute("SELECT name, provision_state, instance_info FROM nodes").fetchall()
    finally:
        db.close()
    return {name: (state, json.loads(info or "{}")) for name, state, info in rows}


def _states_seen(home: Path, cluster: str) -> dict[str, list[str]]:
    """{node: every state it entered, in order}, from metalctl's event log."""
    out = metalctl("events", "-c", cluster, "-o", "json", home=home)
    assert out.returncode == 0, out.stderr
    seen: dict[str, list[str]] = {}
    for event in json.loads(out.stdout):
        if event["node"] and event["to_state"]:
            seen.setdefault(event["node"], []).append(event["to_state"])
    return seen


def test_one_deploy_takes_ironic_nodes_from_enrollment_to_a_ready_swarm(
    installed_os: tuple[Path, str, list[dict[str, str]]], ironic: IronicServer, tmp_path: Path
) -> None:
    home, lab, machines = installed_os
    rack = f"{lab}-rack"
    names = [m["name"] for m in machines]
    nodes = [fake_node(i, m["address"], 22, name=m["name"]) for i, m in enumerate(machines, 1)]
    body = yaml.safe_load(ironic_spec(rack, ironic.url, nodes))  # master: the first node
    body["spec"]["provision"] = True  # deploy provisions the nodes not yet ready first
    spec = tmp_path / "rack.yaml"
    spec.write_text(yaml.safe_dump(body, sort_keys=False))
    assert _ironic_nodes(ironic) == {}

    deploy = metalctl("deploy", "swarm", "-f", str(spec), "-o", "json", home=home, timeout=1800)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr[-4000:]

    # Provisioned through Ironic (enrolled, deployed with a config drive: active), ready
    # once SSH answered at the machine's address, and only then deployed.
    key = (home / "ssh" / "id_ed25519.pub").read_text().strip()
    seen = _ironic_nodes(ironic)
    assert {n: s for n, (s, _) in seen.items()} == dict.fromkeys(names, "active")
    for name, (_, info) in seen.items():
        drive = info["configdrive"]
        assert isinstance(drive, dict)
        assert drive["meta_data"]["hostname"] == name
        assert drive["meta_data"]["public_keys"] == {"metalctl": key}
    for m in machines:
        assert f"{m['name']}: active; waiting for SSH on {m['address']}:22" in deploy.stderr
    way = ["discovered", "provisioning", "ready", "deploying", "active"]
    assert _states_seen(home, rack) == {name: way for name in names}

    swarm = Lab(rack, home, dict(os.environ, METALCTL_HOME=str(home)), {})
    ls = swarm.docker_cli("node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}")
    assert ls.returncode == 0, ls.stderr
    rows = sorted(line.split() for line in ls.stdout.splitlines())
    assert [r[0] for r in rows] == sorted(names)
    assert all(r[1] == "Ready" for r in rows), rows
    assert [r[0] for r in rows if r[2:] == ["Leader"]] == [names[0]]
