"""`metalctl --help` start time: median of 15 runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from _common import median, private_home


def main(runs: int = 15) -> float:
    env = dict(os.environ, METALCTL_HOME=str(private_home()))
    times = []
    for _ in range(runs):
        t = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "metalctl", "--help"], env=env, check=True, capture_output=True
        )
        times.append(time.monotonic() - t)
    m = median(times)
    print(
        f"metalctl --help start time: median {m * 1000:.0f} ms over {runs} runs "
        f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f})"
    )
    return m


if __name__ == "__main__":
    main()
