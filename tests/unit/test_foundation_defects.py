"""Defects found by the review of the foundation (issue 8), one test each, named after it.

Real SQLite store, real CLI processes, real sockets on loopback; no Docker needed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from metalctl import lifecycle
from metalctl.deploy.lock import deploy_lock
from metalctl.errors import ConflictError
from metalctl.paths import ClusterPaths
from metalctl.store import Store
from tests.cli import metalctl
from tests.conftest import GOOD_SPEC


@pytest.fixture
def ssh_port() -> Iterator[int]:
    """Something listening on loopback where a node's SSH port is expected."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        yield srv.getsockname()[1]


def one_node_spec(tmp_path: Path, port: int, name: str = "solo") -> Path:
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(
        textwrap.dedent(
            f"""\
            apiVersion: metalctl/v1alpha1
            kind: Cluster
            metadata: {{name: {name}}}
            spec:
              provisioner: static
              nodes:
                - {{name: {name}-1, address: 127.0.0.1, ssh: {{port: {port}}}}}
              swarm: {{master: {name}-1, managers: [{name}-1]}}
              consul:
                servers: [{name}-1]
                binary: {{url: "http://127.0.0.1:9/consul", sha256: "{"0" * 64}"}}
            """
        )
    )
    return spec


def test_lab_down_refuses_a_cluster_that_is_not_a_lab(tmp_path: Path) -> None:
    home = tmp_path / "home"
    spec = tmp_path / "rack.yaml"
    spec.write_text(GOOD_SPEC)
    assert metalctl("swarm", "env", "-f", str(spec), home=home).returncode == 0
    secret = ClusterPaths.for_cluster("rack1", home).secrets / "gossip.key"
    secret.parent.mkdir(parents=True)
    secret.write_text("precious\n")
    before = metalctl("nodes", "list", "-o", "json", home=home).stdout

    proc = metalctl("lab", "down", "--name", "rack1", home=home)

    assert proc.returncode == 5, proc.stderr
    assert "not a lab" in proc.stderr and "static" in proc.stderr
    assert secret.read_text() == "precious\n"
    assert metalctl("nodes", "list", "-o", "json", home=home).stdout == before


def test_deploy_strands_no_node_in_deploying_on_an_unexpected_error(
    tmp_path: Path, ssh_port: int
) -> None:
    home = tmp_path / "home"
    spec = one_node_spec(tmp_path, ssh_port)
    # The run folder's parent is a file: making the run's artifact folder fails with an
    # OSError (not a MetalctlError) after the node was marked deploying.
    runs = ClusterPaths.for_cluster("solo", home).runs
    runs.parent.mkdir(parents=True)
    runs.write_text("not a folder")

    proc = metalctl("deploy", "swarm", "-f", str(spec), "-q", home=home)

    assert proc.returncode != 0
    store = Store(home / "metalctl.db")
    node = store.get_node("solo", "solo-1")
    assert node.state == lifecycle.FAILED
    assert node.last_error and "unexpected" in node.last_error
    last = store.list_events("solo")[-1]
    assert (last.from_state, last.to_state) == (lifecycle.DEPLOYING, lifecycle.FAILED)


def test_two_deploys_cannot_run_at_once_on_one_cluster(tmp_path: Path, ssh_port: int) -> None:
    home = tmp_path / "home"
    spec = one_node_spec(tmp_path, ssh_port)
    assert metalctl("swarm", "env", "-f", str(spec), home=home).returncode == 0
    events_before = metalctl("events", "-c", "solo", "-o", "json", home=home).stdout

    with deploy_lock(ClusterPaths.for_cluster("solo", home), "deploy swarm of solo-1"):
        proc = metalctl("deploy", "swarm", "-c", "solo", home=home)

    assert proc.returncode == 5, proc.stderr
    assert "already running" in proc.stderr and f"pid {os.getpid()}" in proc.stderr
    assert metalctl("events", "-c", "solo", "-o", "json", home=home).stdout == events_before


def test_deploy_lock_is_released_when_its_holder_is_killed(tmp_path: Path) -> None:
    paths = ClusterPaths(tmp_path / "clusters" / "c")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from pathlib import Path; from metalctl.deploy.lock import "
            "deploy_lock; from metalctl.paths import ClusterPaths\n"
            f"with deploy_lock(ClusterPaths(Path({str(paths.root)!r})), 'held'):\n"
            "    print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConflictError, match=rf"pid {holder.pid}"), deploy_lock(paths, "x"):
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        with deploy_lock(paths, "after the crash"):
            content = json.loads((paths.root / "deploy.lock").read_text())
            assert content["pid"] == os.getpid()
    finally:
        holder.kill()
        holder.wait(10)


def test_spec_naming_an_unknown_provisioner_is_refused_naming_the_field(tmp_path: Path) -> None:
    home = tmp_path / "home"
    spec = tmp_path / "c.yaml"
    spec.write_text(GOOD_SPEC.replace("provisioner: static", "provisioner: warewulf"))
    proc = metalctl("swarm", "env", "-f", str(spec), home=home)
    assert proc.returncode == 3, proc.stderr
    assert (
        "spec.provisioner" in proc.stderr
        and "known: ironic, lab, pxe, static, vmlab" in proc.stderr
    )
    assert json.loads(metalctl("nodes", "list", "-o", "json", home=home).stdout) == []


def test_spec_file_does_not_silently_replace_a_known_cluster(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = tmp_path / "first.yaml"
    first.write_text(GOOD_SPEC)
    assert metalctl("swarm", "env", "-f", str(first), home=home).returncode == 0
    before = metalctl("nodes", "list", "-o", "json", home=home).stdout
    second = tmp_path / "second.yaml"
    second.write_text(GOOD_SPEC.replace("    - {name: n4, address: 192.0.2.14}\n", ""))

    proc = metalctl("swarm", "env", "-f", str(second), home=home)

    assert proc.returncode == 5, proc.stderr
    assert "already known with a different spec" in proc.stderr
    assert "-  - name: n4" in proc.stderr  # the difference is shown
    assert metalctl("nodes", "list", "-o", "json", home=home).stdout == before

    replaced = metalctl("swarm", "env", "-f", str(second), "--replace", home=home)
    assert replaced.returncode == 0, replaced.stderr
    names = [
        n["name"] for n in json.loads(metalctl("nodes", "list", "-o", "json", home=home).stdout)
    ]
    assert names == ["n1", "n2", "n3"]


def test_replace_refuses_to_drop_nodes_still_in_the_swarm(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = tmp_path / "first.yaml"
    first.write_text(GOOD_SPEC)
    assert metalctl("swarm", "env", "-f", str(first), home=home).returncode == 0
    store = Store(home / "metalctl.db")
    lifecycle.transition(store, "rack1", ["n4"], lifecycle.DEPLOYING, "test")
    lifecycle.transition(store, "rack1", ["n4"], lifecycle.ACTIVE, "test")
    second = tmp_path / "second.yaml"
    second.write_text(GOOD_SPEC.replace("    - {name: n4, address: 192.0.2.14}\n", ""))

    proc = metalctl("swarm", "env", "-f", str(second), "--replace", home=home)

    assert proc.returncode == 5, proc.stderr
    assert "n4 (active)" in proc.stderr and "nodes remove" in proc.stderr
    assert store.get_node("rack1", "n4").state == lifecycle.ACTIVE


def test_phase_failures_keep_their_exit_code_conflict(tmp_path: Path) -> None:
    home = tmp_path / "home"
    spec = tmp_path / "rack.yaml"
    spec.write_text(GOOD_SPEC)
    assert metalctl("swarm", "env", "-f", str(spec), home=home).returncode == 0
    store = Store(home / "metalctl.db")
    for state in (lifecycle.DEPLOYING, lifecycle.ACTIVE, lifecycle.LEAVING):
        lifecycle.transition(store, "rack1", ["n4"], state, "test")

    proc = metalctl("deploy", "swarm", "-c", "rack1", home=home)

    assert proc.returncode == 5, proc.stderr  # a conflict, not "deploy failed" (7)
    assert "phase 'check nodes'" in proc.stderr and "n4 is 'leaving'" in proc.stderr


def test_phase_failures_keep_their_exit_code_timeout(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    home = tmp_path / "home"
    spec = one_node_spec(tmp_path, closed)

    proc = metalctl("deploy", "swarm", "-f", str(spec), "--ssh-timeout", "1", home=home)

    assert proc.returncode == 8, proc.stderr  # a timeout, not "deploy failed" (7)
    assert "solo-1: SSH on 127.0.0.1" in proc.stderr


def test_lab_state_removal_never_leaves_the_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second lock behind cluster-name validation: an old 'lab down --name /' ran
    rmtree('/') as root."""
    from metalctl.provisioners.lab import _remove_state

    monkeypatch.setenv("METALCTL_HOME", str(tmp_path / "home"))
    outside = tmp_path / "precious"
    outside.mkdir()
    (tmp_path / "home" / "clusters").mkdir(parents=True)
    escape = tmp_path / "home" / "clusters" / ".." / ".." / "precious"
    for target in (outside, escape, Path("/")):
        with pytest.raises(ConflictError, match="refusing to delete"):
            _remove_state(target)
    assert outside.is_dir()
    mine = tmp_path / "home" / "clusters" / "lab1"
    mine.mkdir()
    _remove_state(mine)
    assert not mine.exists()
