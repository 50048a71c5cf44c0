"""The constraints a deploy enforces are the ones in workload.yaml, not copies in code."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from metalctl.deploy.workload import load_workload
from metalctl.errors import SpecError
from metalctl.paths import project_root
from metalctl.spec import parse_spec
from tests.conftest import GOOD_SPEC


def workload_with(tmp_path: Path, constraints: str) -> Path:
    """A copy of the shipped swarm workload whose constraints say something else."""
    root = tmp_path / "share"
    shutil.copytree(
        project_root() / "workloads" / "swarm", root / "workloads" / "swarm", symlinks=True
    )
    (root / "roles").symlink_to(project_root() / "roles")
    yaml_path = root / "workloads" / "swarm" / "workload.yaml"
    text = yaml_path.read_text()
    yaml_path.write_text(text[: text.index("constraints:")] + constraints)
    return root


def test_the_shipped_swarm_workload_refuses_an_even_manager_count() -> None:
    spec = parse_spec(GOOD_SPEC.replace("managers: [n1, n2, n3]", "managers: [n1, n2, n3, n4]"))
    with pytest.raises(SpecError) as err:
        load_workload("swarm").check(spec)
    assert err.value.problems[0][0] == "spec.swarm.managers"
    assert "odd" in err.value.problems[0][1] and "swarm_managers" in err.value.problems[0][1]


def test_the_shipped_swarm_workload_refuses_an_even_consul_server_count() -> None:
    spec = parse_spec(GOOD_SPEC.replace("servers: [n1, n2, n3]", "servers: [n1, n2]"))
    with pytest.raises(SpecError, match=r"spec.consul.servers: needs an odd number"):
        load_workload("swarm").check(spec)


def test_the_shipped_swarm_workload_refuses_more_than_seven_managers() -> None:
    spec = parse_spec(
        GOOD_SPEC.replace(
            "    - {name: n4, address: 192.0.2.14}\n",
            "".join(f"    - {{name: m{i}, address: 192.0.2.{100 + i}}}\n" for i in range(9)),
        )
        .replace("managers: [n1, n2, n3]", f"managers: [{', '.join(f'm{i}' for i in range(9))}]")
        .replace("master: n1", "master: m0")
    )
    with pytest.raises(SpecError, match=r"spec.swarm.managers: at most 7 are supported, got 9"):
        load_workload("swarm").check(spec)


def test_a_constraint_changed_in_workload_yaml_changes_the_verdict(tmp_path: Path) -> None:
    spec = parse_spec(GOOD_SPEC)  # 3 managers, 3 Consul servers
    load_workload("swarm").check(spec)  # fine for the shipped workload
    root = workload_with(
        tmp_path, "constraints:\n  swarm_managers: {field: spec.swarm.managers, max: 1}\n"
    )
    with pytest.raises(SpecError, match=r"spec.swarm.managers: at most 1 are supported, got 3"):
        load_workload("swarm", root).check(spec)


@pytest.mark.parametrize(
    "constraints",
    [
        "constraints: [1, 2]\n",
        "constraints:\n  g: {min: 1}\n",
        "constraints:\n  g: {field: spec.swarm.managers, most: 3}\n",
        "constraints:\n  g: {field: spec.swarm.managers, min: '1'}\n",
        "constraints:\n  g: {field: spec.swarm.managers, odd: 'yes'}\n",
    ],
)
def test_malformed_constraints_name_the_workload_file(tmp_path: Path, constraints: str) -> None:
    root = workload_with(tmp_path, constraints)
    with pytest.raises(SpecError) as err:
        load_workload("swarm", root)
    assert "workload.yaml" in str(err.value) and "constraints" in str(err.value)
