"""`metalctl events`: the cluster's event log."""

from __future__ import annotations

import datetime as dt

import click

from metalctl.cli import views
from metalctl.cli.format import OUTPUT_OPTION, emit
from metalctl.store import Store


@click.command("events")
@click.option("--cluster", "-c", metavar="NAME", required=True)
@click.option(
    "--limit",
    # SQLite reads LIMIT -1 as "no limit": the range keeps it a count.
    type=click.IntRange(1, 100_000),
    default=200,
    show_default=True,
    help="Newest N events.",
)
@OUTPUT_OPTION
def events_cmd(cluster: str, limit: int, output: str) -> None:
    """Show the cluster's events: state changes with who, when and why.

    A removed cluster's events are kept and still shown.
    """
    store = Store()
    events = store.list_events(cluster, limit)
    if not events:
        store.get_cluster(cluster)  # no events and no such cluster: a typo, say so (exit 4)
    rows = [
        {
            "time": dt.datetime.fromtimestamp(e.ts).isoformat(timespec="seconds"),
            "node": e.node or "",
            "kind": e.kind,
            "change": f"{e.from_state or ''} -> {e.to_state}" if e.to_state else "",
            "reason": e.reason,
            "actor": e.actor,
        }
        for e in events
    ]
    emit(
        output,
        [views.event(e) for e in events],
        [
            ("TIME", "time"),
            ("NODE", "node"),
            ("KIND", "kind"),
            ("CHANGE", "change"),
            ("REASON", "reason"),
        ],
        rows=rows,
    )
