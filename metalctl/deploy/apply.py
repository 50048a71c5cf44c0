"""`metalctl deploy WORKLOAD`: the ordered phases that take ready nodes to a working cluster."""

from __future__ import annotations

import contextlib
import functools
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from metalctl import lifecycle
from metalctl.clients.consul import consul_server_api
from metalctl.clients.docker import docker_for
from metalctl.conventions import hostname_of
from metalctl.deploy.inventory import ConsulSource, render_inventory
from metalctl.deploy.lock import deploy_lock
from metalctl.deploy.phases import ApplyReport, Phase, PhaseProgress, apply
from metalctl.deploy.runner import PlayResult, TaskEvent, new_run_dir, run_playbook
from metalctl.deploy.timing import RunRecord, TaskTiming, slowest, task_timings, write_record
from metalctl.deploy.workload import Workload, load_workload
from metalctl.errors import (
    ClusterAccessError,
    ConflictError,
    DeployError,
    HostSetupError,
    MetalctlError,
)
from metalctl.paths import ClusterPaths, metalctl_home
from metalctl.pki import ensure_cluster_pki, ensure_cluster_secrets
from metalctl.spec import ClusterSpec
from metalctl.sshkeys import ensure_ssh_key
from metalctl.store import Store
from metalctl.wait import wait_for

DEPLOYABLE = {lifecycle.READY, lifecycle.ACTIVE, lifecycle.FAILED, lifecycle.DEPLOYING}


class DeployProgress(PhaseProgress, Protocol):
    def task(self, event: TaskEvent) -> None: ...


@dataclass(frozen=True)
class DeployOptions:
    ssh_timeout: float = 60.0
    swarm_timeout: float = 180.0
    # Deploy only these nodes (day 2: 'nodes add'); None = every node not retired.
    only: tuple[str, ...] | None = None
    # False: the roles only register the nodes in Consul; the controller joins them.
    join_by_ansible: bool = True


@dataclass
class DeployResult:
    cluster: str
    workload: str
    run_dir: Path | None = None
    changed: dict[str, int] = field(default_factory=dict)
    report: ApplyReport | None = None
    slowest: list[TaskTiming] = field(default_factory=list)  # of this run, longest first


@dataclass
class _Ctx:
    store: Store
    spec: ClusterSpec
    paths: ClusterPaths
    workload: Workload
    options: DeployOptions
    progress: DeployProgress | None
    ssh_key: Path | None = None
    consul: ConsulSource | None = None
    play: PlayResult | None = None
    run_dir: Path | None = None
    retired: frozenset[str] = frozenset()  # read once, at the start
    names: list[str] = field(default_factory=list)  # the nodes this deploy touches


def deploy(
    store: Store,
    spec: ClusterSpec,
    workload_name: str = "swarm",
    options: DeployOptions | None = None,
    progress: DeployProgress | None = None,
) -> DeployResult:
    ctx = _Ctx(
        store,
        spec,
        ClusterPaths.for_cluster(spec.name),
        load_workload(workload_name),
        options or DeployOptions(),
        progress,
    )
    ctx.retired = frozenset(
        n.name for n in store.list_nodes(spec.name) if n.state == lifecycle.RETIRED
    )
    only = ctx.options.only  # day 2 ('nodes add'); else every node that is not retired
    ctx.names = (
        list(only)
        if only is not None
        else [n.name for n in spec.nodes if n.name not in ctx.retired]
    )
    # join_by_ansible=False: the controller joins the nodes later, and the caller marks
    # them active once it has.
    joins = ctx.options.join_by_ansible
    phases: list[Phase[_Ctx]] = [
        Phase("check nodes", _check_nodes, prepare=_check_states),
        Phase("prepare PKI and secrets", _prepare_pki, prepare=_check_sources),
        Phase("mark nodes deploying", _mark_deploying),
        Phase("run workload roles", _run_roles),
        *([Phase("verify swarm", _verify_swarm)] if joins else []),
        Phase("verify Consul registrations", _verify_registrations),
        *([Phase("mark nodes active", _mark_active)] if joins else []),
    ]
    report = ApplyReport()
    started = time.time()
    with deploy_lock(ctx.paths, f"deploy {workload_name} of {', '.join(ctx.names)}"):
        try:
            apply(phases, ctx, progress, report)
        except DeployError as exc:
            _mark_failed(ctx, exc.message)
            _record_run(ctx, report, started, "failed", exc.message)
            raise
        except BaseException as exc:
            # Ctrl-C, a crash in the Docker SDK or ansible-runner, a full disk: the nodes
            # must not stay 'deploying' without a word; the caller still sees the exception.
            _mark_failed(ctx, _what_happened(exc))
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            _record_run(ctx, report, started, status, _what_happened(exc))
            raise
        _record_run(ctx, report, started, "successful", None)
    result = DeployResult(spec.name, workload_name, ctx.run_dir, report=report)
    if ctx.play:
        # Ansible's stats list only hosts with a non-zero count; report every node.
        result.changed = _changed(ctx)
    if ctx.run_dir:
        result.slowest = slowest(task_timings(ctx.run_dir))
    return result


def _changed(ctx: _Ctx) -> dict[str, int]:
    play = ctx.play
    return {n: play.changed.get(n, 0) for n in ctx.names} if play else {}


def _record_run(
    ctx: _Ctx, report: ApplyReport, started: float, status: str, error: str | None
) -> None:
    """run.json beside the run's Ansible artifacts: what 'metalctl runs' reads back."""
    if ctx.run_dir is None:  # stopped before the roles ran: no run to speak of
        return
    record = RunRecord(
        name=ctx.run_dir.name,
        cluster=ctx.spec.name,
        workload=ctx.workload.name,
        started=started,
        status=status,
        seconds=round(time.time() - started, 3),
        nodes=list(ctx.names),
        changed=_changed(ctx),
        phases=[{"title": t.title, "seconds": round(t.seconds, 3)} for t in report.timings],
        failed_phase=report.running if status != "successful" else None,
        error=error,
    )
    # On a failure, the deploy's own error is the one to report: a full disk here is not.
    with contextlib.suppress(OSError):
        write_record(ctx.run_dir, record)


def _check_states(ctx: _Ctx) -> None:
    ctx.workload.check(ctx.spec)  # its constraints, e.g. an odd number of managers
    names = set(ctx.names)
    for node in ctx.store.list_nodes(ctx.spec.name):
        if node.name in names and node.state not in DEPLOYABLE:
            raise ConflictError(
                f"node {node.name} is '{node.state}', not ready for a deploy",
                hint="only ready, active or failed nodes can be deployed: "
                f"'metalctl provision -c {ctx.spec.name}' first, or 'provision: true' in "
                "the spec",
            )


def _check_sources(ctx: _Ctx) -> None:
    _check_pki_generation(ctx)
    _check_consul_source(ctx)


def _check_pki_generation(ctx: _Ctx) -> None:
    """A cluster deployed before the admin client CA existed gets it, and a new admin
    cert, on its next deploy; a deploy of some nodes only ('nodes add') would leave the
    other nodes' dockerd trusting the old CA and refusing metalctl."""
    pki = ctx.paths.pki
    old_pki = (pki / "ca.pem").exists() and not (pki / "client-ca.pem").exists()
    if ctx.options.only is not None and old_pki:
        raise ConflictError(
            f"cluster {ctx.spec.name} was deployed by an older metalctl (one CA for "
            "nodes and admin); a deploy of some nodes only would lock metalctl out of "
            "the others",
            hint=f"run 'metalctl deploy swarm --cluster {ctx.spec.name}' once first",
        )


def _check_consul_source(ctx: _Ctx) -> None:
    cs = ctx.spec.spec.consul
    if cs.binary is not None:
        ctx.consul = ConsulSource(url=cs.binary.url, sha256=cs.binary.sha256)
        return
    cached = metalctl_home() / "artifacts" / "consul" / cs.version / "consul"
    if not cached.exists():
        raise HostSetupError(
            f"no Consul {cs.version} binary in the artifact cache ({cached}) and "
            "spec.consul.binary gives no URL",
            hint="run 'make setup' (fetches it), or set spec.consul.binary.url and .sha256",
        )
    ctx.consul = ConsulSource(src=cached)


def _check_nodes(ctx: _Ctx) -> None:
    """Fail early, per node, when SSH is not answering (rather than deep inside Ansible)."""
    for node in (ctx.spec.node(n) for n in ctx.names):
        wait_for(
            functools.partial(_tcp_open, node.address, node.ssh.port),
            what=f"node {node.name}: SSH on {node.address}:{node.ssh.port}",
            timeout=ctx.options.ssh_timeout,
            interval=1.0,
            hint="is the machine up? for a lab: 'metalctl lab status --name CLUSTER'",
        )


def _prepare_pki(ctx: _Ctx) -> None:
    ensure_cluster_pki(ctx.paths, ctx.spec)
    ensure_cluster_secrets(ctx.paths, ctx.spec)
    ctx.ssh_key = ensure_ssh_key()


def _mark_deploying(ctx: _Ctx) -> None:
    lifecycle.transition(
        ctx.store,
        ctx.spec.name,
        ctx.names,
        lifecycle.DEPLOYING,
        f"deploy {ctx.workload.name} started",
    )


def _run_roles(ctx: _Ctx) -> None:
    assert ctx.ssh_key is not None and ctx.consul is not None
    ctx.run_dir = new_run_dir(ctx.paths.runs, ctx.workload.name)
    on_task: Callable[[TaskEvent], None] | None = ctx.progress.task if ctx.progress else None
    ctx.play = run_playbook(
        run_dir=ctx.run_dir,
        project_dir=ctx.workload.directory,
        playbook=ctx.workload.playbook,
        roles_path=ctx.workload.roles_path,
        inventory=render_inventory(
            ctx.spec, ctx.paths, ctx.ssh_key, ctx.consul, retired=ctx.retired
        ),
        known_hosts=ctx.paths.known_hosts,
        phase="run workload roles",
        on_task=on_task,
        forks=max(5, min(len(ctx.spec.nodes), 25)),
        limit=ctx.names,
        extravars={"swarm_join_by_ansible": ctx.options.join_by_ansible},
    )


def _verify_swarm(ctx: _Ctx) -> None:
    want = set(ctx.names)
    master = ctx.spec.spec.swarm.master

    def all_ready() -> bool:
        client = docker_for(ctx.spec, ctx.paths, timeout=10)
        try:
            ready = {hostname_of(n) for n in client.nodes() if n["Status"]["State"] == "ready"}
        finally:
            client.close()
        return want <= ready

    # Access errors count as "not yet"; the timeout message quotes the last one.
    wait_for(
        all_ready,
        what=f"swarm on {master}: all {len(want)} nodes Ready",
        timeout=ctx.options.swarm_timeout,
        interval=2.0,
    )


def _verify_registrations(ctx: _Ctx) -> None:
    """Every deployed node's swarm-node service is in the Consul catalog.

    An agent syncs its services some seconds after it starts (longer when its ACL token was
    created after it started). A membership controller started right after a deploy must
    not find swarm members without a registration: that is what a deregistration looks like.
    """
    want = set(ctx.names)

    def all_registered() -> bool:
        with contextlib.closing(consul_server_api(ctx.spec, ctx.paths, ctx.retired)) as api:
            missing = want - {r.node for r in api.swarm_nodes()[1]}
        if missing:
            raise ClusterAccessError(f"not in the catalog yet: {', '.join(sorted(missing))}")
        return True

    wait_for(
        all_registered,
        what=f"Consul: a swarm-node registration for each of {len(want)} nodes",
        timeout=ctx.options.swarm_timeout,
        interval=1.0,
    )


def _mark_active(ctx: _Ctx) -> None:
    lifecycle.transition(
        ctx.store,
        ctx.spec.name,
        ctx.names,
        lifecycle.ACTIVE,
        f"deploy {ctx.workload.name} finished",
    )


def _what_happened(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "deploy interrupted (Ctrl-C or SIGINT)"
    return f"deploy stopped by an unexpected {type(exc).__name__}: {exc}"


def _mark_failed(ctx: _Ctx, error: str) -> None:
    # Only this deploy's nodes: a 'nodes add' waiting for its join is deploying too.
    mine = set(ctx.names)
    deploying = [
        n.name
        for n in ctx.store.list_nodes(ctx.spec.name)
        if n.state == lifecycle.DEPLOYING and n.name in mine
    ]
    if not deploying:
        return
    # The original deploy error is the one worth reporting; don't mask it.
    with contextlib.suppress(MetalctlError):
        lifecycle.transition(
            ctx.store,
            ctx.spec.name,
            deploying,
            lifecycle.FAILED,
            f"deploy {ctx.workload.name} failed",
            error=error,
        )


def _tcp_open(address: str, port: int) -> bool:
    with socket.create_connection((address, port), timeout=2):
        return True
