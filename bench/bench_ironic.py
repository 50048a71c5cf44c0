"""50 fake-hardware nodes enroll -> active -> ready through a real standalone Ironic.

`metalctl provision --parallel 1` and `--parallel 10`, each on a fresh Ironic and a fresh
METALCTL_HOME, median of 3: wall time and the ratio, metalctl's CPU time and peak RSS
(from wait4's rusage of the metalctl process), and Ironic API calls per node (counted in
Ironic's own API log). The nodes' "OS" is the SSH-banner stand-in of the tests (root: it
adds a bridge). Needs `make setup` (the Ironic venv).

    .venv/bin/python bench/bench_ironic.py [--nodes 50] [--runs 3]
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _common import REPO, median

from tests.integration.ironic_support import fake_node, ironic_spec, standalone_ironic
from tests.integration.ssh_standin import StandIns, ssh_standins


@dataclass
class Run:
    seconds: float
    cpu_seconds: float
    peak_rss_mib: float
    ironic_cpu_seconds: float
    calls: collections.Counter[str]


def provision(standins: StandIns, count: int, parallel: int) -> Run:
    with (
        tempfile.TemporaryDirectory(prefix="bench-ironic-") as tmp,
        standalone_ironic(Path(tmp) / "ironic") as ironic,
    ):
        nodes = [fake_node(i + 1, a, standins.port) for i, a in enumerate(standins.addresses)]
        spec = Path(tmp) / "rack.yaml"
        spec.write_text(ironic_spec("bench", ironic.url, nodes[:count]))
        ironic_cpu = ironic.cpu_seconds()
        env = dict(os.environ, METALCTL_HOME=str(Path(tmp) / "home"), PYTHONPATH=str(REPO))
        log = Path(tmp) / "metalctl.log"
        with open(log, "w") as out:
            started = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-m", "metalctl", "provision", "-f", str(spec),
                 "--parallel", str(parallel), "-q"],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
            _, status, usage = os.wait4(proc.pid, 0)
            seconds = time.monotonic() - started
            proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"provision failed ({proc.returncode}):\n{log.read_text()[-3000:]}")
        ironic_cpu = ironic.cpu_seconds() - ironic_cpu
        calls = collections.Counter(
            f"{method} {_kind(path)}" for method, path, _ in ironic.api_calls()
        )
        cpu = usage.ru_utime + usage.ru_stime
        return Run(seconds, cpu, usage.ru_maxrss / 1024, ironic_cpu, calls)


def _kind(path: str) -> str:
    """/v1/nodes/<uuid>/states/provision -> /v1/nodes/*/states/provision"""
    parts = path.split("?")[0].split("/")
    return "/".join("*" if i == 3 and p else p for i, p in enumerate(parts))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results: dict[int, list[Run]] = {}
    with ssh_standins(args.nodes) as standins:
        for parallel in (1, 10):
            results[parallel] = []
            for i in range(args.runs):
                run = provision(standins, args.nodes, parallel)
                results[parallel].append(run)
                print(
                    f"  parallel {parallel:2d} run {i + 1}: {run.seconds:6.1f} s wall, "
                    f"{run.cpu_seconds:5.1f} s CPU, {run.peak_rss_mib:5.0f} MiB peak RSS, "
                    f"Ironic {run.ironic_cpu_seconds:5.1f} s CPU, "
                    f"{sum(run.calls.values()) / args.nodes:5.1f} API calls/node",
                    flush=True,
                )
    wall = {p: median([r.seconds for r in runs]) for p, runs in results.items()}
    print(f"{args.nodes} fake-hardware nodes enroll -> active -> ready (median of {args.runs}):")
    for parallel, runs in results.items():
        cpu = median([r.cpu_seconds for r in runs])
        rss = median([r.peak_rss_mib for r in runs])
        calls = median([sum(r.calls.values()) / args.nodes for r in runs])
        ironic_cpu = median([r.ironic_cpu_seconds for r in runs])
        print(
            f"  --parallel {parallel:2d}: {wall[parallel]:6.1f} s wall; metalctl {cpu:.1f} s CPU, "
            f"{rss:.0f} MiB peak RSS; Ironic {ironic_cpu:.1f} s CPU; "
            f"{calls:.1f} Ironic API calls per node"
        )
    print(f"  ratio parallel 10 / parallel 1: {wall[10] / wall[1]:.2f} (target <= 0.2)")
    load = os.getloadavg()
    print(
        f"  host: {os.cpu_count()} CPUs, load average now {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    last = results[10][-1].calls
    print("  API calls of the last --parallel 10 run, per node:")
    for kind, n in last.most_common():
        print(f"    {n / args.nodes:5.2f}  {kind}")


if __name__ == "__main__":
    main()
