"""The documented shapes of `--output json` (docs/output.md): plain dicts built on purpose.

Not dataclass dumps: a renamed internal field must not change what scripts read. Times are
ISO 8601 in UTC with milliseconds ("2026-11-22T05:30:00.125Z"), never epoch floats; keys are snake_case; a key
is only ever added, never renamed or removed, within apiVersion metalctl/v1alpha1.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metalctl.deploy.apply import DeployResult
    from metalctl.deploy.timing import RoleTiming, RunRecord, RunReport, TaskTiming
    from metalctl.deployments import Deployment
    from metalctl.operations.package_cache import FillResult
    from metalctl.operations.status import Quorum, SwarmStatus
    from metalctl.store import EventRecord, MachineRecord, NodeRecord


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    # Milliseconds: event latencies (the membership bench) are sub-second.
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def node(n: NodeRecord, *, facts: bool = False) -> dict[str, Any]:
    view: dict[str, Any] = {
        "cluster": n.cluster,
        "name": n.name,
        "address": n.address,
        "role": n.role,
        "state": n.state,
        "labels": dict(n.labels),
        "last_error": n.last_error,
        "updated": iso(n.updated_at),
    }
    if facts:
        view["facts"] = dict(n.facts)
    return view


def event(e: EventRecord) -> dict[str, Any]:
    return {
        "id": e.id,
        "time": iso(e.ts),
        "cluster": e.cluster,
        "node": e.node,
        "kind": e.kind,
        "from_state": e.from_state,
        "to_state": e.to_state,
        "reason": e.reason,
        "actor": e.actor,
    }


def deploy(result: DeployResult) -> dict[str, Any]:
    timings = result.report.timings if result.report else []
    return {
        "cluster": result.cluster,
        "workload": result.workload,
        "run_dir": str(result.run_dir) if result.run_dir else None,
        "changed": dict(result.changed),
        "phases": [{"title": t.title, "seconds": round(t.seconds, 3)} for t in timings],
        "slowest_tasks": [task_timing(t) for t in result.slowest],
    }


def task_timing(t: TaskTiming) -> dict[str, Any]:
    return {
        "host": t.host,
        "role": t.role,
        "task": t.task,
        "status": t.status,
        "seconds": round(t.seconds, 3),
        "start": t.start,
    }


def role_timing(r: RoleTiming) -> dict[str, Any]:
    return {"role": r.role, "seconds": round(r.seconds, 3), "host": r.host, "tasks": r.tasks}


def run_record(r: RunRecord) -> dict[str, Any]:
    return {
        "run": r.name,
        "cluster": r.cluster,
        "workload": r.workload,
        "started": iso(r.started),
        "status": r.status,
        "seconds": r.seconds,
        "nodes": list(r.nodes),
        "changed": dict(r.changed),
        "total_changed": sum(r.changed.values()),
        "phases": list(r.phases),
        "failed_phase": r.failed_phase,
        "error": r.error,
    }


def run_report(r: RunReport, *, slowest: list[TaskTiming]) -> dict[str, Any]:
    return {
        **run_record(r.record),
        "path": str(r.path),
        "roles": [role_timing(x) for x in r.roles],
        "slowest_tasks": [task_timing(t) for t in slowest],
        "tasks": [task_timing(t) for t in r.tasks],
    }


def cache_fill(r: FillResult) -> dict[str, Any]:
    return {
        "workload": r.workload,
        "packages": list(r.packages),
        "cache_dir": r.cache_dir,
        "fetched_files": r.fetched_files,
        "fetched_bytes": r.fetched_bytes,
        "fetched_debs": r.fetched_debs,
        "served_files": r.served_files,
        "served_bytes": r.served_bytes,
        "cache_bytes": r.cache_bytes,
        "seconds": r.seconds,
    }


def _quorum(q: Quorum) -> dict[str, int]:
    return {
        "voters": q.voters,
        "reachable": q.reachable,
        "needed": q.needed,
        "fault_tolerance": q.fault_tolerance,
    }


def swarm_status(s: SwarmStatus) -> dict[str, Any]:
    ctl = s.controller
    return {
        "cluster": s.cluster,
        "master": s.master,
        "swarm_nodes": [
            {
                "hostname": n.hostname,
                "role": n.role,
                "state": n.state,
                "availability": n.availability,
                "manager_status": n.manager_status,
                "address": n.address,
            }
            for n in s.swarm_nodes
        ],
        "consul_members": [
            {"name": m.name, "address": m.address, "status": m.status, "role": m.role}
            for m in s.consul_members
        ],
        "swarm_quorum": _quorum(s.swarm_quorum),
        "consul_quorum": _quorum(s.consul_quorum),
        "consul_leader": s.consul_leader,
        "controller": {
            "leader": ctl.leader,
            "last_pass": iso(ctl.last_pass),
            "last_actions": list(ctl.last_actions),
            "last_errors": list(ctl.last_errors),
        },
    }


def machine(
    m: MachineRecord, *, facts: bool = False, deployment: Deployment | None = None
) -> dict[str, Any]:
    """A discovered machine; ``disks`` is a short text (``vda 4096M``) for tables."""
    disks = m.facts.get("disks", [])
    view: dict[str, Any] = {
        "id": m.id,
        "primary_mac": m.primary_mac,
        "macs": list(m.macs),
        "state": m.state,
        "cluster": m.cluster,
        "node": m.node,
        "boot_mode": m.facts.get("boot_mode"),
        "cpus": (m.facts.get("cpu") or {}).get("count"),
        "memory_mib": int(m.facts.get("memory_bytes", 0)) >> 20,
        "disks": " ".join(f"{d['name']} {int(d['size_bytes']) >> 20}M" for d in disks),
        "serial": m.serial,
        "smbios_uuid": m.smbios_uuid,
        "first_seen": iso(m.first_seen),
        "last_seen": iso(m.last_seen),
    }
    if facts:
        view["facts"] = dict(m.facts)
    if deployment is not None:
        view["deployment"] = {
            "node": deployment.node,
            "image": deployment.job.image.name if deployment.job.image else "kickstart",
            "disk": deployment.job.disk,
            "status": deployment.status,
            "phase": deployment.phase,
            "bytes_sent": deployment.bytes_sent,
            "message": deployment.message,
            "started": iso(deployment.created_at),
            "finished": iso(deployment.finished_at) if deployment.finished_at else None,
        }
    return view
