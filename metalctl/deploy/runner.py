"""Run a playbook with ansible-runner; its events drive progress and become our errors.

Each run gets its own private data dir under the cluster's runs/ folder (0700),
which ansible-runner fills with artifacts (stdout, per-event JSON) that we keep.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner
import yaml

from metalctl.deploy.timing import task_status
from metalctl.errors import DeployError
from metalctl.paths import ensure_private_dir


@dataclass(frozen=True)
class TaskEvent:
    """One task outcome on one host, as reported to progress."""

    host: str
    role: str
    task: str
    status: str  # ok | changed | failed | unreachable | skipped


@dataclass
class PlayResult:
    run_dir: Path
    changed: dict[str, int] = field(default_factory=dict)
    ok: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def total_changed(self) -> int:
        return sum(self.changed.values())


@dataclass
class _Failure:
    host: str
    role: str
    task: str
    message: str


def new_run_dir(runs: Path, label: str) -> Path:
    ensure_private_dir(runs)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = runs / f"{stamp}-{label}"
    n = 1
    while path.exists():
        n += 1
        path = runs / f"{stamp}-{label}-{n}"
    return ensure_private_dir(path)


def run_playbook(
    *,
    run_dir: Path,
    project_dir: Path,
    playbook: str,
    roles_path: Path,
    inventory: dict[str, Any],
    known_hosts: Path,
    phase: str,
    on_task: Callable[[TaskEvent], None] | None = None,
    forks: int = 10,
    limit: list[str] | None = None,
    extravars: dict[str, Any] | None = None,
) -> PlayResult:
    inv_path = run_dir / "inventory" / "hosts.yml"
    inv_path.parent.mkdir(parents=True, exist_ok=True)
    inv_path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    failures: list[_Failure] = []
    result = PlayResult(run_dir=run_dir)

    def handle(event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data", {})
        if kind == "playbook_on_stats":
            result.changed = dict(data.get("changed") or {})
            result.ok = dict(data.get("ok") or {})
        status = task_status(event)
        if status:
            task_event = TaskEvent(data["host"], data.get("role", ""), data.get("task", ""), status)
            if status in ("failed", "unreachable") and not data.get("ignore_errors"):
                failures.append(
                    _Failure(
                        task_event.host,
                        task_event.role,
                        task_event.task,
                        _message(data.get("res") or {}),
                    )
                )
            if on_task:
                on_task(task_event)
        return True  # keep the event in the artifacts

    started = time.monotonic()
    runner = ansible_runner.run(
        private_data_dir=str(run_dir),
        project_dir=str(project_dir),
        playbook=playbook,
        inventory=str(inv_path),
        envvars=_envvars(roles_path, known_hosts, forks),
        event_handler=handle,
        quiet=True,
        forks=forks,
        limit=",".join(limit) if limit else None,
        extravars=extravars or {},
    )
    result.seconds = time.monotonic() - started
    log = Path(runner.config.artifact_dir) / "stdout"
    if runner.rc != 0 or runner.status != "successful":
        first = failures[0] if failures else None
        raise DeployError(
            phase,
            first.message
            if first
            else f"ansible-playbook ended with status {runner.status} (rc {runner.rc})",
            host=first.host if first else None,
            role=first.role or None if first else None,
            task=first.task if first else None,
            log_path=log,
        )
    return result


def _message(res: dict[str, Any]) -> str:
    for key in ("msg", "stderr", "module_stderr", "reason"):
        value = res.get(key)
        if value:
            text = str(value).strip()
            return text if len(text) < 600 else text[:600] + " ..."
    return "task failed (no message)"


def _envvars(roles_path: Path, known_hosts: Path, forks: int) -> dict[str, str]:
    bindir = str(Path(sys.executable).parent)
    ssh_args = (
        "-o ControlMaster=auto -o ControlPersist=120s -o ServerAliveInterval=15 "
        f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=accept-new"
    )
    return {
        "PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "ANSIBLE_ROLES_PATH": str(roles_path),
        "ANSIBLE_SSH_ARGS": ssh_args,
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_FORKS": str(forks),
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_TIMEOUT": "30",
    }
