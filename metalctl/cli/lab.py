"""`metalctl lab`: container machines for test drives and CI."""

from __future__ import annotations

import click

from metalctl.cli.format import OUTPUT_OPTION, emit
from metalctl.cli.progress import ConsoleProgress
from metalctl.store import Store


@click.group("lab")
def lab_group() -> None:
    """Local lab: containers that behave like freshly installed machines.

    Nodes run systemd and sshd (with metalctl's key) on their own bridge network,
    at fixed addresses; the node image is built offline with debootstrap on first use.
    """


@lab_group.command("up")
@click.option("--name", required=True, help="Lab (and cluster) name; nodes are NAME-1..NAME-N.")
@click.option(
    "--nodes", type=click.IntRange(1, 200), default=4, show_default=True, help="Number of nodes."
)
@click.option(
    "--managers",
    # names[:managers] would read -1 as "all but one": the range keeps it a count.
    type=click.IntRange(1, 7),
    default=3,
    show_default=True,
    help="Swarm managers (odd, at most 7); NAME-1 is the master.",
)
@click.option(
    "--consul-servers",
    type=click.IntRange(min=1),
    default=None,
    help="Consul servers (odd). Default: min(managers, 3).",
)
@OUTPUT_OPTION
def lab_up_cmd(
    name: str, nodes: int, managers: int, consul_servers: int | None, output: str
) -> None:
    """Create a lab of ready nodes and write its cluster spec. Re-running is harmless."""
    progress = ConsoleProgress()
    from metalctl.deploy.workload import DEFAULT_WORKLOAD, load_workload
    from metalctl.provisioners import lab  # lazy: the Docker SDK is slow to import

    spec = lab.lab_up(
        Store(),
        name,
        nodes,
        managers,
        consul_servers,
        progress=progress.message,
        check=load_workload(DEFAULT_WORKLOAD).check,
    )
    rows = [
        {
            "name": n.name,
            "address": n.address,
            "role": spec.role_of(n.name),
            "consul": "server" if n.name in spec.spec.consul.servers else "client",
        }
        for n in spec.nodes
    ]
    emit(
        output,
        {"cluster": spec.name, "nodes": rows},
        [("NODE", "name"), ("ADDRESS", "address"), ("SWARM ROLE", "role"), ("CONSUL", "consul")],
        title=f"lab {name}: {len(rows)} nodes ready",
        rows=rows,
    )


@lab_group.command("status")
@click.option("--name", required=True, help="Lab name.")
@OUTPUT_OPTION
def lab_status_cmd(name: str, output: str) -> None:
    """Show the lab's containers, addresses and node states."""
    from metalctl.provisioners import lab

    status = lab.lab_status(Store(), name)
    emit(
        output,
        status,
        [("NODE", "name"), ("ADDRESS", "address"), ("CONTAINER", "container"), ("STATE", "state")],
        title=f"lab {name} on {status.network} ({status.subnet})",
        rows=status.nodes,
    )


@lab_group.command("down")
@click.option("--name", required=True, help="Lab name.")
def lab_down_cmd(name: str) -> None:
    """Remove every container, volume and network of the lab, and forget the cluster.

    Only objects made from this $METALCTL_HOME: a lab of the same name made from another
    home is left alone (and listed).
    """
    from metalctl.provisioners import lab

    down = lab.lab_down(Store(), name, progress=ConsoleProgress().message)
    click.echo(
        f"lab {name}: removed {len(down.removed)} objects"
        if down.removed
        else f"lab {name}: nothing to remove"
    )
    for other in down.left_alone:
        click.echo(f"  left alone: {other}: another metalctl home's lab of the same name")
