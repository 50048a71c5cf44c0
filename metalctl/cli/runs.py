"""`metalctl runs list|show`: the workload runs of a cluster and where their time went."""

from __future__ import annotations

import click

from metalctl.cli import views
from metalctl.cli.format import OUTPUT_OPTION, emit
from metalctl.deploy.timing import TaskTiming, list_runs, show_run, slowest
from metalctl.store import Store

_CLUSTER = click.option("--cluster", "-c", metavar="NAME", required=True, help="The cluster.")


@click.group("runs")
def runs_group() -> None:
    """Workload runs ('deploy swarm', 'nodes add'): status, changes and timings.

    Each run keeps its Ansible artifacts under $METALCTL_HOME/clusters/NAME/runs/RUN/;
    these commands read them back.
    """


@runs_group.command("list")
@_CLUSTER
@OUTPUT_OPTION
def runs_list_cmd(cluster: str, output: str) -> None:
    """List the cluster's runs, oldest first."""
    records = list_runs(cluster)
    if not records:
        Store().get_cluster(cluster)  # no runs and no such cluster: a typo, say so (exit 4)
    rows = [
        {
            "run": r.name,
            "status": r.status,
            "seconds": "" if r.seconds is None else f"{r.seconds:.1f}",
            "nodes": len(r.nodes) or "",
            "changed": sum(r.changed.values()) if r.changed else "",
            "failed": r.failed_phase or "",
        }
        for r in records
    ]
    emit(
        output,
        [views.run_record(r) for r in records],
        [
            ("RUN", "run"),
            ("STATUS", "status"),
            ("SECONDS", "seconds"),
            ("NODES", "nodes"),
            ("CHANGED", "changed"),
            ("FAILED IN", "failed"),
        ],
        rows=rows,
    )


@runs_group.command("show")
@click.argument("run", required=False, metavar="[RUN]")
@_CLUSTER
@click.option(
    "--top",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="How many of the slowest tasks to list.",
)
@OUTPUT_OPTION
def runs_show_cmd(run: str | None, cluster: str, top: int, output: str) -> None:
    """Show one run (default: the newest): its phases, the time per role and the slowest
    tasks. With --output json, every task on every host."""
    Store().get_cluster(cluster)  # a typo in the name: say so (exit 4)
    report = show_run(cluster, run)
    top_tasks = slowest(report.tasks, top)
    if output == "json":
        emit(output, views.run_report(report, slowest=top_tasks), [])
        return
    rec = report.record
    total = "" if rec.seconds is None else f" in {rec.seconds:.1f}s"
    changed = f", changed={sum(rec.changed.values())}" if rec.changed else ""
    emit(
        output,
        None,
        [("PHASE", "title"), ("SECONDS", "seconds")],
        title=f"run {rec.name} of {rec.cluster}: {rec.status}{total}{changed}"
        + (f"\nfailed in '{rec.failed_phase}': {rec.error}" if rec.failed_phase else ""),
        rows=rec.phases,
    )
    emit(
        output,
        None,
        [("ROLE", "role"), ("SECONDS", "seconds"), ("ON HOST", "host"), ("TASKS", "tasks")],
        title="time per role (on the host where it took longest)",
        rows=[{**views.role_timing(r), "seconds": f"{r.seconds:.1f}"} for r in report.roles],
    )
    slowest_table(top_tasks)
    click.echo(f"artifacts: {report.path}")


def slowest_table(tasks: list[TaskTiming]) -> None:
    """The slowest tasks as a table (also the end of 'deploy swarm')."""
    emit(
        "table",
        None,
        [("SECONDS", "seconds"), ("HOST", "host"), ("ROLE", "role"), ("TASK", "task")],
        title=f"slowest {len(tasks)} tasks",
        rows=[{**views.task_timing(t), "seconds": f"{t.seconds:.1f}"} for t in tasks],
    )
