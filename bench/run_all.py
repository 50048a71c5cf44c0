"""Run every benchmark and print the figures (not pass/fail)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

for script in (
    "bench_cli_start.py",
    "bench_lab_up.py",
    "bench_deploy.py",
    "bench_membership_scale.py",
    "bench_membership_latency.py",
):
    print(f"== {script}", flush=True)
    subprocess.run([sys.executable, str(HERE / script)], check=True, cwd=HERE)
