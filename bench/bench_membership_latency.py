"""Join and leave latency, and grace expiry -> action, on a real 4-node lab.

One controller (`metalctl swarm reconcile`) runs; a worker's Consul agent is made to leave
(deregistration) and started again (registration) --cycles times:
  leave latency = agent left                     -> node gone from the swarm
  join latency  = registration passing in Consul -> node Active in the swarm
Then the worker's container is stopped --stops times:
  grace expiry -> action = (first 'grace' event + grace) -> the 'drain' event

    python bench/bench_membership_latency.py [--cycles 10] [--stops 3] [--grace 20]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from _common import private_home, run

from metalctl.clients.consul import ConsulApi, consul_endpoint, only_nodes
from metalctl.clients.docker import docker_for
from metalctl.conventions import hostname_of
from metalctl.paths import ClusterPaths
from metalctl.spec import parse_spec


def until(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.25) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.time()
        time.sleep(interval)
    raise SystemExit(f"timed out waiting for {what}")


def event_time(event: dict[str, str]) -> float:
    """`events -o json` times are ISO 8601 UTC with milliseconds (docs/output.md)."""
    return dt.datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()


def leave_steps(home: Path, name: str, worker: str, since: float) -> str:
    """When the controller saw the leave, drained and removed: where a slow leave went."""
    evs = json.loads(run(home, "events", "-c", name, "-o", "json", "--limit", "50").stdout)
    firsts: dict[str, float] = {}
    for e in sorted(evs, key=lambda e: e["id"]):
        ts = event_time(e)
        if e["node"] == worker and ts >= since:
            firsts.setdefault(e["kind"], ts - since)
    return ", ".join(f"{k} +{t:.1f}s" for k, t in firsts.items())


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=10)
    ap.add_argument("--stops", type=int, default=3)
    ap.add_argument("--grace", type=float, default=20.0)
    args = ap.parse_args()
    home = private_home()
    os.environ["METALCTL_HOME"] = str(home)
    name = "benchlat"
    env = dict(os.environ)
    run(home, "lab", "up", "--name", name, "--nodes", "4", "--managers", "3")
    ctl = None
    try:
        run(home, "deploy", "swarm", "-c", name, "-q")
        paths = ClusterPaths.for_cluster(name, home)
        spec = parse_spec(paths.spec.read_text())
        worker = f"{name}-4"
        log_path = Path(home) / "controller.log"  # one line per pass: where a slow one went
        print(f"controller log: {log_path}", flush=True)
        log = open(log_path, "wb")  # noqa: SIM115
        ctl = subprocess.Popen(
            [sys.executable, "-m", "metalctl", "swarm", "reconcile", "-c", name,
             "--grace", str(args.grace), "--rejoin-after", "0", "--verbose"],
            env=env, stdout=log, stderr=log,
        )  # fmt: skip
        docker = docker_for(spec, paths, timeout=15)
        server = ConsulApi(consul_endpoint(spec, paths, f"{name}-1"))

        def state() -> str:
            rows = [n for n in docker.nodes() if hostname_of(n) == worker]
            if not rows:
                return "gone"
            return f"{rows[0]['Status']['State']}/{rows[0]['Spec']['Availability']}"

        def passing_since() -> float:
            """When the worker's registration turns passing, seen through a blocking query
            (it wakes up at the change, exactly as the controller's does)."""
            index = 0
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                index, regs, _ = server.swarm_nodes(index, 10, only_nodes({worker}))
                if any(r.status == "passing" for r in regs):
                    return time.time()
            raise SystemExit("the worker never passed")

        joins, leaves = [], []
        for i in range(args.cycles):
            until("worker active", lambda: state() == "ready/active", 300)
            left = time.time()
            ConsulApi(consul_endpoint(spec, paths, worker)).agent_leave()
            leaves.append(until("worker gone", lambda: state() == "gone", 300, 0.1) - left)
            steps = leave_steps(home, name, worker, left)
            subprocess.run(["docker", "exec", worker, "systemctl", "start", "consul"], check=True)
            registered = passing_since()
            active = until("worker active", lambda: state() == "ready/active", 300, 0.1)
            joins.append(active - registered)
            print(
                f"cycle {i + 1}: leave {leaves[-1]:.1f}s ({steps}), join {joins[-1]:.1f}s",
                flush=True,
            )
        delays = []
        for i in range(args.stops):
            until("worker active", lambda: state() == "ready/active", 300)
            since = time.time()
            subprocess.run(["docker", "stop", worker], check=True, capture_output=True)
            until("worker drained", lambda: state() in ("gone", "down/drain"), args.grace + 300)
            subprocess.run(["docker", "start", worker], check=True, capture_output=True)
            evs = json.loads(run(home, "events", "-c", name, "-o", "json", "--limit", "100").stdout)
            mine = [e for e in evs if e["node"] == worker and event_time(e) >= since]
            grace = next(event_time(e) for e in mine if e["kind"] == "grace")
            drain = next(event_time(e) for e in mine if e["kind"] == "drain")
            delays.append(drain - (grace + args.grace))
            print(f"stop {i + 1}: action {delays[-1]:.2f}s after the grace expired", flush=True)
        print(
            f"leave latency: p50 {pct(leaves, 0.5):.1f}s p95 {pct(leaves, 0.95):.1f}s (n={len(leaves)})"
        )
        print(
            f"join latency:  p50 {pct(joins, 0.5):.1f}s p95 {pct(joins, 0.95):.1f}s (n={len(joins)})"
        )
        print(f"grace expiry -> drain: median {statistics.median(delays):.2f}s "
              f"(runs: {', '.join(f'{d:.2f}' for d in delays)})")  # fmt: skip
    finally:
        if ctl is not None:
            ctl.terminate()
            ctl.wait(timeout=30)
        subprocess.run([sys.executable, "-m", "metalctl", "lab", "down", "--name", name], env=env)


if __name__ == "__main__":
    main()
