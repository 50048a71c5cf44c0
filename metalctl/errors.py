"""The MetalctlError hierarchy.

Library code raises these and never prints or exits; the CLI maps each class to
an exit code in one place (``metalctl.cli.main``). Every error carries a message
that says what is wrong and, where there is one, what to do (``hint``).
"""

from __future__ import annotations

from pathlib import Path


class MetalctlError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class SpecError(MetalctlError):
    """The cluster spec is malformed or inconsistent. ``problems`` lists (field, message)."""

    exit_code = 3

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        lines = [f"{field}: {msg}" for field, msg in problems]
        super().__init__(f"invalid cluster spec {source}:\n  " + "\n  ".join(lines))
        self.source = source
        self.problems = problems


class NotFoundError(MetalctlError):
    """A named cluster, node or artifact does not exist."""

    exit_code = 4


class ConflictError(MetalctlError):
    """The request clashes with what exists (a name taken, a state that forbids it)."""

    exit_code = 5


class InvalidTransitionError(ConflictError):
    """A node lifecycle transition that the state machine does not allow."""

    def __init__(self, node: str, current: str, wanted: str) -> None:
        super().__init__(
            f"node {node}: cannot go from state '{current}' to '{wanted}'",
            hint="see docs/architecture.md for the node lifecycle",
        )
        self.node = node
        self.current = current
        self.wanted = wanted


class HostSetupError(MetalctlError):
    """The admin host lacks something metalctl needs (dockerd, debootstrap, a cached binary)."""

    exit_code = 6


class ProvisionError(MetalctlError):
    """A provisioner (lab, ...) failed to create or remove machines."""

    exit_code = 6


class DeployError(MetalctlError):
    """A deploy phase failed. Names the phase, and for Ansible failures host, role and task."""

    exit_code = 7

    def __init__(
        self,
        phase: str,
        message: str,
        *,
        host: str | None = None,
        role: str | None = None,
        task: str | None = None,
        log_path: Path | None = None,
        hint: str | None = None,
    ) -> None:
        where = f"phase '{phase}'"
        if host:
            where += f", host {host}"
        if role:
            where += f", role {role}"
        if task:
            where += f", task '{task}'"
        text = f"deploy failed in {where}: {message}"
        if log_path:
            text += f"\n  full log: {log_path}"
        super().__init__(text, hint=hint)
        self.phase = phase
        self.host = host
        self.role = role
        self.task = task
        self.log_path = log_path


class ClusterAccessError(MetalctlError):
    """The cluster's Docker or Consul API could not be reached or refused us."""

    exit_code = 6


class WaitTimeout(MetalctlError):
    """A wait ran out of time. Names what was waited for and on which node."""

    exit_code = 8


class UsageError(MetalctlError):
    """Options that contradict each other or are out of range."""

    exit_code = 2
