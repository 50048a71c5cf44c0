"""`metalctl swarm`: access to a deployed swarm."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from metalctl.cli.common import CLUSTER_OPTION, FILE_OPTION, cluster_from_options
from metalctl.cli.format import OUTPUT_OPTION, emit
from metalctl.paths import ClusterPaths
from metalctl.store import Store


@click.group("swarm")
def swarm_group() -> None:
    """Talk to a deployed swarm (always over mutual TLS)."""


@swarm_group.command("env")
@CLUSTER_OPTION
@FILE_OPTION
def swarm_env_cmd(cluster: str | None, spec_file: Path | None) -> None:
    """Print shell exports for the docker CLI: eval "$(metalctl swarm env -c NAME)"."""
    from metalctl.cluster_access import docker_env  # lazy: Docker SDK and py-consul

    spec = cluster_from_options(Store(), cluster, spec_file)
    env = docker_env(spec, ClusterPaths.for_cluster(spec.name))
    for key, value in env.exports():
        click.echo(f"export {key}={value}")
    click.echo(f"# docker -H {env.host} --tlsverify ... talks to master {spec.spec.swarm.master}")


@swarm_group.command("status")
@CLUSTER_OPTION
@FILE_OPTION
@OUTPUT_OPTION
def swarm_status_cmd(cluster: str | None, spec_file: Path | None, output: str) -> None:
    """Show Swarm nodes and Consul members, with quorum and fault tolerance of each."""
    from metalctl.swarm_status import swarm_status  # lazy: Docker SDK and py-consul

    spec = cluster_from_options(Store(), cluster, spec_file)
    status = swarm_status(spec, ClusterPaths.for_cluster(spec.name))
    if output == "json":
        emit(output, status, [])
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
    if not (sq.has_quorum and cq.has_quorum):
        Console(stderr=True).print("[red]warning: a quorum is lost[/red]")
