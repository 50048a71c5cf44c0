"""`metalctl swarm`: access to a deployed swarm."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.console import Console

from metalctl.cli import views
from metalctl.cli.common import CLUSTER_OPTION, FILE_OPTION, cluster_from_options, seconds_option
from metalctl.cli.format import OUTPUT_OPTION, emit
from metalctl.paths import ClusterPaths
from metalctl.shell_env import (
    SHELLS,
    ensure_docker_context,
    render_comment,
    render_exports,
    usage_line,
)
from metalctl.store import Store


@click.group("swarm")
def swarm_group() -> None:
    """Talk to a deployed swarm (always over mutual TLS)."""


@swarm_group.command("env")
@CLUSTER_OPTION
@FILE_OPTION
@click.option(
    "--shell",
    type=click.Choice(SHELLS),
    default="bash",
    show_default=True,
    help='Shell to print for: bash/zsh/sh (eval "$(...)"), fish (... | source), '
    "powershell (... | Invoke-Expression).",
)
@click.option(
    "--context",
    "context",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[NAME]",
    help="Instead of printing variables, create or update the docker context NAME "
    "(default metalctl-CLUSTER) with the docker CLI.",
)
def swarm_env_cmd(
    cluster: str | None, spec_file: Path | None, replace: bool, shell: str, context: str | None
) -> None:
    """Point the docker CLI at the swarm's master over mutual TLS.

    \b
    eval "$(metalctl swarm env -c NAME)"           bash, zsh, sh
    metalctl swarm env -c NAME --shell fish | source
    metalctl swarm env -c NAME --context           then: docker --context metalctl-NAME node ls
    """
    from metalctl.clients.docker import docker_env  # lazy: the Docker SDK

    spec = cluster_from_options(Store(), cluster, spec_file, replace)
    paths = ClusterPaths.for_cluster(spec.name)
    env = docker_env(spec, paths)
    if context is not None:
        made = ensure_docker_context(
            context or f"metalctl-{spec.name}",
            env.host,
            Path(env.cert_path),
            f"metalctl cluster {spec.name} (master {spec.spec.swarm.master})",
        )
        click.echo(
            f"docker context {made.name} {'created' if made.created else 'updated'} for "
            f"cluster {spec.name} ({env.host})\n"
            f"  one command:  docker --context {made.name} node ls\n"
            f"  from now on:  docker context use {made.name}"
        )
        return
    lines = render_exports(env.exports(), shell)  # refuses unsafe values before printing
    for line in lines:
        click.echo(line)
    command = f"metalctl swarm env --cluster {spec.name}" + (
        f" --shell {shell}" if shell != "bash" else ""
    )
    click.echo(render_comment(f"docker talks to master {spec.spec.swarm.master} ({env.host})"))
    click.echo(render_comment(f"run: {usage_line(shell, command)}"))


@swarm_group.command("status")
@CLUSTER_OPTION
@FILE_OPTION
@OUTPUT_OPTION
def swarm_status_cmd(
    cluster: str | None, spec_file: Path | None, replace: bool, output: str
) -> None:
    """Show Swarm nodes and Consul members, with quorum and fault tolerance of each."""
    from metalctl.operations.status import swarm_status  # lazy: the Docker SDK

    spec = cluster_from_options(Store(), cluster, spec_file, replace)
    status = swarm_status(spec, ClusterPaths.for_cluster(spec.name))
    if output == "json":
        emit(output, views.swarm_status(status), [])
        return
    sq, cq = status.swarm_quorum, status.consul_quorum
    emit(
        output,
        status,
        [
            ("HOSTNAME", "hostname"),
            ("ROLE", "role"),
            ("STATUS", "state"),
            ("AVAILABILITY", "availability"),
            ("MANAGER", "manager_status"),
            ("ADDRESS", "address"),
        ],
        title=f"swarm {status.cluster}: {sq.reachable}/{sq.voters} managers reachable, quorum "
        f"{sq.needed}, tolerates {sq.fault_tolerance} failure(s)",
        rows=status.swarm_nodes,
    )
    emit(
        output,
        status,
        [("NODE", "name"), ("ADDRESS", "address"), ("STATUS", "status"), ("ROLE", "role")],
        title=f"consul: {cq.reachable}/{cq.voters} servers alive, quorum {cq.needed}, "
        f"tolerates {cq.fault_tolerance} failure(s), leader {status.consul_leader}",
        rows=status.consul_members,
    )
    ctl = status.controller
    if not ctl.leader:
        click.echo("controller: none holds the lock (start one: metalctl swarm reconcile)")
    else:
        ago = f"{time.time() - ctl.last_pass:.0f}s ago" if ctl.last_pass else "not yet"
        click.echo(f"controller: {ctl.leader} leads; last pass {ago}")
        for line in ctl.last_errors:
            click.echo(f"  last pass error: {line}")
    if not (sq.has_quorum and cq.has_quorum):
        Console(stderr=True).print("[red]warning: a quorum is lost[/red]")


@swarm_group.command("reconcile")
@CLUSTER_OPTION
@FILE_OPTION
@click.option(
    "--agent",
    metavar="NODE",
    help="Consul agent (a manager) this controller talks through and whose health its "
    "lock is tied to. Default: the master. Run one controller per manager for HA.",
)
@click.option("--once", is_flag=True, help="One full pass, then exit (needs the lock free).")
@seconds_option(
    "--grace",
    300.0,
    "Seconds a node may be critical before it is taken out (longer than a reboot).",
)
@seconds_option(
    "--absent-wait",
    15.0,
    "Seconds a registration must stay gone before it counts as a deregistration "
    "(a restarted agent needs a moment to sync its services).",
)
@seconds_option(
    "--rejoin-after",
    30.0,
    "Seconds a removed node must pass continuously before it rejoins (anti-flap).",
)
@seconds_option(
    "--drain-timeout",
    300.0,
    "Seconds to wait for a drained node's tasks to move before removing it anyway.",
)
@seconds_option(
    "--lock-delay",
    10.0,
    "Seconds Consul keeps the lock of a dead leader before another may take it.",
    low=1,
    high=60,
)
@click.option(
    "--verbose", "-v", is_flag=True, help="Also print a line per pass (what woke it, what it did)."
)
@OUTPUT_OPTION
def swarm_reconcile_cmd(
    cluster: str | None,
    spec_file: Path | None,
    replace: bool,
    agent: str | None,
    once: bool,
    grace: float,
    absent_wait: float,
    rejoin_after: float,
    drain_timeout: float,
    lock_delay: float,
    verbose: bool,
    output: str,
) -> None:
    """Keep swarm membership equal to Consul's swarm-node registrations.

    \b
    registered + passing, not in the swarm  -> join (worker or manager, as registered)
    deregistered                            -> drain, wait for tasks, leave, node rm
    critical for longer than --grace        -> the same (managers: demote first, only
                                               when Swarm and Consul quorum survive)
    passing again for --rejoin-after        -> rejoin

    Long-running; several may run (one per manager): a Consul lock elects the one that
    acts. Every action is an event: 'metalctl events --cluster NAME'. SIGTERM stops it
    at once when it is waiting (after the current pass otherwise) and hands the lock over
    without delay.
    """
    import signal
    import threading

    from metalctl.membership.controller import (
        ControllerOptions,
        PassReport,
        Record,
        stop_handler,
    )
    from metalctl.membership.election import LockTimings
    from metalctl.membership.runtime import build_controller

    spec = cluster_from_options(Store(), cluster, spec_file, replace)
    err = Console(stderr=True)

    def line(text: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        err.print(f"{stamp} {text}", markup=False, soft_wrap=True, highlight=False)

    def show(rec: Record) -> None:
        line(f"{rec.kind:<8} {rec.node or '-':<16} {rec.reason}")

    def show_pass(report: PassReport) -> None:
        done = ", ".join(f"{a.kind} {a.node}" for a, _ in report.actions) or "no action"
        line(
            f"{'pass':<8} {'-':<16} waited {report.waited:.1f}s of {report.asked:.0f}s, "
            f"read {report.read}, "
            f"decided {report.scope} of {report.registrations}: {done}"
        )

    options = ControllerOptions(
        grace=grace, absent=absent_wait, rejoin_after=rejoin_after, drain_timeout=drain_timeout
    )
    timings = LockTimings(lock_delay=lock_delay)
    controller = build_controller(
        Store(),
        spec,
        agent,
        options,
        timings,
        on_record=show,
        on_pass=show_pass if verbose else None,
    )
    if once:
        report = controller.run_once()
        rows = [{"action": a.kind, "node": a.node, "outcome": o} for a, o in report.actions]
        emit(output, rows, [("ACTION", "action"), ("NODE", "node"), ("OUTCOME", "outcome")])
        return
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop_handler(controller, stop))
    line(f"controller {controller.lock.holder} for cluster {spec.name}: standing by for the lock")
    controller.run(stop)
    line("controller stopped; lock released")
