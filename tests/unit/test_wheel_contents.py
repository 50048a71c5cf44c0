"""The wheel ships roles/ and workloads/ as metalctl/share/ (setup.py), and project_root() finds them.

Building the wheel takes a few seconds (pip builds in an isolated env with setuptools from
the pip cache); the e2e test test_wheel_install.py deploys from such a wheel.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from metalctl import paths

CHECKOUT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(CHECKOUT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("metalctl-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def test_wheel_ships_roles_and_workloads(wheel_names: set[str]) -> None:
    assert "metalctl/share/roles/docker/tasks/main.yml" in wheel_names
    assert "metalctl/share/workloads/swarm/workload.yaml" in wheel_names


def test_wheel_ships_every_file_once(wheel_names: set[str]) -> None:
    """Every role and workload file, and no second copy through workloads/swarm/roles."""
    expected = {
        f"metalctl/share/{path.relative_to(CHECKOUT).as_posix()}"
        for top in ("roles", "workloads")
        for path in (CHECKOUT / top).rglob("*")
        if path.is_file()
        and not any(p.is_symlink() for p in path.parents)
        and "__pycache__" not in path.parts
    }
    shipped = {name for name in wheel_names if name.startswith("metalctl/share/")}
    assert shipped == expected


def test_project_root_prefers_metalctl_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METALCTL_SHARE", str(tmp_path))
    assert paths.project_root() == tmp_path


def test_project_root_is_the_source_tree_without_a_shipped_share(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("METALCTL_SHARE", raising=False)
    # Tests run from the checkout (editable install or PYTHONPATH): no metalctl/share there.
    assert paths.project_root() == CHECKOUT
    assert (paths.project_root() / "roles" / "docker" / "tasks" / "main.yml").is_file()
