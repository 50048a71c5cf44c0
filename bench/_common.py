"""Shared helpers for benchmarks: run metalctl in a private home, time it, watch its RSS."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from metalctl.paths import metalctl_home  # noqa: E402


@dataclass
class Timed:
    seconds: float
    peak_rss_mib: float
    stdout: str


def private_home() -> Path:
    """A fresh METALCTL_HOME sharing the host's artifact cache (the Consul binary)."""
    home = Path(tempfile.mkdtemp(prefix="metalctl-bench-")) / "home"
    home.mkdir()
    (home / "artifacts").symlink_to(metalctl_home() / "artifacts")
    return home


def run(home: Path, *args: str) -> Timed:
    """Run metalctl, return wall time and the peak RSS of the metalctl process itself."""
    env = dict(os.environ, METALCTL_HOME=str(home))
    # Output goes to files, not pipes: nobody reads a pipe while the loop below polls, and
    # a child writing more than a pipe holds (runs show -o json) would wait forever.
    with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "metalctl", *args],
            env=env,
            stdout=out_file,
            stderr=err_file,
            text=True,
        )
        peak = 0
        status = Path(f"/proc/{proc.pid}/status")
        while proc.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
            except OSError:
                pass
            time.sleep(0.2)
        seconds = time.monotonic() - started
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read(), err_file.read()
    if proc.returncode != 0:
        raise SystemExit(f"metalctl {' '.join(args)} failed:\n{out}\n{err}")
    return Timed(seconds, peak / 1024, out)


def median(values: list[float]) -> float:
    return statistics.median(values)


def fmt(values: list[float]) -> str:
    return f"median {median(values):.1f}s (runs: {', '.join(f'{v:.1f}' for v in values)})"
