"""`metalctl deploy WORKLOAD`."""

from __future__ import annotations

from pathlib import Path

import click

from metalctl.cli.common import (
    CLUSTER_OPTION,
    FILE_OPTION,
    QUIET_OPTION,
    cluster_from_options,
    seconds_option,
)
from metalctl.cli.format import OUTPUT_OPTION, emit
from metalctl.cli.progress import ConsoleProgress


@click.group("deploy")
def deploy_group() -> None:
    """Run a workload (a set of Ansible roles) on a cluster's ready nodes."""


@deploy_group.command("swarm")
@CLUSTER_OPTION
@FILE_OPTION
@seconds_option("--ssh-timeout", 60.0, "Seconds to wait for each node's SSH port.", low=None)
@seconds_option(
    "--swarm-timeout",
    180.0,
    "Seconds to wait for every node to be Ready in the swarm, and again for its Consul "
    "registration.",
    low=None,
)
@QUIET_OPTION
@OUTPUT_OPTION
def deploy_swarm_cmd(
    cluster: str | None,
    spec_file: Path | None,
    ssh_timeout: float,
    swarm_timeout: float,
    quiet: bool,
    output: str,
) -> None:
    """Install Docker (mutual TLS on 2376), a Consul cluster and a Swarm.

    Roles, in order: ready_state, docker, consul, swarm. Re-running is idempotent
    (changed=0 on every host). Each run's Ansible artifacts are kept under
    $METALCTL_HOME/clusters/NAME/runs/.
    """
    # Imported here, not at the top: they pull in ansible-runner and the Docker SDK, which
    # would slow every other command (and --help) down.
    from metalctl.deploy.apply import DeployOptions, deploy
    from metalctl.store import Store

    store = Store()
    spec = cluster_from_options(store, cluster, spec_file)
    progress = ConsoleProgress(quiet=quiet)
    try:
        result = deploy(
            store,
            spec,
            "swarm",
            DeployOptions(ssh_timeout=ssh_timeout, swarm_timeout=swarm_timeout),
            progress,
        )
    finally:
        progress.stop()
    rows = [{"host": h, "changed": c} for h, c in sorted(result.changed.items())]
    emit(
        output,
        result,
        [("HOST", "host"), ("CHANGED", "changed")],
        title=f"swarm deployed on {spec.name} (artifacts: {result.run_dir})",
        rows=rows,
    )
