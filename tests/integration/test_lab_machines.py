"""`metalctl power` and `metalctl provision` through the provisioner interface, on a real
one-node lab (a container with systemd and sshd) and on a static cluster."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import metalctl
from tests.conftest import GOOD_SPEC


def container_state(name: str) -> str:
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Status}}", name], capture_output=True, text=True
    )
    return out.stdout.strip()


def ssh_banner(address: str, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, 22), timeout=2) as sock:
                if sock.recv(8).startswith(b"SSH-"):
                    return True
        except OSError:
            time.sleep(0.5)
    return False


@pytest.fixture(scope="module")
def one_node_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    home = tmp_path_factory.mktemp("labpower") / "home"
    name = f"pw{secrets.token_hex(2)}"
    try:
        up = metalctl("lab", "up", "--name", name, "--nodes", "1", "--managers", "1", home=home)
        assert up.returncode == 0, up.stderr
        yield name, home
    finally:
        metalctl("lab", "down", "--name", name, home=home)


def test_power_off_then_provision_brings_a_lab_node_back_to_ready(
    one_node_lab: tuple[str, Path],
) -> None:
    name, home = one_node_lab
    node = f"{name}-1"
    address = json.loads(metalctl("nodes", "show", node, "-o", "json", home=home).stdout)["address"]

    off = metalctl("power", "off", node, "-c", name, home=home)
    assert off.returncode == 0, off.stderr
    assert container_state(node) == "exited"

    prov = metalctl("provision", "-c", name, "-o", "json", home=home)
    assert prov.returncode == 0, prov.stderr
    assert json.loads(prov.stdout) == [{"node": node, "state": "ready", "error": None}]
    assert container_state(node) == "running" and ssh_banner(address)
    kinds = [
        (e["from_state"], e["to_state"])
        for e in json.loads(metalctl("events", "-c", name, "-o", "json", home=home).stdout)
    ]
    assert kinds[-2:] == [("ready", "provisioning"), ("provisioning", "ready")]


def test_power_cycle_restarts_the_machine(one_node_lab: tuple[str, Path]) -> None:
    name, home = one_node_lab
    node = f"{name}-1"
    started = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.StartedAt}}", node], capture_output=True, text=True
    ).stdout
    cycle = metalctl("power", "cycle", node, "-c", name, home=home)
    assert cycle.returncode == 0, cycle.stderr
    again = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.StartedAt}}", node], capture_output=True, text=True
    ).stdout
    assert container_state(node) == "running" and again != started


def test_static_machines_have_no_power_control(tmp_path: Path) -> None:
    home = tmp_path / "home"
    spec = tmp_path / "rack.yaml"
    spec.write_text(GOOD_SPEC)
    assert metalctl("swarm", "env", "-f", str(spec), home=home).returncode == 0
    proc = metalctl("power", "off", "n2", "-c", "rack1", home=home)
    assert proc.returncode == 5
    assert "'static' has no power control" in proc.stderr


def test_provision_of_an_unknown_node_changes_nothing(one_node_lab: tuple[str, Path]) -> None:
    name, home = one_node_lab
    before = metalctl("events", "-c", name, "-o", "json", home=home).stdout
    proc = metalctl("provision", "-c", name, "ghost", home=home)
    assert proc.returncode == 4 and "no node named 'ghost'" in proc.stderr
    assert metalctl("events", "-c", name, "-o", "json", home=home).stdout == before
