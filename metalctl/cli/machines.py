"""`metalctl provision` and `metalctl power`: machines, through the cluster's provisioner."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

import click

from metalctl.cli.common import CLUSTER_OPTION, FILE_OPTION, QUIET_OPTION, seconds_option
from metalctl.cli.format import OUTPUT_OPTION, emit
from metalctl.store import Store

if TYPE_CHECKING:
    from metalctl.provisioners.base import PowerAction

_COLUMNS = [("NODE", "node"), ("STATE", "state"), ("NOTE", "error")]


@click.command("provision")
@CLUSTER_OPTION
@FILE_OPTION
@click.argument("nodes", nargs=-1, metavar="[NODE]...")
@seconds_option(
    "--timeout",
    1800,
    "How long the machines' agents may take to write their images (pxe, vmlab); "
    "how long one Ironic transition may take (ironic).",
    low=1,
)
@click.option(
    "--parallel",
    type=click.IntRange(1, 100),
    default=None,
    metavar="N",
    help="At most N nodes in flight; the others wait their turn (ironic; default 1).",
)
@click.option(
    "--inspect", is_flag=True, help="Inspect each node's hardware before deploying (ironic)."
)
@QUIET_OPTION
@OUTPUT_OPTION
def provision_cmd(
    cluster: str | None,
    spec_file: Path | None,
    replace: bool,
    nodes: tuple[str, ...],
    timeout: float,
    parallel: int | None,
    inspect: bool,
    quiet: bool,
    output: str,
) -> None:
    """Bring nodes to ready state through the cluster's provisioner.

    Default: every node not yet deployed. lab: start stopped containers and wait for SSH;
    static: check that each machine's SSH answers; pxe and vmlab: write the cluster's OS
    image (spec.pxe.image) to each node's machine through the boot service, all nodes at
    once, then wait until SSH with metalctl's key answers with the node's hostname (vmlab
    powers the VMs; with pxe you power the machines on when asked). ironic: enroll each
    node in Ironic, verify its BMC, deploy spec.image with a config drive, wait for SSH
    (ready nodes are left alone unless named). Each node goes provisioning -> ready,
    or failed with the reason (the others go on; exit 6 when any failed). Active nodes are
    skipped. Re-running is harmless.
    """
    from metalctl.cli.progress import ConsoleProgress
    from metalctl.clusters import load_cluster
    from metalctl.errors import ProvisionError
    from metalctl.operations.machines import provision
    from metalctl.provisioners.base import ProvisionOptions

    store = Store()
    spec = load_cluster(store, cluster, spec_file, replace=replace)
    options = ProvisionOptions(parallel=parallel or 1, inspect=inspect)
    progress = ConsoleProgress(quiet=quiet)
    try:
        results = provision(store, spec, nodes, progress.message, timeout=timeout, options=options)
    finally:
        progress.stop()
    emit(output, results, _COLUMNS)
    failed = [r for r in results if r.state == "failed"]
    if failed:
        names = ", ".join(r.node for r in failed[:20]) + (" ..." if len(failed) > 20 else "")
        raise ProvisionError(
            f"provision: {len(failed)} node(s) failed: {names}\n"
            f"  first: {failed[0].node}: {failed[0].error}",
            hint=f"'metalctl nodes show NODE -c {spec.name}' has the reason; fix it and re-run",
        )


@click.command("power")
@click.argument("action", type=click.Choice(["on", "off", "cycle"]))
@click.argument("node")
@CLUSTER_OPTION
@FILE_OPTION
@OUTPUT_OPTION
def power_cmd(
    action: str,
    node: str,
    cluster: str | None,
    spec_file: Path | None,
    replace: bool,
    output: str,
) -> None:
    """Power a node's machine on, off, or off and on (lab: its container).

    Only provisioners with power control (lab, vmlab, ironic: through the node's BMC;
    Ironic enrolls a node it does not know yet and checks its BMC first); static and pxe
    machines are refused. vmlab: off holds the VM in reset; on and cycle start a fresh
    QEMU process, a cold boot as after a power cut (its console log keeps every boot).
    """
    from metalctl.clusters import load_cluster
    from metalctl.operations.machines import power

    store = Store()
    spec = load_cluster(store, cluster, spec_file, replace=replace)
    result = power(store, spec, node, cast("PowerAction", action))  # click.Choice checked it
    emit(output, [result], _COLUMNS)


@click.command("release")
@click.argument("nodes", nargs=-1, required=True, metavar="NODE...")
@click.option("--cluster", "-c", metavar="NAME", required=True, help="The nodes' cluster.")
@click.option(
    "--keep",
    is_flag=True,
    help="Leave the machine deployed (Ironic: active); only retire the node in metalctl.",
)
@click.option(
    "--parallel",
    type=click.IntRange(1, 100),
    default=1,
    metavar="N",
    help="Free at most N machines at once (ironic).",
)
@QUIET_OPTION
@OUTPUT_OPTION
def release_cmd(
    nodes: tuple[str, ...], cluster: str, keep: bool, parallel: int, quiet: bool, output: str
) -> None:
    """Retire nodes that are not in the swarm and free their machines.

    ironic: the node is marked retired in Ironic and undeployed (Ironic cleans its disk);
    it ends 'manageable' there and 'retired' here. Swarm members are refused: 'metalctl
    nodes remove' takes them out of the swarm first (and releases them). A machine that
    cannot be freed keeps its node's state, with the reason (exit 6); the others go on.
    """
    from metalctl.cli.progress import ConsoleProgress
    from metalctl.clusters import load_cluster
    from metalctl.errors import ProvisionError
    from metalctl.operations.machines import release

    store = Store()
    spec = load_cluster(store, cluster, None)
    progress = ConsoleProgress(quiet=quiet)
    try:
        results = release(store, spec, nodes, progress.message, keep=keep, parallel=parallel)
    finally:
        progress.stop()
    emit(output, results, _COLUMNS)
    failed = [r for r in results if r.error]
    if failed:
        raise ProvisionError(
            f"release: {len(failed)} machine(s) not freed: {failed[0].node}: {failed[0].error}"
        )


@click.group("machines")
def machines_group() -> None:
    """Machines the boot service has seen (PXE discovery), enrolled or not."""


@machines_group.command("list")
@click.option(
    "--state",
    type=click.Choice(["discovered", "enrolled", "provisioning", "provisioned", "failed"]),
    help="Only machines in this state.",
)
@OUTPUT_OPTION
def machines_list_cmd(state: str | None, output: str) -> None:
    """List discovered machines: MAC, boot mode, CPUs, memory, disks, cluster node."""
    from metalctl.cli import views

    machines = Store().list_machines(state)
    emit(
        output,
        [views.machine(m) for m in machines],
        [
            ("MACHINE", "id"),
            ("MAC", "primary_mac"),
            ("STATE", "state"),
            ("BOOT", "boot_mode"),
            ("CPUS", "cpus"),
            ("MEMORY MIB", "memory_mib"),
            ("DISKS", "disks"),
            ("NODE", "node"),
        ],
    )


@machines_group.command("show")
@click.argument("machine")
@OUTPUT_OPTION
def machines_show_cmd(machine: str, output: str) -> None:
    """Show one machine (id or any of its MACs): facts and its latest deployment."""
    from metalctl import deployments
    from metalctl.cli import views

    store = Store()
    found = store.get_machine(machine)
    deployment = deployments.get(store, found.id)
    data = views.machine(found, facts=True, deployment=deployment)
    rows = [{"field": k, "value": v} for k, v in data.items() if k != "facts"] + [
        {"field": f"fact.{k}", "value": v} for k, v in found.facts.items()
    ]
    emit(output, data, [("FIELD", "field"), ("VALUE", "value")], rows=rows)
