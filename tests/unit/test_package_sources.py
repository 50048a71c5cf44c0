"""spec.packages: where the nodes' package managers get packages, checked in the spec and
handed to the roles through the inventory (issue 12)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from metalctl.deploy.inventory import ConsulSource, render_inventory
from metalctl.errors import SpecError
from metalctl.paths import ClusterPaths
from metalctl.spec import parse_spec
from tests.conftest import GOOD_SPEC


def _with_packages(packages: dict[str, Any]) -> str:
    data = yaml.safe_load(GOOD_SPEC)
    data["spec"]["packages"] = packages
    return yaml.safe_dump(data)


def _group_vars(packages: dict[str, Any] | None, tmp_path: Path) -> dict[str, Any]:
    text = _with_packages(packages) if packages is not None else GOOD_SPEC
    spec = parse_spec(text)
    inventory = render_inventory(
        spec, ClusterPaths(tmp_path / "c"), tmp_path / "key", ConsulSource(src=tmp_path / "x")
    )
    return dict(inventory["all"]["vars"])


def test_no_packages_section_leaves_the_nodes_own_sources(tmp_path: Path) -> None:
    found = _group_vars(None, tmp_path)
    assert found["ready_state_apt_proxy"] == ""
    assert found["ready_state_el_mirror"] == ""
    assert "docker_dnf_repos" not in found  # the role's default: the node's own repositories
    assert "docker_ce_repo_baseurl" not in found


def test_apt_proxy_reaches_ready_state(tmp_path: Path) -> None:
    found = _group_vars({"aptProxy": "http://172.30.0.1:3142"}, tmp_path)
    assert found["ready_state_apt_proxy"] == "http://172.30.0.1:3142"


def test_el_mirrors_become_repositories_and_the_only_ones_dnf_uses(tmp_path: Path) -> None:
    found = _group_vars(
        {
            "elMirror": "http://mirror.example/rocky/9/",
            "dockerCeMirror": "http://mirror.example/docker-ce/linux/centos",
        },
        tmp_path,
    )
    assert found["ready_state_el_mirror"] == "http://mirror.example/rocky/9"
    assert found["docker_ce_repo_baseurl"] == (
        "http://mirror.example/docker-ce/linux/centos/$releasever/$basearch/stable"
    )
    assert found["docker_ce_repo_gpgkey"] == "http://mirror.example/docker-ce/linux/centos/gpg"
    # The ids ready_state gives the mirror's repositories, plus Docker CE's own.
    assert found["docker_dnf_repos"] == [
        "metalctl-baseos",
        "metalctl-appstream",
        "docker-ce-stable",
    ]
    tasks = Path("roles/ready_state/tasks/RedHat.yml").read_text()
    assert 'name: "metalctl-{{ item | lower }}"' in tasks and "[BaseOS, AppStream]" in tasks


@pytest.mark.parametrize(
    ("packages", "field", "words"),
    [
        ({"aptProxy": "https://cache:3142"}, "spec.packages.aptProxy", "http://HOST:PORT"),
        ({"aptProxy": 'http://cache:3142";evil'}, "spec.packages.aptProxy", "apt proxy"),
        ({"aptProxy": "http://cache:99999"}, "spec.packages.aptProxy", "apt proxy"),
        ({"aptProxy": "http://cache:3142/path"}, "spec.packages.aptProxy", "apt proxy"),
        ({"elMirror": "ftp://mirror/rocky/9"}, "spec.packages.elMirror", "http"),
        ({"dockerCeMirror": "http://m/docker"}, "spec.packages.dockerCeMirror", "elMirror"),
        ({"yumProxy": "http://m:3128"}, "spec.packages.yumProxy", ""),
    ],
)
def test_bad_package_sources_are_refused_naming_the_field(
    packages: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(_with_packages(packages))
    problems = dict(caught.value.problems)
    assert field in problems, caught.value.problems
    assert words in problems[field]
