"""PXE on QEMU VMs (TCG): discovery, image write and power-on -> ready, median of N runs.

Per run, each on a fresh VM lab: `lab up --vms 1` + `provision` (1 VM: power-on -> ready,
image write MiB/s), then `lab up --vms 3 --uefi 1` (power-on -> discovered: BIOS and UEFI)
+ `provision` of all three at once (wall time, aggregate MiB/s, ratio to 1 VM), with the
boot service's CPU use while the agents stream. 'provision' includes the power cycle into
PXE, the stream, the reboot and the ready check (SSH, cloud-init done). Images are cached beforehand (their
build time and sizes are printed from the cache records).

    .venv/bin/python bench/bench_pxe.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
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


def _lab(home: Path, name: str, vms: int, uefi: int) -> vmlab_state.VmLab:
    run(home, "lab", "up", "--name", name, "--vms", str(vms), "--uefi", str(uefi))
    return vmlab_state.require(name)


def _down(home: Path, name: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "metalctl", "lab", "down", "--name", name],
        env=dict(os.environ, METALCTL_HOME=str(home)),
        capture_output=True,
        check=False,
    )


def three_vms(home: Path, name: str) -> dict[str, float]:
    """Discovery of 2 BIOS + 1 UEFI VMs, then all three provisioned at once."""
    try:
        lab = _lab(home, name, 3, 1)
        figures: dict[str, float] = {}
        for key, seconds in _discovery_seconds(home, lab).items():
            kind = "uefi" if "uefi" in key else "bios"
            figures.setdefault(f"discovered_{kind}", seconds)
        pid = _boot_serve_pid(lab)
        cpu_before, wall_before = _cpu_seconds(pid), time.monotonic()
        figures["ready_3vm"] = run(home, "provision", "--cluster", name).seconds
        cpu = _cpu_seconds(pid) - cpu_before
        deps = _deployments(home)
        figures["write_mibs_3vm_aggregate"] = sum(_write_rate(deps[vm.node]) for vm in lab.vms)
        figures["boot_serve_cpu_pct"] = 100 * cpu / (time.monotonic() - wall_before)
        return figures
    finally:
        _down(home, name)


def one_vm(home: Path, name: str) -> dict[str, float]:
    """One BIOS VM alone: power-on -> ready and its write rate."""
    try:
        lab = _lab(home, name, 1, 0)
        ready = run(home, "provision", "--cluster", name).seconds
        return {
            "ready_1vm": ready,
            "write_mibs_1vm": _write_rate(_deployments(home)[lab.vms[0].node]),
        }
    finally:
        _down(home, name)


def one_run(home: Path, index: int) -> dict[str, float]:
    os.environ["METALCTL_HOME"] = str(home)
    figures = one_vm(home, f"bpxe1v{index}")
    figures.update(three_vms(home, f"bpxe3v{index}"))
    print(f"run {index}: " + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()), flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    home = private_home()
    results = [one_run(home, i) for i in range(args.runs)]
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
