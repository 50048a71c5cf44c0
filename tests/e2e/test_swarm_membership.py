"""Day-2 membership on a real lab: Consul registrations drive the swarm.

One lab (3 managers + 1 worker) and three real controllers (`metalctl swarm reconcile`,
one per manager agent), then scenarios in order, each building on the previous state:
add/remove a worker, a stopped worker removed after the grace and rejoining, quorum
refusal at 3 managers, failover of the leading controller, demotion at 5 managers, and a
controller killed in the middle of a drain. Short timings (grace 20 s) keep it quick.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Lab, deployed

pytestmark = pytest.mark.e2e

GRACE = 20
REJOIN = 10


class Controllers:
    """Real controller processes, one per agent node; all stopped at the end."""

    def __init__(self, lab: Lab, logs: Path) -> None:
        self.lab, self.logs = lab, logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, agent: str) -> None:
        log = (self.logs / f"controller-{agent}-{time.monotonic_ns()}.log").open("wb")
        args = ["swarm", "reconcile", "-c", self.lab.name, "--agent", agent]
        args += ["--grace", str(GRACE), "--rejoin-after", str(REJOIN)]
        args += ["--drain-timeout", "180", "--lock-delay", "5", "--verbose"]
        self.procs[agent] = subprocess.Popen(
            [sys.executable, "-m", "metalctl", *args], env=self.lab.env, stdout=log, stderr=log
        )

    def stop(self, agent: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(agent)
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_all(self) -> None:
        for agent in list(self.procs):
            self.stop(agent)


def wait_until(what: str, check: Callable[[], bool], timeout: float, interval: float = 2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for: {what}")


def swarm_nodes(lab: Lab) -> dict[str, dict[str, str]]:
    """hostname -> status/availability/manager, with the real docker CLI (mutual TLS)."""
    fmt = "{{.Hostname}}|{{.Status}}|{{.Availability}}|{{.ManagerStatus}}"
    out = lab.docker_cli("node", "ls", "--format", fmt)
    assert out.returncode == 0, out.stderr
    rows = [line.split("|") for line in out.stdout.splitlines() if line]
    return {r[0]: {"status": r[1], "availability": r[2], "manager": r[3]} for r in rows}


def active(lab: Lab, node: str) -> bool:
    row = swarm_nodes(lab).get(node)
    return row is not None and row["status"] == "Ready" and row["availability"] == "Active"


def registered(lab: Lab) -> set[str]:
    from metalctl.clients.consul import ConsulApi, consul_endpoint
    from metalctl.paths import ClusterPaths
    from metalctl.spec import parse_spec

    spec_file = lab.home / "clusters" / lab.name / "cluster.yaml"
    spec = parse_spec(spec_file.read_text())
    paths = ClusterPaths(lab.home / "clusters" / lab.name)
    api = ConsulApi(consul_endpoint(spec, paths, f"{lab.name}-1"))
    try:
        return {r.node for r in api.swarm_nodes()[1]}
    finally:
        api.close()


def events(lab: Lab, node: str | None = None) -> list[dict[str, object]]:
    out = lab.metalctl("events", "-c", lab.name, "-o", "json", "--limit", "1000").stdout
    rows: list[dict[str, object]] = json.loads(out)
    return [e for e in rows if node is None or e["node"] == node]


def kinds(lab: Lab, node: str) -> list[str]:
    return [str(e["kind"]) for e in events(lab, node)]


def leader(lab: Lab) -> str:
    """The leading controller, or "" (also while Consul elects a new leader of its own)."""
    proc = lab.metalctl("swarm", "status", "-c", lab.name, "-o", "json", check=False)
    if proc.returncode != 0:
        return ""
    return str(json.loads(proc.stdout)["controller"]["leader"])


def add_node(lab: Lab, role: str) -> str:
    out = lab.metalctl("nodes", "add", "-c", lab.name, "--role", role, "-q", "-o", "json")
    return str(json.loads(out.stdout)[0]["node"])


def build_probe_image(lab: Lab, nodes: list[str]) -> None:
    # No registry: a tiny image imported on each node from its own busybox.
    for node in nodes:
        build = lab.exec(
            node,
            "sh",
            "-c",
            "docker image inspect metalctl/probe:1 >/dev/null 2>&1 && exit 0; set -e; "
            "d=$(mktemp -d); mkdir $d/bin; cp /bin/busybox $d/bin/; "
            "tar -C $d -c . | docker import -c "
            '\'CMD ["/bin/busybox","sleep","3600"]\' - metalctl/probe:1',
        )
        assert build.returncode == 0, build.stderr


def tasks_by_node(lab: Lab, service: str) -> list[str]:
    ps = lab.docker_cli(
        "service", "ps", service, "--filter", "desired-state=running", "--format",
        "{{.Node}} {{.CurrentState}}",
    )  # fmt: skip
    return [line.split()[0] for line in ps.stdout.splitlines() if " Running " in line]


@pytest.fixture(scope="module")
def mlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with deployed(tmp_path_factory.mktemp("membership")) as lab:
        yield lab


@pytest.fixture(scope="module")
def ctl(mlab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controllers]:
    controllers = Controllers(mlab, tmp_path_factory.mktemp("controllers"))
    try:
        # The controller on manager 2 starts first so that it leads: the failover test
        # stops that node, and the master (manager 1) stays up for the docker CLI.
        controllers.start(f"{mlab.name}-2")
        wait_until("a controller leads", lambda: leader(mlab).endswith("-2"), 60)
        controllers.start(f"{mlab.name}-3")
        controllers.start(f"{mlab.name}-1")
        yield controllers
    finally:
        controllers.stop_all()
        print(f"controller logs: {controllers.logs}")


def test_one_controller_leads_and_status_shows_it(mlab: Lab, ctl: Controllers) -> None:
    wait_until("a first pass", lambda: "last pass" in swarm_status_text(mlab), 60)
    assert f"{mlab.name}-2 leads" in swarm_status_text(mlab)
    assert any(e["kind"] == "leader" for e in events(mlab))


def swarm_status_text(lab: Lab) -> str:
    return lab.metalctl("swarm", "status", "-c", lab.name).stdout


def test_added_worker_joins_and_removed_worker_leaves_tasks_elsewhere(
    mlab: Lab, ctl: Controllers
) -> None:
    node = add_node(mlab, "worker")
    assert active(mlab, node)
    assert "join" in kinds(mlab, node)
    shown = json.loads(mlab.metalctl("nodes", "show", node, "-c", mlab.name, "-o", "json").stdout)
    assert shown["state"] == "active"  # marked only once the controller had joined it
    assert [e["reason"] for e in events(mlab, node) if e["kind"] == "state"][-1] == (
        "joined the swarm by the controller"
    )
    assert node in registered(mlab)
    token = mlab.node_token(node)
    assert mlab.consul("/v1/acl/token/self", token).status_code == 200
    nodes = list(swarm_nodes(mlab))
    build_probe_image(mlab, nodes)
    made = mlab.docker_cli(
        "service", "create", "--detach", "--name", "spread", "--replicas", str(len(nodes)),
        "--no-resolve-image", "metalctl/probe:1",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    wait_until("a task on every node", lambda: len(set(tasks_by_node(mlab, "spread"))) == 5, 120)
    assert node in tasks_by_node(mlab, "spread")

    mlab.metalctl("nodes", "remove", node, "-c", mlab.name, "-q")

    assert node not in swarm_nodes(mlab)
    assert node not in registered(mlab)
    wait_until("all replicas running", lambda: len(tasks_by_node(mlab, "spread")) == 5, 120)
    assert node not in tasks_by_node(mlab, "spread")
    assert {"drain", "remove"} <= set(kinds(mlab, node))
    shown = json.loads(mlab.metalctl("nodes", "show", node, "-c", mlab.name, "-o", "json").stdout)
    assert shown["state"] == "retired"
    # The removed node's own Consul token no longer works (its machine may keep a copy).
    assert mlab.consul("/v1/acl/token/self", token).status_code == 403
    mlab.docker_cli("service", "rm", "spread")


def test_stopped_worker_is_removed_after_grace_and_rejoins(mlab: Lab, ctl: Controllers) -> None:
    worker = f"{mlab.name}-4"
    subprocess.run(["docker", "stop", worker], check=True, capture_output=True)
    try:
        wait_until(f"{worker} removed", lambda: worker not in swarm_nodes(mlab), GRACE + 120)
    finally:
        subprocess.run(["docker", "start", worker], check=True, capture_output=True)
    removed = [e for e in events(mlab, worker) if e["kind"] == "remove"]
    assert removed and "critical for" in str(removed[-1]["reason"])
    assert "grace" in kinds(mlab, worker)
    wait_until(f"{worker} rejoined", lambda: active(mlab, worker), REJOIN + 180)
    moves = [k for k in kinds(mlab, worker) if k in ("join", "remove")]
    assert moves[-2:] == ["remove", "join"], moves


def test_removing_a_manager_of_three_is_refused(mlab: Lab, ctl: Controllers) -> None:
    manager = f"{mlab.name}-3"
    proc = mlab.metalctl("nodes", "remove", manager, "-c", mlab.name, check=False)
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert "swarm managers: 3 voters" in proc.stderr
    assert "quorum" in proc.stderr
    assert swarm_nodes(mlab)[manager]["manager"] == "Reachable"
    assert registered(mlab) >= {f"{mlab.name}-{i}" for i in (1, 2, 3)}


def test_leader_node_stopped_another_controller_takes_over(mlab: Lab, ctl: Controllers) -> None:
    lead_node = f"{mlab.name}-2"
    assert leader(mlab).endswith(lead_node)
    subprocess.run(["docker", "stop", lead_node], check=True, capture_output=True)
    try:
        wait_until(
            "another leader", lambda: leader(mlab).rsplit("@")[-1] not in ("", lead_node), 90
        )
        node = add_node(mlab, "manager")  # the new leader must still reconcile
        assert swarm_nodes(mlab)[node]["manager"] == "Reachable"
    finally:
        subprocess.run(["docker", "start", lead_node], check=True, capture_output=True)
    # A stopped manager is never removed behind quorum's back: it stays, and is back.
    wait_until(f"{lead_node} back", lambda: active(mlab, lead_node), 180)
    assert swarm_nodes(mlab)[lead_node]["manager"] == "Reachable"


def test_five_managers_one_is_demoted_and_removed_with_a_leader_throughout(
    mlab: Lab, ctl: Controllers
) -> None:
    node = add_node(mlab, "manager")
    managers = [h for h, r in swarm_nodes(mlab).items() if r["manager"]]
    assert len(managers) == 5, managers
    samples: list[bool] = []
    done = threading.Event()

    def watch_leader() -> None:
        while not done.is_set():
            samples.append(any(r["manager"] == "Leader" for r in swarm_nodes(mlab).values()))
            done.wait(1)

    watcher = threading.Thread(target=watch_leader)
    watcher.start()
    try:
        mlab.metalctl("nodes", "remove", node, "-c", mlab.name, "-q")
    finally:
        done.set()
        watcher.join()
    assert node not in swarm_nodes(mlab)
    assert {"demote", "remove"} <= set(kinds(mlab, node))
    assert samples and all(samples), samples


def test_controller_killed_mid_drain_finishes_the_removal(mlab: Lab, ctl: Controllers) -> None:
    worker = f"{mlab.name}-4"
    build_probe_image(mlab, [worker])
    # A task that ignores SIGTERM keeps the drained node busy for the stop grace period.
    made = mlab.docker_cli(
        "service", "create", "--detach", "--name", "slow", "--stop-grace-period", "45s",
        "--constraint", f"node.hostname=={worker}", "--no-resolve-image", "metalctl/probe:1",
        "/bin/busybox", "sh", "-c", "trap '' TERM; while true; do /bin/busybox sleep 1; done",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    wait_until("slow task running", lambda: tasks_by_node(mlab, "slow") == [worker], 120)
    acting = leader(mlab).rsplit("@", 1)[-1]
    for agent in [a for a in list(ctl.procs) if a != acting]:
        ctl.stop(agent)  # only the leader left, so nothing else can finish the job
    remover = subprocess.Popen(
        [sys.executable, "-m", "metalctl", "nodes", "remove", worker, "-c", mlab.name, "-q"],
        env=mlab.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(f"{worker} drained", lambda: "drain" in kinds(mlab, worker)[-2:], 120, 1)
        ctl.stop(acting, signal.SIGKILL)
        time.sleep(3)
        assert worker in swarm_nodes(mlab)  # mid-drain: the slow task still runs there
        ctl.start(acting)
        _, err = remover.communicate(timeout=300)
        assert remover.returncode == 0, err.decode()
    finally:
        if remover.poll() is None:
            remover.kill()
    assert worker not in swarm_nodes(mlab)
    story = [str(e["kind"]) for e in events(mlab) if e["node"] in (worker, None)]
    last = {kind: i for i, kind in enumerate(story)}
    # The restarted controller took the lock after the drain and finished the job.
    assert last["drain"] < last["leader"] < last["remove"], story
    mlab.docker_cli("service", "rm", "slow")
