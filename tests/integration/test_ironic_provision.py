"""The ironic provisioner against a real standalone Ironic (fake-hardware), through the
metalctl CLI as a user runs it. The deployed "OS" of each node is a stand-in that only
answers SSH banners (tests/integration/ssh_standin.py): fake-hardware deploys nothing."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import REPO, metalctl
from tests.integration.ironic_support import (
    IronicServer,
    fake_node,
    ironic_spec,
    standalone_ironic,
)
from tests.integration.ssh_standin import ssh_standins


@pytest.fixture
def ironic(tmp_path: Path) -> Iterator[IronicServer]:
    with standalone_ironic(tmp_path / "ironic") as server:
        yield server


def _json(result: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    assert result.returncode == 0, result.stderr[-4000:]
    data: list[dict[str, object]] = json.loads(result.stdout)
    return data


def _states(home: Path, cluster: str) -> dict[str, tuple[str, str | None]]:
    rows = _json(metalctl("nodes", "list", "-c", cluster, "-o", "json", home=home))
    return {str(r["name"]): (str(r["state"]), r.get("last_error")) for r in rows}  # type: ignore[misc]


def _events(home: Path, cluster: str) -> list[dict[str, object]]:
    return _json(metalctl("events", "-c", cluster, "--limit", "100000", "-o", "json", home=home))


def _ironic_nodes(server: IronicServer) -> dict[str, dict[str, object]]:
    """Ironic's view, from its database (the API masks the config drive)."""
    db = sqlite3.connect(server.db)
    try:
        rows = db.execute(
            "SELECT name, provision_state, retired, last_error, instance_info FROM nodes"
        ).fetchall()
    finally:
        db.close()
    return {
        name: {
            "state": state,
            "retired": bool(retired),
            "last_error": error,
            "instance_info": json.loads(info or "{}"),
        }
        for name, state, retired, error, info in rows
    }


def _ironic_port_macs(server: IronicServer) -> list[str]:
    db = sqlite3.connect(server.db)
    try:
        return [row[0] for row in db.execute("SELECT address FROM ports")]
    finally:
        db.close()


def _writes(server: IronicServer) -> list[tuple[str, str, int]]:
    return [c for c in server.api_calls() if c[0] != "GET"]


def test_fifty_nodes_to_active_with_config_drives_rerun_changes_nothing_then_retired(
    ironic: IronicServer, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    spec = tmp_path / "rack.yaml"
    with ssh_standins(50) as standins:
        nodes = [fake_node(i + 1, a, standins.port) for i, a in enumerate(standins.addresses)]
        names = [str(n["name"]) for n in nodes]
        spec.write_text(ironic_spec("rack", ironic.url, nodes))
        results = _json(
            metalctl("provision", "-f", str(spec), "--parallel", "10", "-o", "json", home=home)
        )
        assert {r["node"]: r["state"] for r in results} == dict.fromkeys(names, "ready")

        key = (home / "ssh" / "id_ed25519.pub").read_text().strip()
        seen = _ironic_nodes(ironic)
        assert {n: s["state"] for n, s in seen.items()} == dict.fromkeys(names, "active")
        for name, node in seen.items():
            info = node["instance_info"]
            assert isinstance(info, dict)
            drive = info["configdrive"]
            assert drive["meta_data"]["hostname"] == name
            assert drive["meta_data"]["public_keys"] == {"metalctl": key}
            assert f"hostname: {name}\n" in drive["user_data"]
            assert info["image_source"].endswith("/debian-12.raw")
        assert sorted(_ironic_port_macs(ironic)) == sorted(str(n["macs"][0]) for n in nodes)  # type: ignore[index]

        # A re-run: every node is ready, so nothing is done, in metalctl or in Ironic.
        events, writes = len(_events(home, "rack")), len(_writes(ironic))
        again = _json(
            metalctl("provision", "-c", "rack", "--parallel", "10", "-o", "json", home=home)
        )
        assert again == []
        assert len(_events(home, "rack")) == events
        assert len(_writes(ironic)) == writes
        # Named explicitly, an active node is only checked (no Ironic action).
        named = _json(metalctl("provision", "-c", "rack", "n07", "-o", "json", home=home))
        assert named == [{"node": "n07", "state": "ready", "error": None}]
        assert len(_writes(ironic)) == writes

    released = _json(
        metalctl("release", *names, "-c", "rack", "--parallel", "10", "-o", "json", home=home)
    )
    assert {r["node"]: r["state"] for r in released} == dict.fromkeys(names, "retired")
    assert {n: s for n, (s, _) in _states(home, "rack").items()} == dict.fromkeys(names, "retired")
    seen = _ironic_nodes(ironic)
    assert {n: (s["state"], s["retired"]) for n, s in seen.items()} == dict.fromkeys(
        names, ("manageable", True)
    )
    undeploys = [c for c in ironic.api_calls() if c[0] == "PUT" and c[1].endswith("/provision")]
    assert len(undeploys) >= 50 * 4  # manage, provide, active, then deleted for each


def test_failures_are_ironic_words_and_the_others_succeed(
    ironic: IronicServer, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    spec = tmp_path / "rack.yaml"
    with ssh_standins(5) as standins:
        a = standins.addresses
        nodes = [fake_node(i + 1, a[i], standins.port) for i in range(3)]
        # Ironic's 'ramdisk' deploy needs a kernel and ramdisk: its validation refuses.
        nodes.append(
            fake_node(
                4,
                a[3],
                standins.port,
                bmc={"driver": "fake-hardware", "interfaces": {"deploy": "ramdisk"}},
            )
        )
        # The 'direct' deploy fetches the image, which is not there: the deploy fails.
        nodes.append(
            fake_node(
                5,
                a[4],
                standins.port,
                bmc={"driver": "fake-hardware", "interfaces": {"deploy": "direct"}},
            )
        )
        spec.write_text(ironic_spec("rack", ironic.url, nodes))
        result = metalctl("provision", "-f", str(spec), "--parallel", "5", "-o", "json", home=home)
    assert result.returncode == 6, result.stderr[-3000:]
    assert "2 node(s) failed" in result.stderr
    states = _states(home, "rack")
    assert {n: s for n, (s, _) in states.items()} == {
        "n01": "ready", "n02": "ready", "n03": "ready", "n04": "failed", "n05": "failed",
    }  # fmt: skip
    seen = _ironic_nodes(ironic)
    assert "validation for deploy failed" in str(states["n04"][1])
    assert "deploy:" in str(states["n04"][1])
    assert seen["n04"]["state"] == "available"  # refused before any deploy
    assert seen["n05"]["state"] == "deploy failed"
    ironic_words = str(seen["n05"]["last_error"])
    assert "Validation of image href" in ironic_words
    assert ironic_words in str(states["n05"][1])


def test_ironic_stopped_mid_run_is_a_clear_error_and_a_rerun_completes(
    ironic: IronicServer, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    spec = tmp_path / "rack.yaml"
    with ssh_standins(12) as standins:
        nodes = [fake_node(i + 1, a, standins.port) for i, a in enumerate(standins.addresses)]
        spec.write_text(ironic_spec("rack", ironic.url, nodes))
        env = {"METALCTL_HOME": str(home), "PYTHONPATH": REPO, "PATH": "/usr/bin:/bin"}
        run = subprocess.Popen(
            [sys.executable, "-m", "metalctl", "provision", "-f", str(spec), "--parallel", "2"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        try:
            _wait_for_an_active_node(ironic)
            ironic.stop()
            _, stderr = run.communicate(timeout=120)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
        assert run.returncode == 6, stderr[-3000:]
        assert f"Ironic at {ironic.url} is unreachable" in stderr
        states = _states(home, "rack")
        failed = [n for n, (s, _) in states.items() if s == "failed"]
        assert failed, states
        assert all("unreachable" in str(states[n][1]) for n in failed)
        assert set(states.values()) <= {("failed", states[n][1]) for n in failed} | {
            ("ready", None)
        }

        ironic.start()  # same port, same database: where the nodes were left
        results = _json(
            metalctl("provision", "-c", "rack", "--parallel", "4", "-o", "json", home=home)
        )
        assert {r["node"] for r in results} == set(failed)
        assert {n: s for n, (s, _) in _states(home, "rack").items()} == {
            str(n["name"]): "ready" for n in nodes
        }
    assert {s["state"] for s in _ironic_nodes(ironic).values()} == {"active"}


def _wait_for_an_active_node(server: IronicServer) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if "active" in {str(n["state"]) for n in _ironic_nodes(server).values()}:
            return
        time.sleep(0.1)
    raise AssertionError("no node became active within 120 s")
