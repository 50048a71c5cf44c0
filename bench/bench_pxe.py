"""PXE on QEMU VMs (TCG): discovery, image write and power-on -> ready, median of N runs.

Per run: `lab up --vms 3 --uefi 1` (power-on -> discovered per VM: BIOS and UEFI), then
`provision` of one node alone (1 VM: power-on -> ready, image write MiB/s), then
`provision` of all three at once (3 VMs: wall time, aggregate MiB/s, ratio to 1 VM), with
the boot service's CPU use while the agents stream. Images are cached beforehand (their
build time and sizes are printed from the cache records).

    .venv/bin/python bench/bench_pxe.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import time
from pathlib import Path

from _common import private_home, run

from metalctl.images import catalog
from metalctl.provisioners import vmlab_state


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _boot_serve_pid(lab: vmlab_state.VmLab) -> int:
    return int((lab.run_dir / "boot-serve.pid").read_text())


def _deployments(home: Path) -> dict[str, dict]:
    with sqlite3.connect(home / "metalctl.db") as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM deployments").fetchall()
    return {r["node"]: dict(r) for r in rows}


def _discovery_seconds(home: Path, lab: vmlab_state.VmLab) -> dict[str, float]:
    with sqlite3.connect(home / "metalctl.db") as db:
        seen = dict(db.execute("SELECT primary_mac, first_seen FROM machines").fetchall())
    out = {}
    for vm in lab.vms:
        started = (lab.vm_dir(vm.node) / "qemu.pid").stat().st_mtime
        out[f"{vm.node} ({vm.firmware})"] = seen[vm.mac] - started
    return out


def _write_rate(dep: dict) -> float:
    result = json.loads(dep["result_json"] or "{}")
    return int(result["bytes"]) / max(float(result["seconds"]), 0.001) / (1 << 20)


def one_run(home: Path, name: str) -> dict[str, float]:
    os.environ["METALCTL_HOME"] = str(home)
    run(home, "lab", "up", "--name", name, "--vms", "3", "--uefi", "1")
    lab = vmlab_state.require(name)
    figures = {}
    for key, seconds in _discovery_seconds(home, lab).items():
        kind = "uefi" if "uefi" in key else "bios"
        figures.setdefault(f"discovered_{kind}", seconds)
    first = lab.vms[0].node
    single = run(home, "provision", "--cluster", name, first).seconds
    figures["ready_1vm"] = single
    figures["write_mibs_1vm"] = _write_rate(_deployments(home)[first])
    pid = _boot_serve_pid(lab)
    cpu_before, wall_before = _cpu_seconds(pid), time.monotonic()
    triple = run(home, "provision", "--cluster", name, *(vm.node for vm in lab.vms)).seconds
    cpu = _cpu_seconds(pid) - cpu_before
    deps = _deployments(home)
    figures["ready_3vm"] = triple
    figures["write_mibs_3vm_aggregate"] = sum(_write_rate(deps[vm.node]) for vm in lab.vms)
    figures["boot_serve_cpu_pct"] = 100 * cpu / (time.monotonic() - wall_before)
    run(home, "lab", "down", "--name", name)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    home = private_home()
    results = [one_run(home, f"bpxe{i}") for i in range(args.runs)]
    print(f"PXE on QEMU/TCG VMs, median of {args.runs} runs (3 VMs: 2 BIOS, 1 UEFI):")
    for key in results[0]:
        values = [r[key] for r in results]
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"  {key:28s} median {statistics.median(values):7.1f}   (runs: {runs})")
    ratio = statistics.median(r["ready_3vm"] / r["ready_1vm"] for r in results)
    print(f"  power-on -> ready, 3 VMs at once / 1 VM: {ratio:.2f}x")
    for record in catalog.list_images():
        print(
            f"  image {record.name}: raw {record.size >> 20} MiB, zstd {record.stored_size >> 20} MiB"
        )


if __name__ == "__main__":
    main()
