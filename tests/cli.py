"""Run the real `metalctl` entry point in a child process, as a user's shell would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = str(Path(__file__).resolve().parent.parent)


def metalctl(
    *args: str, home: Path, cwd: Path | None = None, timeout: float = 600, **env: str
) -> subprocess.CompletedProcess[str]:
    """``python -m metalctl ARGS`` with METALCTL_HOME=home, this checkout's package first,
    and only the environment given (plus PATH): no DOCKER_HOST or the like leaks in."""
    environ = {
        "METALCTL_HOME": str(home),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": REPO,
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "metalctl", *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=cwd,
        timeout=timeout,
    )
