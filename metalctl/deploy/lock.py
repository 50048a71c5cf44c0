"""One deploy per cluster at a time: an exclusive, crash-safe lock on a file.

flock(2) is released by the kernel when the holder dies, so a crashed or killed deploy
never leaves a stale lock behind; the file's content (pid, start time, command) only
serves the error message of the deploy that was refused.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from metalctl.errors import ConflictError
from metalctl.paths import ClusterPaths


@contextlib.contextmanager
def deploy_lock(paths: ClusterPaths, what: str) -> Iterator[None]:
    path = paths.root / "deploy.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _already_running(path, paths.root.name) from None
        holder = {
            "pid": os.getpid(),
            "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "what": what,
            "command": " ".join(sys.argv[:4]),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _already_running(path: Path, cluster: str) -> ConflictError:
    try:
        holder = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        holder = {}
    who = f"pid {holder.get('pid', '?')}, since {holder.get('since', '?')}"
    if holder.get("what"):
        who += f", {holder['what']}"
    return ConflictError(
        f"a deploy of cluster {cluster} is already running ({who})",
        hint="wait for it to finish; a crashed deploy releases the lock by itself",
    )
