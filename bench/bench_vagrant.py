"""The Vagrant test drive, timed as `make vagrant-demo` runs it (vagrant-libvirt, TCG):
`vagrant up` -> all nodes discovered -> all ready -> swarm Ready, and how much of it is
Vagrant's own time (the `vagrant up` call, as metalctl logs it) vs metalctl's.

Per run, on a fresh lab: `lab up --vms N --uefi 1 --vagrant` (bridge, boot service,
`vagrant up`, discovery), `provision`, `deploy swarm`, `docker node ls` until every node
is Ready, then `lab down` (its time printed too). Images are cached beforehand.

    .venv/bin/python bench/bench_vagrant.py [--nodes 2] [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import private_home, run


def _vagrant_seconds(runtime: Path) -> float:
    log = (runtime / "vagrant.log").read_text()
    return sum(float(s) for s in re.findall(r"^\$ vagrant up .*, ([0-9.]+) s\)$", log, re.M))


def _swarm_ready(home: Path, name: str, nodes: int) -> float:
    out = run(home, "swarm", "env", "--cluster", name).stdout
    env = dict(os.environ)
    for line in out.splitlines():
        if line.startswith("export "):
            key, value = shlex.split(line[len("export ") :])[0].split("=", 1)
            env[key] = value
    started = time.monotonic()
    for _ in range(120):
        listed = subprocess.run(
            ["docker", "node", "ls", "--format", "{{.Status}}"],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
        if listed.returncode == 0 and listed.stdout.split().count("Ready") == nodes:
            return time.monotonic() - started
        time.sleep(2)
    raise SystemExit(f"the swarm did not list {nodes} Ready nodes: {listed.stdout}{listed.stderr}")


def one_run(nodes: int, index: int) -> dict[str, float]:
    home = private_home()
    name = f"bvg{index}"
    try:
        up = run(home, "lab", "up", "--name", name, "--vms", str(nodes), "--uefi", "1",
                 "--vagrant", "-o", "json")  # fmt: skip
        record = json.loads((home / "clusters" / name / "vmlab.json").read_text())
        vagrant = _vagrant_seconds(Path(record["runtime"]))
        provision = run(home, "provision", "--cluster", name, "-o", "json")
        deploy = run(home, "deploy", "swarm", "--cluster", name, "-q", "-o", "json")
        ready = _swarm_ready(home, name, nodes)
    finally:
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "metalctl", "lab", "down", "--name", name],
            env=dict(os.environ, METALCTL_HOME=str(home)), capture_output=True, check=False,
        )  # fmt: skip
        down = time.monotonic() - started
    to_ready = up.seconds + provision.seconds
    to_swarm = to_ready + deploy.seconds + ready
    figures = {
        "discovered": up.seconds,
        "ready": to_ready,
        "swarm_ready": to_swarm,
        "vagrant": vagrant,
        "metalctl": to_swarm - vagrant,
        "lab_down": down,
    }
    print(json.dumps({"run": index, **{k: round(v, 1) for k, v in figures.items()}}), flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    runs = [one_run(args.nodes, i) for i in range(1, args.runs + 1)]
    print(f"\nVagrant test drive, {args.nodes} nodes (1 UEFI), {args.runs} run(s), median:")
    for key, label in (
        ("discovered", "vagrant up -> all discovered (incl. bridge, boot service)"),
        ("ready", "-> all ready (Debian 12 on disk, SSH)"),
        ("swarm_ready", "-> swarm Ready (docker node ls)"),
        ("vagrant", "  of which Vagrant itself (vagrant up)"),
        ("metalctl", "  of which metalctl (boot service, agent, deploy)"),
        ("lab_down", "lab down (vagrant destroy, boot service, bridge)"),
    ):
        print(f"  {label:58s} {statistics.median(r[key] for r in runs):8.1f} s")
    total = statistics.median(r["swarm_ready"] for r in runs)
    share = statistics.median(r["vagrant"] / r["swarm_ready"] for r in runs)
    print(f"  Vagrant's share of the total: {share:.1%} ({total / 60:.1f} min in all)")


if __name__ == "__main__":
    main()
