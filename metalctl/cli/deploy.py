"""`metalctl deploy WORKLOAD`, and `deploy list`.

Only `swarm` has a command: its phases (verify the swarm, the Consul registrations) are
specific to it. The listing reads every workload under workloads/ all the same, so that
`deploy --help`, `deploy list` and an unknown name say what there is.
"""

from __future__ import annotations

from pathlib import Path

import click

from metalctl.cli import views
from metalctl.cli.common import (
    CLUSTER_OPTION,
    FILE_OPTION,
    QUIET_OPTION,
    cluster_from_options,
    seconds_option,
)
from metalctl.cli.format import OUTPUT_OPTION, emit
from metalctl.cli.progress import ConsoleProgress
from metalctl.cli.runs import slowest_table
from metalctl.deploy.workload import list_workloads
from metalctl.errors import MetalctlError, NotFoundError, UsageError


class _WorkloadGroup(click.Group):
    """A group whose help lists the workloads found on disk, and whose unknown
    subcommands are unknown workloads (exit 4, with the known ones)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        with formatter.section("Workloads (from workloads/)"):
            try:
                rows = [(w.name, w.description) for w in list_workloads()]
            except MetalctlError as exc:  # --help must work on a broken installation too
                rows = [("(none)", f"cannot list them: {exc.message}")]
            formatter.write_dl(rows)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        known = self.get_command(ctx, name) is not None
        if name and not name.startswith("-") and not known and not ctx.resilient_parsing:
            raise self._unknown(ctx, name)
        return super().resolve_command(ctx, args)

    def _unknown(self, ctx: click.Context, name: str) -> MetalctlError:
        workloads = [w.name for w in list_workloads()]
        if name in workloads:  # on disk, but its phases are not written yet
            commands = [w for w in workloads if self.get_command(ctx, w) is not None]
            return UsageError(
                f"workload '{name}' has no deploy command in this metalctl",
                hint=f"deployable: {', '.join(commands)}",
            )
        return NotFoundError(
            f"no workload named '{name}'",
            hint=f"known workloads: {', '.join(workloads)}; 'metalctl deploy list' describes them",
        )


@click.group("deploy", cls=_WorkloadGroup)
def deploy_group() -> None:
    """Run a workload (a set of Ansible roles) on a cluster's ready nodes.

    'metalctl deploy WORKLOAD --help' explains one.
    """


@deploy_group.command("list")
@OUTPUT_OPTION
def deploy_list_cmd(output: str) -> None:
    """List the workloads under workloads/, with their roles."""
    workloads = list_workloads()
    rows = [
        {"name": w.name, "roles": ", ".join(w.roles), "description": w.description}
        for w in workloads
    ]
    emit(
        output,
        workloads,
        [("WORKLOAD", "name"), ("ROLES", "roles"), ("DESCRIPTION", "description")],
        rows=rows,
    )


@deploy_group.command("swarm")
@CLUSTER_OPTION
@FILE_OPTION
@seconds_option("--ssh-timeout", 60.0, "Seconds to wait for each node's SSH port.")
@seconds_option(
    "--swarm-timeout",
    180.0,
    "Seconds to wait for every node to be Ready in the swarm, and again for its Consul "
    "registration.",
)
@QUIET_OPTION
@OUTPUT_OPTION
def deploy_swarm_cmd(
    cluster: str | None,
    spec_file: Path | None,
    replace: bool,
    ssh_timeout: float,
    swarm_timeout: float,
    quiet: bool,
    output: str,
) -> None:
    """Install Docker (mutual TLS on 2376), a Consul cluster and a Swarm.

    Roles, in order: ready_state, docker, consul, swarm. Re-running is idempotent
    (changed=0 on every host). Each run's Ansible artifacts are kept under
    $METALCTL_HOME/clusters/NAME/runs/. A spec with 'provision: true' first provisions
    the nodes not yet ready, through its provisioner (as 'metalctl provision' would).
    """
    # Imported here, not at the top: they pull in ansible-runner and the Docker SDK, which
    # would slow every other command (and --help) down.
    from metalctl.deploy.apply import DeployOptions, deploy
    from metalctl.operations.machines import provision_unready
    from metalctl.store import Store

    store = Store()
    spec = cluster_from_options(store, cluster, spec_file, replace)
    progress = ConsoleProgress(quiet=quiet)
    try:
        provision_unready(store, spec, progress.message)
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
        views.deploy(result),
        [("HOST", "host"), ("CHANGED", "changed")],
        title=f"swarm deployed on {spec.name} (artifacts: {result.run_dir})",
        rows=rows,
    )
    if output == "table" and result.slowest and not quiet:
        slowest_table(result.slowest)
        if result.run_dir:
            click.echo(
                f"all timings: metalctl runs show {result.run_dir.name} --cluster {spec.name}"
            )
