"""The one wait/retry helper: every wait in metalctl goes through ``wait_for``."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TypeVar

from metalctl.errors import UsageError, WaitTimeout

T = TypeVar("T")


def wait_for(
    probe: Callable[[], T | None],
    *,
    what: str,
    timeout: float,
    interval: float = 1.0,
    abort: Callable[[], str | None] | None = None,
    hint: str | None = None,
    backoff: float = 1.0,
    max_interval: float | None = None,
) -> T:
    """Call ``probe`` until it returns something other than None/False, and return that.

    ``what`` names the node and the state waited for ("node lab-1: sshd accepting
    connections"); it becomes the timeout message. ``abort`` may return a reason to
    stop early (e.g. the container exited), which raises at once instead of waiting
    out the timeout. Exceptions from ``probe`` count as "not yet" and the last one is
    quoted in the timeout message.

    ``backoff`` > 1 multiplies the pause after every "not yet", up to ``max_interval``:
    a state that usually changes within a second is seen at once, and one that takes
    minutes (an Ironic deploy) costs few calls.

    The CLI already range-checks every duration; this check is the second line of
    defence, because a NaN deadline never passes (every comparison with NaN is false)
    and an infinite one never ends.
    """
    _check_durations(what, timeout, interval)
    _check_backoff(what, backoff, max_interval)
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
        interval *= backoff
        if max_interval is not None:
            interval = min(interval, max_interval)


def _check_durations(what: str, timeout: float, interval: float) -> None:
    if not (math.isfinite(timeout) and timeout >= 0):
        raise UsageError(
            f"waiting for {what}: the timeout must be a finite number of seconds >= 0, "
            f"got {timeout}"
        )
    # 0 is allowed: poll without pausing (tests do); a negative or NaN pause is a bug.
    if not (math.isfinite(interval) and interval >= 0):
        raise UsageError(
            f"waiting for {what}: the poll interval must be a finite number of seconds "
            f">= 0, got {interval}"
        )


def _check_backoff(what: str, backoff: float, max_interval: float | None) -> None:
    if not (math.isfinite(backoff) and backoff >= 1):
        raise UsageError(f"waiting for {what}: the backoff factor must be >= 1, got {backoff}")
    if max_interval is not None and not (math.isfinite(max_interval) and max_interval >= 0):
        raise UsageError(
            f"waiting for {what}: the longest pause must be a finite number of seconds "
            f">= 0, got {max_interval}"
        )
