"""`metalctl nodes`: the inventory."""

from __future__ import annotations

import datetime as dt

import click

from metalctl.cli import views
from metalctl.cli.common import QUIET_OPTION, seconds_option
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
        [views.node(n) for n in nodes],
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
    emit(output, views.node(node, facts=True), [("FIELD", "field"), ("VALUE", "value")], rows=rows)


@nodes_group.command("enroll")
@click.argument("machine")
@click.option("--cluster", "-c", metavar="NAME", required=True, help="The node's cluster.")
@click.option("--name", "node", metavar="NODE", required=True, help="The node (in the spec).")
def nodes_enroll_cmd(machine: str, cluster: str, node: str) -> None:
    """Make a discovered MACHINE (id or MAC) the machine of a cluster's NODE.

    For nodes whose spec entry has no mac:/serial:/uuid: (those match by themselves).
    'metalctl provision --cluster NAME NODE' then installs it.
    """
    from metalctl.operations.enroll import enroll_machine

    found = enroll_machine(Store(), cluster, node, machine)
    click.echo(f"machine {found.id} ({found.primary_mac}) is node {node} of cluster {cluster}")


@nodes_group.command("add")
@click.option("--cluster", "-c", metavar="NAME", required=True, help="The cluster to grow.")
@click.option(
    "--name",
    metavar="NODE",
    help="Lab: name of the new node (default CLUSTER-<next>). Otherwise: a ready node of "
    "the cluster's spec.",
)
@click.option(
    "--role",
    type=click.Choice(["worker", "manager"]),
    default="worker",
    show_default=True,
    help="Swarm role the node registers for in Consul.",
)
@seconds_option("--timeout", 300.0, "Seconds to wait for the controller to join the node.", low=1)
@QUIET_OPTION
@OUTPUT_OPTION
def nodes_add_cmd(
    cluster: str, name: str | None, role: str, timeout: float, quiet: bool, output: str
) -> None:
    """Add a node: make it ready, run the roles on it alone, let the controller join it.

    In a lab a new container node is created. The roles register the node in Consul as
    swarm-node with its role; 'metalctl swarm reconcile' (which must be running) joins it.
    This command issues no swarm join itself. The node is 'active' once joined; on a
    timeout or Ctrl-C it is 'failed', and the same command with --name retries it.
    """
    from metalctl.cli.progress import ConsoleProgress
    from metalctl.clusters import load_cluster
    from metalctl.operations.nodes import add_node

    store = Store()
    spec = load_cluster(store, cluster, None)
    progress = ConsoleProgress(quiet=quiet)
    try:
        change = add_node(
            store,
            spec,
            name=name,
            role=role,
            timeout=timeout,
            say=progress.message,
            progress=progress,
        )
    finally:
        progress.stop()
    emit(output, [change], _CHANGE_COLUMNS)


@nodes_group.command("remove")
@click.argument("name")
@click.option("--cluster", "-c", metavar="NAME", required=True, help="The node's cluster.")
@click.option(
    "--force",
    is_flag=True,
    help="Remove even when Swarm or Consul quorum arithmetic refuses it, or the node is dead.",
)
@click.option(
    "--keep",
    is_flag=True,
    help="Leave the machine as it is (ironic: deployed, active) instead of releasing it.",
)
@seconds_option(
    "--timeout",
    600.0,
    "Seconds to wait for the controller to drain, leave and remove the node.",
    low=1,
)
@QUIET_OPTION
@OUTPUT_OPTION
def nodes_remove_cmd(
    name: str, cluster: str, force: bool, keep: bool, timeout: float, quiet: bool, output: str
) -> None:
    """Remove a node: deregister it from Consul; the controller drains and removes it.

    A manager whose removal would break Swarm or Consul quorum (or spend its last spare
    failure: 3 managers -> 2) is refused with the arithmetic, unless --force. The node
    ends 'retired' in the store and its machine is released: a lab node's container is
    deleted, an Ironic node is retired and undeployed (cleaned) unless --keep.
    """
    from metalctl.cli.progress import ConsoleProgress
    from metalctl.clusters import load_cluster
    from metalctl.operations.nodes import remove_node

    store = Store()
    spec = load_cluster(store, cluster, None)
    progress = ConsoleProgress(quiet=quiet)
    try:
        change = remove_node(
            store, spec, name, force=force, keep=keep, timeout=timeout, say=progress.message
        )
    finally:
        progress.stop()
    emit(output, [change], _CHANGE_COLUMNS)


_CHANGE_COLUMNS = [
    ("CLUSTER", "cluster"),
    ("NODE", "node"),
    ("ROLE", "role"),
    ("ADDRESS", "address"),
    ("STATE", "state"),
]
