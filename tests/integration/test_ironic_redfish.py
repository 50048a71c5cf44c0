"""Ironic's redfish driver against sushy-tools' Redfish emulator (fake driver: the stand-in
for real BMCs; it keeps a power state and applies a change 1-11 s later, on purpose).
Power goes metalctl -> Ironic -> Redfish; a wrong password is refused naming node and BMC,
and the password never reaches metalctl's store, logs or events."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import requests
import yaml

from tests.cli import metalctl
from tests.integration.ironic_support import (
    IMAGE,
    FakeSystem,
    redfish_emulator,
    standalone_ironic,
)

PASSWORD = "s3cret-bmc-pass"


def _password_file(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "w") as f:
        f.write(text + "\n")
    return path


def _emulated_power(bmc: str, system: FakeSystem) -> str:
    reply = requests.get(
        f"{bmc}/redfish/v1/Systems/{system.uuid}", auth=("admin", PASSWORD), timeout=10
    )
    reply.raise_for_status()
    return str(reply.json()["PowerState"])


def test_power_through_ironic_redfish_and_a_wrong_password_names_node_and_bmc(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    systems = [FakeSystem(str(uuid.uuid4()), f"bmc-{i}", f"52:54:00:5f:00:0{i}") for i in (1, 2)]
    good = _password_file(tmp_path, "good", PASSWORD)
    wrong = _password_file(tmp_path, "wrong", "not-the-password")
    with (
        standalone_ironic(tmp_path / "ironic") as ironic,
        redfish_emulator(tmp_path / "sushy", systems, "admin", PASSWORD) as bmc,
    ):
        nodes = [
            {
                "name": f"r{i}",
                "address": f"198.51.100.{10 + i}",
                "macs": [s.mac],
                "bmc": {
                    "driver": "redfish",
                    "address": bmc,
                    "username": "admin",
                    "passwordFile": str(good if i == 1 else wrong),
                    "systemId": f"/redfish/v1/Systems/{s.uuid}",
                },
            }
            for i, s in enumerate(systems, start=1)
        ]
        spec = tmp_path / "rack.yaml"
        spec.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "metalctl/v1alpha1",
                    "kind": "Cluster",
                    "metadata": {"name": "redfish"},
                    "spec": {
                        "provisioner": "ironic",
                        "ironic": {"endpoint": ironic.url, "auth": "none"},
                        "image": IMAGE,
                        "nodes": nodes,
                        "swarm": {"master": "r1", "managers": ["r1"]},
                        "consul": {"servers": ["r1"]},
                    },
                }
            )
        )
        # -f registers the spec; Ironic learns of the node (and checks its BMC) on first use.
        on = metalctl("power", "on", "r1", "-f", str(spec), home=home, timeout=180)
        assert on.returncode == 0, on.stderr[-3000:]
        assert _emulated_power(bmc, systems[0]) == "On"
        off = metalctl("power", "off", "r1", "-c", "redfish", home=home, timeout=180)
        assert off.returncode == 0, off.stderr[-3000:]
        assert _emulated_power(bmc, systems[0]) == "Off"

        refused = metalctl("power", "on", "r2", "-c", "redfish", home=home, timeout=180)
        assert refused.returncode == 6, refused.stderr[-3000:]
        assert "node r2" in refused.stderr
        assert f"BMC redfish {bmc}" in refused.stderr
        assert "401" in refused.stderr or "nauthorized" in refused.stderr  # Ironic's words
        assert _emulated_power(bmc, systems[1]) == "Off"

        found = requests.get(
            f"{ironic.url}/v1/nodes/r1",
            headers={"X-OpenStack-Ironic-API-Version": "1.61"},
            timeout=10,
        ).json()
        assert found["driver"] == "redfish"
        assert found["driver_info"]["redfish_password"] == "******"  # Ironic masks it

    # The password is in no file metalctl wrote (inventory, logs, events, spec copies).
    for path in home.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path
    events = metalctl("events", "-c", "redfish", "-o", "json", home=home)
    assert PASSWORD not in events.stdout and json.loads(events.stdout)
