"""Where a deploy's time goes: per-phase, per-role and per-task durations of each run.

Task durations come from ansible-runner's per-event JSON under the run's artifacts
(written as the play goes, so they survive a crash or Ctrl-C); phases, status and the
error from ``run.json``, which the deploy writes when it ends. ``metalctl runs list|show``
read them back; ``deploy`` ends with the slowest tasks.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from metalctl.errors import NotFoundError
from metalctl.paths import ClusterPaths, write_private

RECORD = "run.json"
# Events that close a task on one host; their event_data carries start, end, duration.
_TASK_END = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
}


def task_status(event: dict[str, Any]) -> str | None:
    """ok | changed | failed | unreachable | skipped for an ansible-runner event that ends
    a task on a host; None for every other event (also read by the runner's progress)."""
    status = _TASK_END.get(event.get("event", ""))
    data = event.get("event_data") or {}
    if status is None or not data.get("host"):
        return None
    if status == "ok" and (data.get("res") or {}).get("changed"):
        return "changed"
    return status


@dataclass(frozen=True)
class TaskTiming:
    host: str
    role: str  # "" for the play's own tasks (fact gathering)
    task: str
    status: str  # ok | changed | failed | unreachable | skipped
    seconds: float
    start: str  # ISO time, as Ansible reported it


@dataclass(frozen=True)
class RoleTiming:
    role: str
    seconds: float  # on the host where it took longest (the hosts run it side by side)
    host: str
    tasks: int


@dataclass
class RunRecord:
    """One workload run of one cluster (a folder under clusters/NAME/runs/)."""

    name: str
    cluster: str
    workload: str
    started: float  # epoch seconds
    status: str  # running | successful | failed | interrupted
    seconds: float | None = None
    nodes: list[str] = field(default_factory=list)
    changed: dict[str, int] = field(default_factory=dict)
    phases: list[dict[str, Any]] = field(default_factory=list)  # title, seconds
    failed_phase: str | None = None
    error: str | None = None


def write_record(run_dir: Path, record: RunRecord) -> None:
    # Atomic (temp file + rename): a crash leaves the old record or the new, never half.
    write_private(run_dir / RECORD, json.dumps(asdict(record), indent=2, sort_keys=True))


def read_record(run_dir: Path) -> RunRecord:
    path = run_dir / RECORD
    try:
        data = json.loads(path.read_text())
        return RunRecord(**data)
    except (OSError, ValueError, TypeError):
        # A run from before run.json existed, or one killed before its first write: what
        # ansible-runner left says enough to list it.
        return RunRecord(
            name=run_dir.name,
            cluster=run_dir.parent.parent.name,
            workload=run_dir.name.split("-")[2] if run_dir.name.count("-") >= 2 else "",
            started=run_dir.stat().st_mtime,
            status=_runner_status(run_dir),
        )


def _runner_status(run_dir: Path) -> str:
    for status in run_dir.glob("artifacts/*/status"):
        return status.read_text().strip() or "unknown"
    return "unknown"


def task_timings(run_dir: Path) -> list[TaskTiming]:
    """Every task on every host of the run, in the order they ended."""
    found: list[tuple[int, TaskTiming]] = []
    for path in run_dir.glob("artifacts/*/job_events/*.json"):
        try:
            event = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a file ansible-runner was writing when the run was killed
        status = task_status(event)
        if status is None:
            continue
        data = event["event_data"]
        timing = TaskTiming(
            host=data["host"],
            role=data.get("role") or "",
            task=data.get("task") or "",
            status=status,
            seconds=float(data.get("duration") or 0.0),
            start=str(data.get("start") or ""),
        )
        found.append((int(event.get("counter") or 0), timing))
    return [t for _, t in sorted(found, key=lambda item: item[0])]


def role_timings(tasks: list[TaskTiming]) -> list[RoleTiming]:
    """Per role, in play order: its time on the host where it took longest."""
    per: dict[str, dict[str, list[TaskTiming]]] = defaultdict(lambda: defaultdict(list))
    for t in tasks:
        per[t.role or "(play)"][t.host].append(t)
    roles = []
    for role, hosts in per.items():
        host, mine = max(hosts.items(), key=lambda item: sum(t.seconds for t in item[1]))
        roles.append(RoleTiming(role, sum(t.seconds for t in mine), host, len(mine)))
    return roles


def slowest(tasks: list[TaskTiming], count: int = 5) -> list[TaskTiming]:
    return sorted(tasks, key=lambda t: t.seconds, reverse=True)[:count]


@dataclass
class RunReport:
    record: RunRecord
    path: Path
    roles: list[RoleTiming]
    tasks: list[TaskTiming]


def list_runs(cluster: str, home: Path | None = None) -> list[RunRecord]:
    """The cluster's runs, oldest first."""
    runs = ClusterPaths.for_cluster(cluster, home).runs
    if not runs.is_dir():
        return []
    return sorted(
        (read_record(d) for d in runs.iterdir() if d.is_dir()),
        key=lambda r: (r.started, r.name),
    )


def show_run(cluster: str, name: str | None, home: Path | None = None) -> RunReport:
    """One run (default: the newest) with its task and role timings."""
    runs = ClusterPaths.for_cluster(cluster, home).runs
    if name is None:
        records = list_runs(cluster, home)
        if not records:
            raise NotFoundError(
                f"cluster {cluster} has no runs yet",
                hint=f"'metalctl deploy swarm --cluster {cluster}' makes one",
            )
        name = records[-1].name
    run_dir = runs / name
    if "/" in name or name.startswith(".") or not run_dir.is_dir():
        known = [r.name for r in list_runs(cluster, home)[-5:]]
        raise NotFoundError(
            f"cluster {cluster} has no run named '{name}'",
            hint="newest runs: "
            + (", ".join(known) if known else "none")
            + f"; 'metalctl runs list --cluster {cluster}' lists them all",
        )
    tasks = task_timings(run_dir)
    return RunReport(read_record(run_dir), run_dir, role_timings(tasks), tasks)
