"""Two metalctl homes on one Docker (a CI run next to a demo) never touch each other's lab."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import lab_objects, make_home

pytestmark = pytest.mark.e2e


def metalctl(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, METALCTL_HOME=str(home))
    return subprocess.run(
        [sys.executable, "-m", "metalctl", *args], env=env, capture_output=True, text=True
    )


def test_same_lab_name_in_another_home_is_refused_and_left_alone(tmp_path: Path) -> None:
    mine, theirs = make_home(tmp_path / "a"), make_home(tmp_path / "b")
    name = f"e2eh{secrets.token_hex(2)}"
    try:
        up = metalctl(theirs, "lab", "up", "--name", name, "--nodes", "1", "--managers", "1")
        assert up.returncode == 0, up.stderr
        before = sorted(lab_objects(name))
        clash = metalctl(mine, "lab", "up", "--name", name, "--nodes", "1", "--managers", "1")
        assert clash.returncode == 5, clash.stderr
        assert "belongs to another metalctl home" in clash.stderr
        assert str(theirs.resolve()) in clash.stderr
        down = metalctl(mine, "lab", "down", "--name", name)
        assert down.returncode == 0, down.stderr
        assert "left alone" in down.stdout
        assert sorted(lab_objects(name)) == before  # nothing of theirs removed
        state = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Running}}", f"{name}-1"],
            capture_output=True,
            text=True,
        )
        assert state.stdout.strip() == "true"
    finally:
        metalctl(theirs, "lab", "down", "--name", name)
    assert lab_objects(name) == []
