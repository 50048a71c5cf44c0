"""Controller scale: CPU and wall time to handle one change, and RSS, at 1,000 and 5,000 nodes.

A real Consul 1.8 agent (dev mode, loopback) holds N ``swarm-node`` catalog registrations;
the Swarm side is the in-memory stand-in (thousands of machines cannot exist here). For
each size, in a fresh process: one full pass, then changes of four kinds (a node fails; a
new node registers and is joined; a node is removed the 'nodes remove' way; a passing node's
registration silently vanishes), each measured from the Consul write to the controller
having acted, in wall time and in the controller process's CPU time. The controller's own
code runs unchanged (blocking query, incremental scope, plan, KV writes).

    python bench/bench_membership_scale.py [--sizes 1000,5000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import requests
from _common import REPO  # noqa: F401  (puts the repo on sys.path)

from metalctl.clients.consul import ConsulApi, ConsulEndpoint
from metalctl.conventions import kv_prefix
from metalctl.membership.controller import Controller, ControllerOptions
from metalctl.membership.election import LeaderLock, LockTimings
from tests.integration.consul_dev import MEMBER_CHECK, consul_dev_agent, deregister, register
from tests.integration.memory_swarm import InMemorySwarm, member


def one_size(n: int, repeats: int) -> dict[str, float]:
    with consul_dev_agent() as url, requests.Session() as http:
        names = [f"n{i:05d}" for i in range(n)]
        for i, name in enumerate(names):
            role = "manager" if i < 3 else "worker"
            register(url, name, address(i), role, "passing", http)
        swarm = InMemorySwarm(
            [
                member(x, "manager" if i < 3 else "worker", leader=i == 0)
                for i, x in enumerate(names)
            ]
        )
        ep = ConsulEndpoint(url=url, token="")
        lock = LeaderLock(ep, f"{kv_prefix('bench')}/leader", "bench", LockTimings())
        seen: list[tuple[str, str | None]] = []
        options = ControllerOptions(absent=0, rejoin_after=0)
        ctl = Controller(
            "bench",
            ConsulApi(ep, member_check=MEMBER_CHECK),
            swarm,
            lock,
            lambda r: seen.append((r.kind, r.node)),
            options,
        )
        assert lock.try_acquire()
        ctl._take_over()
        full_wall, full_cpu = measure(lambda: ctl.step(blocking=False))
        fetch_wall, fetch_cpu = measure(ctl.consul.swarm_nodes)
        out: dict[str, float] = {"nodes": n}
        victims = iter(names[3:])

        def change(kind: str, trigger: Callable[[str], None], done: Callable[[str], bool]) -> None:
            walls, cpus = [], []
            for _ in range(repeats):
                node = next(victims) if kind != "join" else f"new-{len(seen)}"
                trigger(node)
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(5):  # bounded: one or two passes are expected
                    ctl.step(blocking=True)
                    if done(node):
                        break
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
                assert done(node), f"{kind} of {node} not handled"
                if kind.startswith("leave"):
                    ctl.step(blocking=True)  # the drained node's removal (not measured)
            out[f"{kind}_wall_ms"] = 1000 * statistics.median(walls)
            out[f"{kind}_cpu_ms"] = 1000 * statistics.median(cpus)

        # A node fails: its check goes critical -> the grace starts (recorded).
        change(
            "fail",
            lambda x: register(url, x, "10.0.0.1", "worker", "critical", http),
            lambda x: ("grace", x) in seen,
        )

        # A new node registers the way an agent does (check critical, then passing) -> joined.
        def join(x: str) -> None:
            register(url, x, "10.250.0.1", "worker", "critical", http)
            ctl.step(blocking=True)
            register(url, x, "10.250.0.1", "worker", "passing", http)

        change("join", join, lambda x: x in swarm.nodes)

        # 'nodes remove': maintenance (critical) first, then the agent leaves -> drained.
        def announced_leave(x: str) -> None:
            register(url, x, "10.0.0.1", "worker", "critical", http)
            ctl.step(blocking=True)
            deregister(url, x, http)

        drained = lambda x: x not in swarm.nodes or swarm.nodes[x].availability == "drain"  # noqa: E731
        change("leave_announced", announced_leave, drained)
        # A passing node's registration just vanishes -> only a full read can tell.
        change("leave_silent", lambda x: deregister(url, x, http), drained)
        lock.release()
    out["full_pass_ms"], out["full_pass_cpu_ms"] = 1000 * full_wall, 1000 * full_cpu
    out["full_read_ms"], out["full_read_cpu_ms"] = 1000 * fetch_wall, 1000 * fetch_cpu
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def address(i: int) -> str:
    return f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"


def measure(fn: Callable[[], object]) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,5000")
    ap.add_argument("--repeats", type=int, default=5, help="measured changes of each kind")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_size(args.one, args.repeats)))
        return
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        # A fresh process per size, so that RSS is that size's alone.
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(n), "--repeats", str(args.repeats)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    keys = [k for k in rows[0] if k != "nodes"]
    print(f"{'metric':<26}" + "".join(f"{r['nodes']:>12}" for r in rows) + "       ratio")
    for k in keys:
        vals = [r[k] for r in rows]
        ratio = vals[-1] / vals[0] if vals[0] else float("nan")
        print(f"{k:<26}" + "".join(f"{v:>12.1f}" for v in vals) + f"{ratio:>12.2f}")
    print(
        f"(medians of {args.repeats} changes of each kind; change = Consul write -> controller acted)"
    )


if __name__ == "__main__":
    main()
