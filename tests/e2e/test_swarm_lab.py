"""The whole flow on a 4-node lab: lab up -> deploy swarm -> docker -H over mutual TLS.

3 managers (the master among them), 3 Consul servers, 1 worker.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import Lab, lab_objects

pytestmark = pytest.mark.e2e


def test_docker_cli_over_tls_lists_all_nodes_ready(deployed_lab: Lab) -> None:
    proc = deployed_lab.docker_cli(
        "node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}"
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert sorted(r[0] for r in rows) == sorted(deployed_lab.node_names())
    assert all(r[1] == "Ready" for r in rows), rows
    managers = [r for r in rows if len(r) > 2]
    assert len(managers) == 3
    assert sum(1 for r in managers if r[2] == "Leader") == 1


def test_store_marks_nodes_active(deployed_lab: Lab) -> None:
    nodes = json.loads(
        deployed_lab.metalctl("nodes", "list", "-c", deployed_lab.name, "-o", "json").stdout
    )
    assert {n["state"] for n in nodes} == {"active"}


def test_consul_members_alive_and_gossip_encrypted(deployed_lab: Lab) -> None:
    node = deployed_lab.node_names()[1]
    token = f"-token={deployed_lab.master_token()}"
    members = deployed_lab.exec(node, "consul", "members", token)
    assert members.returncode == 0, members.stderr
    alive = [line for line in members.stdout.splitlines()[1:] if " alive " in line]
    assert len(alive) == 4, members.stdout
    info = deployed_lab.exec(node, "consul", "info", token).stdout
    serf_lan = info.split("serf_lan:")[1]
    assert "encrypted = true" in serf_lan


def test_consul_denies_anonymous_requests(deployed_lab: Lab) -> None:
    token = deployed_lab.master_token()
    assert deployed_lab.consul("/v1/kv/e2e/probe", token, "PUT", "secret-value").json() is True
    try:
        # Anonymous: reads and writes of the key are refused, the catalog is empty.
        read = deployed_lab.consul("/v1/kv/e2e/probe?raw", None)
        assert read.status_code == 403 and "secret-value" not in read.text
        denied = deployed_lab.consul("/v1/kv/e2e/probe", None, "PUT", "x")
        assert denied.status_code == 403 and "Permission denied" in denied.text
        assert deployed_lab.consul("/v1/catalog/nodes", None).json() == []
        assert deployed_lab.consul("/v1/catalog/services", None).json() == {}
        # With the token the same requests work: the denial is ACLs, not a broken agent.
        assert deployed_lab.consul("/v1/kv/e2e/probe?raw", token).text == "secret-value"
        assert len(deployed_lab.consul("/v1/catalog/nodes", token).json()) == 4
    finally:
        deployed_lab.consul("/v1/kv/e2e/probe", token, "DELETE")


def test_controller_token_reads_the_catalog_and_writes_only_its_own_keys(
    deployed_lab: Lab,
) -> None:
    """The membership controller runs with a narrow token, not the management one."""
    lab = deployed_lab
    secrets = lab.home / "clusters" / lab.name / "secrets"
    token = json.loads((secrets / "consul-controller.json").read_text())["secret"]
    own = f"/v1/kv/metalctl/{lab.name}/controller/e2e-probe"
    worker = lab.node_names()[-1]
    entries = lab.consul("/v1/health/service/swarm-node", token).json()
    assert len(entries) == 4
    assert lab.consul("/v1/operator/raft/configuration", token).status_code == 200
    session = lab.consul("/v1/session/create", token, "PUT", '{"TTL": "10s"}')
    assert session.status_code == 200, session.text
    lab.consul(f"/v1/session/destroy/{session.json()['ID']}", token, "PUT")
    assert lab.consul(own, token, "PUT", "x").json() is True
    lab.consul(own, token, "DELETE")
    # Outside its prefix, and anything that changes membership in Consul: denied.
    assert lab.consul("/v1/kv/metalctl/other/x", token, "PUT", "x").status_code == 403
    assert lab.consul("/v1/kv/e2e/probe?raw", token).status_code == 403
    deregister = json.dumps({"Node": worker})
    assert lab.consul("/v1/catalog/deregister", token, "PUT", deregister).status_code == 403
    assert lab.consul(f"/v1/agent/force-leave/{worker}", token, "PUT").status_code == 403
    assert lab.consul("/v1/acl/tokens", token).status_code == 403


def test_consul_https_requires_client_cert(deployed_lab: Lab) -> None:
    ca = deployed_lab.home / "clusters" / deployed_lab.name / "docker-client" / "ca.pem"
    with pytest.raises(requests.exceptions.ConnectionError):  # SSLError or reset
        requests.get(
            f"https://{deployed_lab.address(deployed_lab.node_names()[0])}:8501/v1/status/leader",
            verify=str(ca),
            timeout=10,
        )


def test_every_node_registered_swarm_node_service_passing(deployed_lab: Lab) -> None:
    token = deployed_lab.master_token()
    deadline = time.monotonic() + 90
    passing: list[dict] = []  # type: ignore[type-arg]
    while time.monotonic() < deadline:
        passing = deployed_lab.consul("/v1/health/service/swarm-node?passing=1", token).json()
        if len(passing) == 4:
            break
        time.sleep(2)
    assert sorted(p["Node"]["Node"] for p in passing) == sorted(deployed_lab.node_names())
    roles = {p["Node"]["Node"]: p["Service"]["Meta"]["role"] for p in passing}
    assert sorted(roles.values()) == ["manager", "manager", "manager", "worker"]


def test_docker_api_refuses_clients_without_cert(deployed_lab: Lab) -> None:
    master = deployed_lab.address(deployed_lab.node_names()[0])
    ca = deployed_lab.home / "clusters" / deployed_lab.name / "docker-client" / "ca.pem"
    ctx = ssl.create_default_context(cafile=str(ca))
    with (
        pytest.raises((ssl.SSLError, ConnectionResetError)),
        socket.create_connection((master, 2376), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=master) as tls,
    ):
        tls.sendall(b"GET /version HTTP/1.0\r\n\r\n")
        if not tls.recv(100):
            raise ConnectionResetError("closed without answer")
    plain = subprocess.run(
        ["docker", "-H", f"tcp://{master}:2376", "version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert plain.returncode != 0


def _docker_version_over_tls(address: str, ca: Path, cert: Path, key: Path) -> bytes:
    """GET /version on ``address``:2376 presenting ``cert``; the raw answer, or an
    SSLError/reset when dockerd refuses the client certificate."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(cert, key)
    with (
        socket.create_connection((address, 2376), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=address) as tls,
    ):
        tls.sendall(f"GET /version HTTP/1.0\r\nHost: {address}\r\n\r\n".encode())
        answer = b""
        while chunk := tls.recv(4096):
            answer += chunk
    if not answer:
        # TLS 1.3: a refused client certificate may also surface as a bare close.
        raise ConnectionResetError("closed without answer")
    return answer


def test_node_certificate_is_refused_by_another_nodes_docker_api(deployed_lab: Lab) -> None:
    """A node's own certificate (what root on a compromised node holds) is no Docker
    client credential anywhere: only the admin client certificate is."""
    lab = deployed_lab
    cluster = lab.home / "clusters" / lab.name
    ca = cluster / "docker-client" / "ca.pem"
    worker = lab.node_names()[-1]
    stolen = (
        cluster / "pki" / "nodes" / f"{worker}.pem",
        cluster / "pki" / "nodes" / f"{worker}-key.pem",
    )
    for node in lab.node_names():
        if node == worker:
            continue
        address = lab.address(node)
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            answer = _docker_version_over_tls(address, ca, *stolen)
            pytest.fail(f"{node} answered {worker}'s certificate: {answer[:200]!r}")
        admin = _docker_version_over_tls(
            address,
            ca,
            cluster / "docker-client" / "cert.pem",
            cluster / "docker-client" / "key.pem",
        )
        status_line = admin.split(b"\r\n", 1)[0]
        assert b" 200 " in status_line and b'"ApiVersion"' in admin, admin[:200]


def test_plain_port_2375_closed_everywhere(deployed_lab: Lab) -> None:
    for node in deployed_lab.node_names():
        with (
            pytest.raises(OSError),
            socket.create_connection((deployed_lab.address(node), 2375), timeout=3),
        ):
            pass


def test_replicated_service_spreads_over_nodes(deployed_lab: Lab) -> None:
    # No registry: build a tiny image offline on every node from its busybox.
    for node in deployed_lab.node_names():
        build = deployed_lab.exec(
            node,
            "sh",
            "-c",
            "set -e; d=$(mktemp -d); mkdir $d/bin; cp /bin/busybox $d/bin/; "
            "tar -C $d -c . | docker import -c "
            '\'CMD ["/bin/busybox","sleep","3600"]\' - metalctl/probe:1',
        )
        assert build.returncode == 0, build.stderr
    made = deployed_lab.docker_cli(
        "service",
        "create",
        "--detach",
        "--name",
        "probe",
        "--replicas",
        "4",
        "--no-resolve-image",
        "metalctl/probe:1",
    )
    assert made.returncode == 0, made.stderr
    deadline = time.monotonic() + 120
    running: list[str] = []
    while time.monotonic() < deadline:
        ps = deployed_lab.docker_cli(
            "service",
            "ps",
            "probe",
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Node}} {{.CurrentState}}",
        )
        running = [line.split()[0] for line in ps.stdout.splitlines() if " Running " in line]
        if len(running) == 4:
            break
        time.sleep(2)
    assert len(running) == 4, ps.stdout + ps.stderr
    assert len(set(running)) > 1
    deployed_lab.docker_cli("service", "rm", "probe")


def test_swarm_status_reports_quorum(deployed_lab: Lab) -> None:
    status = json.loads(
        deployed_lab.metalctl("swarm", "status", "-c", deployed_lab.name, "-o", "json").stdout
    )
    for group in ("swarm_quorum", "consul_quorum"):
        assert status[group] == {"voters": 3, "reachable": 3, "needed": 2, "fault_tolerance": 1}
    assert len(status["consul_members"]) == 4
    table = deployed_lab.metalctl("swarm", "status", "-c", deployed_lab.name).stdout
    assert "tolerates 1 failure" in table


def test_second_deploy_changes_nothing(deployed_lab: Lab) -> None:
    before = deployed_lab.docker_cli("node", "ls", "-q").stdout.split()
    out = deployed_lab.metalctl("deploy", "swarm", "-c", deployed_lab.name, "-q", "-o", "json")
    changed = json.loads(out.stdout)["changed"]
    assert set(changed) == set(deployed_lab.node_names())
    assert all(v == 0 for v in changed.values()), changed
    assert sorted(deployed_lab.docker_cli("node", "ls", "-q").stdout.split()) == sorted(before)
    slow = json.loads(out.stdout)["slowest_tasks"]  # 'deploy' ends with where the time went
    assert len(slow) == 5 and [t["seconds"] for t in slow] == sorted(
        (t["seconds"] for t in slow), reverse=True
    )


def test_runs_list_and_show_say_where_each_deploy_spent_its_time(deployed_lab: Lab) -> None:
    name = deployed_lab.name
    runs = json.loads(deployed_lab.metalctl("runs", "list", "-c", name, "-o", "json").stdout)
    assert runs and all(r["status"] == "successful" for r in runs), runs
    first = runs[0]
    assert set(first["nodes"]) == set(deployed_lab.node_names())
    assert first["total_changed"] > 0
    assert "run workload roles" in [p["title"] for p in first["phases"]]

    shown = json.loads(
        deployed_lab.metalctl("runs", "show", first["run"], "-c", name, "-o", "json").stdout
    )
    assert {t["host"] for t in shown["tasks"]} == set(deployed_lab.node_names())
    assert [r["role"] for r in shown["roles"]][-4:] == ["ready_state", "docker", "consul", "swarm"]
    assert all(r["seconds"] > 0 for r in shown["roles"])
    longest = max(shown["tasks"], key=lambda t: t["seconds"])
    assert shown["slowest_tasks"][0] == longest
    table = deployed_lab.metalctl("runs", "show", "-c", name).stdout  # the newest run
    assert runs[-1]["run"] in table and "slowest 10 tasks" in table


def test_no_secret_in_run_artifacts(deployed_lab: Lab) -> None:
    cluster = deployed_lab.home / "clusters" / deployed_lab.name
    secrets = [
        (cluster / "secrets" / "gossip.key").read_text().strip(),
        deployed_lab.master_token(),
        *(
            t["secret"]
            for t in json.loads((cluster / "secrets" / "consul-tokens.json").read_text()).values()
        ),
        json.loads((cluster / "secrets" / "consul-controller.json").read_text())["secret"],
    ]
    for path in (cluster / "runs").rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert not any(s in text for s in secrets), f"a secret leaked into {path}"
    for path in (cluster / "secrets").iterdir():
        assert path.stat().st_mode & 0o077 == 0, path


def test_lab_status_and_down_leave_nothing(deployed_lab: Lab) -> None:
    status = json.loads(
        deployed_lab.metalctl("lab", "status", "--name", deployed_lab.name, "-o", "json").stdout
    )
    assert [n["container"] for n in status["nodes"]] == ["running"] * 4
    assert lab_objects(deployed_lab.name)
    deployed_lab.metalctl("lab", "down", "--name", deployed_lab.name)
    assert lab_objects(deployed_lab.name) == []
    gone = deployed_lab.metalctl("nodes", "list", "-c", deployed_lab.name, check=False)
    assert gone.returncode == 4
