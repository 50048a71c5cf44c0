"""The lab always uses the local Docker engine, never the one DOCKER_HOST points at.

After `eval "$(metalctl swarm env ...)"` (as the README says) DOCKER_HOST names the swarm
master; `lab down` in that shell used to talk to it, fail, and leave the lab behind.
Needs the local dockerd (`make test` starts it); DOCKER_HOST points at a closed loopback port.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.cli import metalctl

# What `swarm env` exports, aimed at nothing: a closed port on loopback.
SWARM_SHELL = {
    "DOCKER_HOST": "tcp://127.0.0.1:9",
    "DOCKER_TLS_VERIFY": "1",
    "DOCKER_CERT_PATH": "/nonexistent",
}


@pytest.fixture(autouse=True)
def _local_docker() -> None:
    if subprocess.run(["docker", "version"], capture_output=True).returncode != 0:
        pytest.fail("no local dockerd: run the tests with 'make test' (it starts one)")


def test_lab_down_uses_the_local_engine_after_swarm_env(tmp_path: Path) -> None:
    proc = metalctl("lab", "down", "--name", "ghostlab", home=tmp_path, **SWARM_SHELL)
    assert proc.returncode == 0, proc.stderr
    assert "nothing to remove" in proc.stdout


def test_lab_status_uses_the_local_engine_after_swarm_env(tmp_path: Path) -> None:
    proc = metalctl("lab", "status", "--name", "ghostlab", home=tmp_path, **SWARM_SHELL)
    assert proc.returncode == 4, proc.stderr  # the local engine answered: no such lab
    assert "no lab named 'ghostlab'" in proc.stderr


def test_an_explicit_lab_engine_is_used_and_named_when_unreachable(tmp_path: Path) -> None:
    proc = metalctl(
        "lab",
        "status",
        "--name",
        "ghostlab",
        home=tmp_path,
        METALCTL_LAB_DOCKER_HOST="tcp://127.0.0.1:9",
    )
    assert proc.returncode == 6
    assert "tcp://127.0.0.1:9" in proc.stderr and "METALCTL_LAB_DOCKER_HOST" in proc.stderr
