"""The one wait/retry helper: every wait in metalctl goes through ``wait_for``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from metalctl.errors import WaitTimeout

T = TypeVar("T")


def wait_for(
    probe: Callable[[], T | None],
    *,
    what: str,
    timeout: float,
    interval: float = 1.0,
    abort: Callable[[], str | None] | None = None,
    hint: str | None = None,
) -> T:
    """Call ``probe`` until it returns something other than None/False, and return that.

    ``what`` names the node and the state waited for ("node lab-1: sshd accepting
    connections"); it becomes the timeout message. ``abort`` may return a reason to
    stop early (e.g. the container exited), which raises at once instead of waiting
    out the timeout. Exceptions from ``probe`` count as "not yet" and the last one is
    quoted in the timeout message.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = probe()
            if result is not None and result is not False:
                return result
        except Exception as exc:  # a probe failing just means "not ready yet"
            last_error = exc
        if abort is not None:
            reason = abort()
            if reason:
                raise WaitTimeout(f"gave up waiting for {what}: {reason}", hint=hint)
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise WaitTimeout(
                f"timed out after {timeout:.0f}s waiting for {what}{detail}", hint=hint
            )
        time.sleep(interval)
