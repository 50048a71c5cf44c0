"""Progress on stderr with rich: phases, and per-host/role task counts from ansible events."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from rich.console import Console
from rich.status import Status

if TYPE_CHECKING:  # the runner module imports ansible-runner; keep --help fast
    from metalctl.deploy.runner import TaskEvent


class ConsoleProgress:
    def __init__(self, quiet: bool = False) -> None:
        self.console = Console(stderr=True)
        self.quiet = quiet
        self._status: Status | None = None
        self._counts: Counter[str] = Counter()
        self._last_role: dict[str, str] = {}

    def message(self, text: str) -> None:
        if not self.quiet:
            self.console.print(f"[dim]·[/dim] {text}")

    def phase_started(self, title: str) -> None:
        if self.quiet:
            return
        self._status = self.console.status(f"[bold]{title}[/bold]")
        self._status.start()

    def phase_done(self, title: str, seconds: float) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
        if not self.quiet:
            self.console.print(f"[green]✓[/green] {title} [dim]({seconds:.1f}s)[/dim]")

    def task(self, event: TaskEvent) -> None:
        self._counts[event.status] += 1
        if self.quiet:
            return
        role = event.role or "facts"
        if self._last_role.get(event.host) != role:
            self._last_role[event.host] = role
            self.console.print(f"  [cyan]{event.host}[/cyan] role {role}")
        if event.status in ("failed", "unreachable"):
            self.console.print(f"  [red]✗ {event.host} {role}: {event.task} ({event.status})[/red]")
        if self._status is not None:
            c = self._counts
            self._status.update(
                f"[bold]run workload roles[/bold] — {event.host}: {role}: {event.task} "
                f"[dim](ok {c['ok']}, changed {c['changed']}, failed {c['failed']})[/dim]"
            )

    def stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
