"""`metalctl nodes`: the inventory."""

from __future__ import annotations

import datetime as dt

import click

from metalctl.cli.format import OUTPUT_OPTION, emit
from metalctl.errors import NotFoundError, UsageError
from metalctl.store import Store


@click.group("nodes")
def nodes_group() -> None:
    """List and inspect the nodes metalctl knows."""


@nodes_group.command("list")
@click.option("--cluster", "-c", metavar="NAME", help="Only this cluster's nodes.")
@OUTPUT_OPTION
def nodes_list_cmd(cluster: str | None, output: str) -> None:
    """List nodes with their cluster, address, role and lifecycle state."""
    store = Store()
    if cluster:
        store.get_cluster(cluster)  # a clear error for an unknown cluster
    nodes = store.list_nodes(cluster)
    emit(
        output,
        nodes,
        [
            ("CLUSTER", "cluster"),
            ("NODE", "name"),
            ("ADDRESS", "address"),
            ("ROLE", "role"),
            ("STATE", "state"),
            ("LAST ERROR", "last_error"),
        ],
    )


@nodes_group.command("show")
@click.argument("name")
@click.option("--cluster", "-c", metavar="NAME", help="Needed when several clusters have NAME.")
@OUTPUT_OPTION
def nodes_show_cmd(name: str, cluster: str | None, output: str) -> None:
    """Show one node: state, labels, facts and last error."""
    matches = Store().find_nodes(name, cluster)
    if not matches:
        raise NotFoundError(
            f"no node named '{name}'" + (f" in cluster '{cluster}'" if cluster else ""),
            hint="'metalctl nodes list' lists the known nodes",
        )
    if len(matches) > 1:
        raise UsageError(
            f"several clusters have a node '{name}': "
            f"{', '.join(m.cluster for m in matches)}; add --cluster"
        )
    node = matches[0]
    rows = [
        {"field": "cluster", "value": node.cluster},
        {"field": "name", "value": node.name},
        {"field": "address", "value": node.address},
        {"field": "role", "value": node.role},
        {"field": "state", "value": node.state},
        {"field": "labels", "value": node.labels},
        {
            "field": "updated",
            "value": dt.datetime.fromtimestamp(node.updated_at).isoformat(timespec="seconds"),
        },
        {"field": "last_error", "value": node.last_error or ""},
    ] + [{"field": f"fact.{k}", "value": v} for k, v in node.facts.items()]
    emit(output, node, [("FIELD", "field"), ("VALUE", "value")], rows=rows)
