"""VM lab power cycle: warm QMP reset (the old `power cycle`) against a cold start (a fresh
QEMU process, `metalctl.vmlab.power`), on a UEFI VM (OVMF, TCG) booting the built Debian 12
image. Per cycle: seconds from the power call to the firmware's first console output and
to systemd's banner; each cycle comes after Linux has run for --settle seconds. Medians
and the warm/cold ratio.

The VM's NIC sits on a bridge this script creates (no address, no DHCP server, no route
out); its disk is a qcow2 overlay of the cached image. Needs `metalctl image build
debian-12` first (`make test` or `make demo-vms` builds it).

    .venv/bin/python bench/bench_vm_power.py [--cycles 3] [--settle 45]
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from ipaddress import IPv4Interface
from pathlib import Path

import _common  # noqa: F401  (puts the checkout on sys.path)

from metalctl.images import catalog
from metalctl.vmlab import network, qemu
from metalctl.vmlab.power import power
from metalctl.vmlab.qmp import QmpClient

BANNER = b"Debian GNU/Linux 12"  # systemd's "Welcome to ...", not GRUB's menu entry
WAIT = 400.0


def _image() -> Path:
    record = catalog.lookup("debian-12")
    raw = catalog.images_dir() / f"{record.sha256}.raw" if record else None
    if raw is None or not raw.is_file():
        sys.exit("no raw debian-12 image in the cache: run 'metalctl image build debian-12'")
    return raw


def _wait_for(console: Path, offset: int, needle: bytes | None, t0: float) -> float:
    """Seconds since t0 until the console, past offset, has any output (needle None) or
    needle."""
    while time.monotonic() - t0 < WAIT:
        new = console.read_bytes()[offset:] if console.exists() else b""
        if (needle is None and new) or (needle is not None and needle in new):
            return time.monotonic() - t0
        time.sleep(0.25)
    sys.exit(f"nothing ({needle!r}) on {console} within {WAIT:g} s")


def _warm_reset(config: qemu.VmConfig) -> None:
    """The power cycle metalctl used before: held in reset, then continued (same process)."""
    with QmpClient(config.qmp_path, vm=config.name) as qmp:
        qmp.execute("stop")
        qmp.execute("system_reset")
        qmp.wait_status({"prelaunch"})
        qmp.execute("cont")
        qmp.wait_status({"running"})


def _cold_cycle(config: qemu.VmConfig) -> None:
    power(config, "cycle")


def _measure(
    config: qemu.VmConfig, cycle: Callable[[qemu.VmConfig], None], cycles: int, settle: float
) -> list[tuple[float, float]]:
    console = config.console_path
    t0 = time.monotonic()
    qemu.start(config)
    _wait_for(console, 0, BANNER, t0)
    out = []
    for _ in range(cycles):
        time.sleep(settle)
        offset = console.stat().st_size
        t0 = time.monotonic()
        cycle(config)
        first = _wait_for(console, offset, None, t0)
        banner = _wait_for(console, offset, BANNER, t0)
        print(f"  first output {first:6.1f} s   systemd {banner:6.1f} s", flush=True)
        out.append((first, banner))
    qemu.stop(config)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=3, choices=range(1, 11))
    parser.add_argument("--settle", type=float, default=45.0)
    args = parser.parse_args()
    image = _image()
    tag = secrets.token_hex(3)
    bridge, tap = f"mcbpw{tag}", f"mctpw{tag}"
    work = Path(tempfile.mkdtemp(prefix="mcpw", dir="/tmp"))
    try:
        # A link-local /32: the bridge needs an address for create_bridge, nothing
        # on it answers DHCP, and its FORWARD rules drop everything else.
        network.create_bridge(bridge, IPv4Interface("169.254.215.1/32"))
        network.add_tap(tap, bridge)
        results = {}
        for mode, cycle in (("warm QMP reset", _warm_reset), ("cold start", _cold_cycle)):
            vm_dir = work / mode.split()[0]
            vm_dir.mkdir()
            disk = vm_dir / "disk.qcow2"
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(image),
                 str(disk)],
                check=True,
            )  # fmt: skip
            config = qemu.VmConfig(
                name=f"pw-{mode.split()[0]}", mac="52:54:00:fe:00:01", tap=tap, disk=disk,
                state_dir=vm_dir, firmware="uefi",
            )  # fmt: skip
            print(f"{mode}:", flush=True)
            try:
                results[mode] = _measure(config, cycle, args.cycles, args.settle)
            finally:
                qemu.stop(config)
        print()
        medians = {}
        for mode, rows in results.items():
            first = statistics.median(r[0] for r in rows)
            banner = statistics.median(r[1] for r in rows)
            medians[mode] = banner
            print(f"{mode:15s} first output median {first:6.1f} s, systemd median {banner:6.1f} s")
        ratio = medians["warm QMP reset"] / medians["cold start"]
        print(f"warm/cold (systemd): {ratio:.2f}")
    finally:
        network.remove(bridge, tap)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
