"""Apply as phases: an ordered list of small steps, each with a title and a run function.

Modelled on k0sctl's phase manager: phases may ``prepare`` (cheap checks before
anything changes), ``run``, and ``cleanup`` (always called once the apply ends).
A failure is wrapped so that it names the phase it happened in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from metalctl.errors import DeployError, MetalctlError

C = TypeVar("C")


class PhaseProgress(Protocol):
    def phase_started(self, title: str) -> None: ...

    def phase_done(self, title: str, seconds: float) -> None: ...


@dataclass
class Phase(Generic[C]):
    title: str
    run: Callable[[C], None]
    prepare: Callable[[C], None] | None = None
    cleanup: Callable[[C], None] | None = None


@dataclass
class PhaseTiming:
    title: str
    seconds: float


@dataclass
class ApplyReport:
    timings: list[PhaseTiming] = field(default_factory=list)
    running: str | None = None  # the phase under way; after a failure, the one that failed


def apply(
    phases: list[Phase[C]],
    ctx: C,
    progress: PhaseProgress | None = None,
    report: ApplyReport | None = None,
) -> ApplyReport:
    """Run the phases in order. Pass ``report`` to keep the timings of a failed apply."""
    report = report if report is not None else ApplyReport()
    try:
        for phase in phases:
            if phase.prepare:
                _guard(phase.title, phase.prepare, ctx)
        for phase in phases:
            if progress:
                progress.phase_started(phase.title)
            started = time.monotonic()
            report.running = phase.title
            _guard(phase.title, phase.run, ctx)
            report.running = None
            seconds = time.monotonic() - started
            report.timings.append(PhaseTiming(phase.title, seconds))
            if progress:
                progress.phase_done(phase.title, seconds)
    finally:
        for phase in phases:
            if phase.cleanup:
                phase.cleanup(ctx)
    return report


def _guard(title: str, fn: Callable[[C], None], ctx: C) -> None:
    try:
        fn(ctx)
    except DeployError:
        raise
    except MetalctlError as exc:
        # The phase is named, but the kind of failure keeps its exit code: a conflict stays
        # 5, an unreachable host 6, a timeout 8 (only failures of the deploy itself are 7).
        raise DeployError(title, exc.message, hint=exc.hint, cause_exit_code=exc.exit_code) from exc
