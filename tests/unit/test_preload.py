"""`lab up --preload WORKLOAD --offline` (issue 12): what the image carries, how a lab
remembers it, and the refusals before anything is made."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from metalctl.deploy.workload import load_workload
from metalctl.errors import SpecError
from metalctl.paths import project_root
from metalctl.provisioners.lab import LabShape
from metalctl.provisioners.lab_image import Preload, image_tag, recipe_hash
from tests.cli import metalctl


def test_the_swarm_preload_carries_every_package_the_roles_check_for() -> None:
    """The roles skip apt only when all their packages are installed: a package missing
    from the preload list would send an offline node to an archive it cannot reach."""
    roles = project_root() / "roles"
    docker = yaml.safe_load((roles / "docker/defaults/main.yml").read_text())
    base = yaml.safe_load((roles / "ready_state/vars/main.yml").read_text())
    base_list = base["ready_state_base_packages"]  # "{{ [...] + ready_state_extra_packages }}"
    base_packages = yaml.safe_load(base_list[base_list.index("[") : base_list.index("]") + 1])
    preload = set(load_workload("swarm").preload_debian)
    assert set(docker["docker_debian_packages"]) <= preload
    assert set(base_packages) <= preload


@pytest.mark.parametrize(
    "preload",
    ["preload: [docker.io]\n", "preload: {debian: docker.io}\n", "preload: {rpm: [x]}\n",
     "preload: {debian: ['docker.io; rm -rf /']}\n"],
)  # fmt: skip
def test_a_malformed_preload_names_the_workload_file_and_field(
    tmp_path: Path, preload: str
) -> None:
    root = tmp_path / "share"
    shutil.copytree(project_root() / "workloads" / "swarm", root / "workloads" / "swarm")
    (root / "roles").symlink_to(project_root() / "roles")
    path = root / "workloads" / "swarm" / "workload.yaml"
    text = path.read_text()
    path.write_text(text[: text.index("preload:")] + preload)
    with pytest.raises(SpecError) as err:
        load_workload("swarm", root)
    assert "workload.yaml" in str(err.value) and "preload" in str(err.value)


def test_a_preloaded_image_is_its_own_tag_and_recipe() -> None:
    swarm = Preload("swarm", ("docker.io",))
    assert image_tag(None) != image_tag(swarm)
    assert recipe_hash("http://m") != recipe_hash("http://m", swarm)
    assert recipe_hash("http://m", swarm) != recipe_hash("http://m", Preload("swarm", ("x",)))


def test_the_lab_shape_survives_the_network_labels() -> None:
    """'nodes add' rebuilds the shape from the lab network's labels: same image, same net."""
    for shape in (
        LabShape(),
        LabShape(Preload("swarm", ("docker.io", "tzdata")), offline=True),
        LabShape(Preload("swarm", ("docker.io",)), offline=False),
        LabShape(offline=True, package_cache=True),
        LabShape(Preload("swarm", ("docker.io",)), package_cache=True),
    ):
        assert LabShape.from_labels(shape.labels()) == shape
    # A lab made before the flags existed has neither label: a plain lab.
    assert LabShape.from_labels({"metalctl.lab": "old"}) == LabShape()


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (("--offline",), 2, "--offline needs --preload WORKLOAD or --package-cache"),
        (("--preload", "nosuch"), 4, "no workload named 'nosuch'"),
        (("--vms", "1", "--preload", "swarm"), 2, "for container labs"),
        (("--vms", "1", "--package-cache"), 2, "for container labs"),
    ],
)
def test_lab_up_refuses_bad_flags_before_making_anything(
    tmp_path: Path, args: tuple[str, ...], code: int, text: str
) -> None:
    home = tmp_path / "home"
    proc = metalctl("lab", "up", "--name", "pl", *args, home=home)
    assert proc.returncode == code, proc.stderr
    assert text in proc.stderr
    assert metalctl("nodes", "list", "-o", "json", home=home).stdout.strip() == "[]"


def test_cache_fill_refuses_an_unknown_workload_before_touching_docker(tmp_path: Path) -> None:
    proc = metalctl(
        "cache", "fill", "--workload", "nosuch", home=tmp_path / "home",
        DOCKER_HOST="unix:///nonexistent.sock", METALCTL_CACHE=str(tmp_path / "cache"),
    )  # fmt: skip
    assert proc.returncode == 4, proc.stderr
    assert "no workload named 'nosuch'" in proc.stderr
    assert not (tmp_path / "cache").exists()
