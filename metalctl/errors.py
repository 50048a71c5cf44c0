"""The MetalctlError hierarchy.

Library code raises these and never prints or exits; the CLI maps each class to
an exit code in one place (``metalctl.cli.main``). Every error carries a message
that says what is wrong and, where there is one, what to do (``hint``).

Exit codes (README.md lists them too: keep the two in step):

    0  ok
    1  a bug: an unexpected exception (one line on stderr, the traceback in
       $METALCTL_HOME/logs/crash-*.txt); also, silently, stdout closed early
       (``metalctl events | head``: click's handling of EPIPE)
    2  usage: options that contradict each other or are out of range
    3  invalid spec (a cluster spec or a workload.yaml)
    4  not found: a cluster, node, workload or artifact
    5  conflict: a name taken, a state that forbids the request
    6  the admin host or the cluster cannot do it: host setup (missing tools, a broken
       installation, an unusable $METALCTL_HOME or inventory, a locked inventory),
       provisioner failures, a cluster API unreachable
    7  a deploy failed (unless the failure's cause has its own code: see DeployError)
    8  a wait timed out
  130  interrupted (Ctrl-C)
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

    def __init__(
        self, source: str, problems: list[tuple[str, str]], *, kind: str = "cluster spec"
    ) -> None:
        lines = [f"{field}: {msg}" for field, msg in problems]
        super().__init__(f"invalid {kind} {source}:\n  " + "\n  ".join(lines))
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


class StoreError(HostSetupError):
    """The inventory (metalctl.db) or $METALCTL_HOME cannot be used: not a directory,
    not creatable, not a database, corrupt. Host setup (6): nothing on the cluster is wrong."""


class StoreLockedError(StoreError):
    """Another process held the inventory's write lock for longer than the busy timeout.
    Retrying later is the fix; a separate class so that callers may do so."""


class ProvisionError(MetalctlError):
    """A provisioner (lab, ...) failed to create or remove machines."""

    exit_code = 6


class DeployError(MetalctlError):
    """A deploy phase failed. Names the phase, and for Ansible failures host, role and task.

    Exits 7, unless ``cause_exit_code`` carries the code of the error that made the phase
    fail: a conflict stays 5, an unreachable cluster 6, a timeout 8, so that scripts can
    tell "retry later" from "fix the spec". A generic cause (1) keeps 7: "the deploy
    failed" says more than "something failed".
    """

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
        cause_exit_code: int | None = None,
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
        # 0 (success) and 1 (generic) name no failure class: keep 7 for those.
        if cause_exit_code is not None and cause_exit_code > 1:
            self.exit_code = cause_exit_code


class ClusterAccessError(MetalctlError):
    """The cluster's Docker or Consul API could not be reached or refused us."""

    exit_code = 6


class WaitTimeout(MetalctlError):
    """A wait ran out of time. Names what was waited for and on which node."""

    exit_code = 8


class UsageError(MetalctlError):
    """Options that contradict each other or are out of range."""

    exit_code = 2
