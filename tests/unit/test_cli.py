from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.cli import metalctl
from tests.conftest import GOOD_SPEC

BAD_SPECS = {
    "even managers": (
        GOOD_SPEC.replace("managers: [n1, n2, n3]", "managers: [n1, n2]"),
        "spec.swarm.managers",
    ),
    "duplicate name": (GOOD_SPEC.replace("name: n4", "name: n3"), "spec.nodes.3.name"),
    "duplicate address": (GOOD_SPEC.replace("192.0.2.14", "192.0.2.13"), "spec.nodes.3.address"),
    "master not manager": (GOOD_SPEC.replace("master: n1", "master: n4"), "spec.swarm.master"),
    "unknown key": (
        GOOD_SPEC.replace("provisioner: static", "provisioner: static\n  flavour: x"),
        "spec.flavour",
    ),
    "malformed yaml": (GOOD_SPEC.replace("nodes:", "nodes: [", 1), "malformed YAML"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_deploy_bad_spec_exits_nonzero_and_store_unchanged(case: str, tmp_path: Path) -> None:
    text, field = BAD_SPECS[case]
    home = tmp_path / "home"
    good = tmp_path / "good.yaml"
    good.write_text(GOOD_SPEC.replace("name: rack1", "name: other"))
    # Put something in the store first, to check a bad spec leaves it exactly as it was.
    assert metalctl("swarm", "env", "-f", str(good), home=home).returncode == 0
    db_before = metalctl("nodes", "list", "-o", "json", home=home).stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    proc = metalctl("deploy", "swarm", "-f", str(bad), home=home)
    assert proc.returncode == 3, proc.stderr
    assert field in proc.stderr
    assert metalctl("nodes", "list", "-o", "json", home=home).stdout == db_before
    assert not (home / "clusters" / "rack1").exists()


def test_nodes_list_and_show(tmp_path: Path) -> None:
    home = tmp_path / "home"
    spec = tmp_path / "c.yaml"
    spec.write_text(GOOD_SPEC)
    env = metalctl("swarm", "env", "-f", str(spec), home=home)
    assert "export DOCKER_HOST=tcp://192.0.2.11:2376" in env.stdout
    assert "DOCKER_TLS_VERIFY=1" in env.stdout
    nodes = json.loads(metalctl("nodes", "list", "-o", "json", home=home).stdout)
    assert {(n["name"], n["role"], n["state"]) for n in nodes} >= {
        ("n1", "manager", "ready"),
        ("n4", "worker", "ready"),
    }
    shown = json.loads(metalctl("nodes", "show", "n3", "-o", "json", home=home).stdout)
    assert shown["labels"] == {"rack": "r1"}
    missing = metalctl("nodes", "show", "nope", home=home)
    assert missing.returncode == 4 and "no node named 'nope'" in missing.stderr
    stored = yaml.safe_load((home / "clusters" / "rack1" / "cluster.yaml").read_text())
    assert stored["kind"] == "Cluster"


def test_unknown_cluster_and_usage_errors(tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc = metalctl("deploy", "swarm", "--cluster", "ghost", home=home)
    assert proc.returncode == 4 and "no cluster named 'ghost'" in proc.stderr
    proc = metalctl("deploy", "swarm", home=home)
    assert proc.returncode == 2 and "--cluster" in proc.stderr


def test_help_explains_commands(tmp_path: Path) -> None:
    out = metalctl("--help", home=tmp_path).stdout
    for word in ("lab", "deploy", "swarm", "nodes", "events"):
        assert word in out
    assert "mutual TLS" in metalctl("deploy", "swarm", "--help", home=tmp_path).stdout


def test_membership_commands_refuse_bad_input_before_touching_anything(tmp_path: Path) -> None:
    home = tmp_path / "home"
    spec = tmp_path / "c.yaml"
    spec.write_text(GOOD_SPEC)
    assert metalctl("swarm", "env", "-f", str(spec), home=home).returncode == 0
    before = metalctl("events", "-c", "rack1", "-o", "json", home=home).stdout
    ghost = metalctl("nodes", "add", "-c", "ghost", home=home)
    assert ghost.returncode == 4 and "no cluster named 'ghost'" in ghost.stderr
    no_name = metalctl("nodes", "add", "-c", "rack1", home=home)
    assert no_name.returncode == 2 and "does not create machines" in no_name.stderr
    master = metalctl("nodes", "remove", "n1", "-c", "rack1", home=home)
    assert master.returncode == 5 and "master" in master.stderr
    not_active = metalctl("nodes", "remove", "n4", "-c", "rack1", home=home)
    assert not_active.returncode == 5 and "'ready'" in not_active.stderr
    agent = metalctl("swarm", "reconcile", "-c", "rack1", "--agent", "n9", home=home)
    assert agent.returncode == 2 and "no such node" in agent.stderr
    assert metalctl("events", "-c", "rack1", "-o", "json", home=home).stdout == before
