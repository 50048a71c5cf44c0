"""`metalctl lab`: container machines for test drives and CI."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

import click

from metalctl.cli.common import seconds_option
from metalctl.cli.format import OUTPUT_OPTION, emit
from metalctl.cli.progress import ConsoleProgress
from metalctl.errors import UsageError
from metalctl.store import Store

if TYPE_CHECKING:  # lab_image pulls in the Docker SDK: keep --help fast
    from metalctl.provisioners.lab_image import Preload


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
    default=None,
    help="Swarm managers (odd, at most 7); NAME-1 is the master. Default: 3 containers, 1 VM.",
)
@click.option(
    "--vms",
    type=click.IntRange(1, 16),
    default=None,
    help="Make a VM lab instead: this many blank QEMU VMs that PXE-boot from metalctl's "
    "boot service and are discovered (then 'metalctl provision' installs Debian 12).",
)
@click.option(
    "--uefi",
    type=click.IntRange(0, 16),
    default=0,
    show_default=True,
    help="With --vms: how many of the VMs boot UEFI (OVMF); the others BIOS (SeaBIOS).",
)
@click.option(
    "--vagrant",
    is_flag=True,
    help="With --vms: Vagrant makes the VMs (the top-level Vagrantfile, vagrant-libvirt), "
    "on the lab's bridge; power goes through libvirt. The test drive: docs/test-drive.md.",
)
@seconds_option("--timeout", 600, "With --vms: how long the VMs may take to be discovered.", low=1)
@click.option(
    "--consul-servers",
    type=click.IntRange(min=1),
    default=None,
    help="Consul servers (odd). Default: min(managers, 3).",
)
@click.option(
    "--preload",
    metavar="WORKLOAD",
    default=None,
    help="Build the node image with the Debian packages the workload installs (its "
    "workload.yaml 'preload'), so that the deploy skips their download and install.",
)
@click.option(
    "--offline",
    is_flag=True,
    help="Give the nodes no route out (an internal Docker network: no NAT, and Docker "
    "drops whatever would leave the lab's subnet), as in an air-gapped rack. Needs "
    "--preload or --package-cache: the nodes cannot fetch packages themselves.",
)
@click.option(
    "--package-cache",
    is_flag=True,
    help="Run the admin host's package cache (apt-cacher-ng, Debian's archive only) on the "
    "lab's bridge and point the nodes' apt at it: the first node fetches, the others read. "
    "The cache is host-wide and outlives the lab; 'metalctl cache fill' fills it ahead.",
)
@OUTPUT_OPTION
def lab_up_cmd(
    name: str,
    nodes: int,
    managers: int | None,
    vms: int | None,
    uefi: int,
    vagrant: bool,
    timeout: float,
    consul_servers: int | None,
    preload: str | None,
    offline: bool,
    package_cache: bool,
    output: str,
) -> None:
    """Create a lab of ready nodes and write its cluster spec. Re-running is harmless.

    With --vms K: a VM lab (root; QEMU under TCG when KVM does not work): a bridge with no
    route out, the boot service on it (DHCP/TFTP/HTTP), K blank VMs that PXE-boot and are
    discovered, and cluster NAME (provisioner vmlab) with node NAME-i per VM. Next:
    'metalctl provision --cluster NAME', then 'metalctl deploy swarm --cluster NAME'.
    With --vagrant as well, `vagrant up` makes those VMs (libvirt) instead of metalctl.
    """
    progress = ConsoleProgress()
    if vagrant and vms is None:
        raise click.UsageError("--vagrant needs --vms K (how many VMs Vagrant makes)")
    if vms is not None and (preload or offline or package_cache):
        raise click.UsageError(
            "--preload, --offline and --package-cache are for container labs; a VM lab has "
            "no route out already, its boot service runs the package cache, and its Debian "
            "12 image carries Docker"
        )
    if offline and not (preload or package_cache):
        raise click.UsageError(
            "--offline needs --preload WORKLOAD or --package-cache: nodes with no route out "
            "cannot download the workload's packages themselves"
        )
    if vms is not None:
        driver = "vagrant" if vagrant else "qemu"
        _vm_lab_up(name, vms, uefi, managers or 1, timeout, driver, progress, output)
        return
    managers = 3 if managers is None else managers
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
        shape=lab.LabShape(_preload(preload), offline, package_cache),
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


def _preload(workload: str | None) -> Preload | None:
    from metalctl.deploy.workload import load_workload
    from metalctl.provisioners.lab_image import Preload

    if workload is None:
        return None
    packages = load_workload(workload).preload_debian  # an unknown name: exit 4, with the known
    if not packages:
        raise UsageError(
            f"workload '{workload}' names no packages to preload",
            hint="its workload.yaml needs 'preload: {debian: [package, ...]}'",
        )
    return Preload(workload, packages)


def _vm_lab_up(
    name: str,
    vms: int,
    uefi: int,
    managers: int,
    timeout: float,
    driver: str,
    progress: ConsoleProgress,
    output: str,
) -> None:
    from metalctl.operations.vm_lab import require_root, vm_lab_up

    require_root()
    try:
        up = vm_lab_up(
            Store(), name, vms, uefi, managers, progress.message, timeout=timeout, driver=driver
        )
    finally:
        progress.stop()
    rows = [
        {
            "name": n.name,
            "address": n.address,
            "mac": vm.mac,
            "firmware": vm.firmware,
            "machine": up.machines.get(n.name, ""),
        }
        for n, vm in zip(up.spec.nodes, up.lab.vms, strict=True)
    ]
    emit(
        output,
        {"cluster": name, "boot_service": up.lab.boot_url, "nodes": rows},
        [
            ("NODE", "name"),
            ("ADDRESS", "address"),
            ("MAC", "mac"),
            ("FIRMWARE", "firmware"),
            ("MACHINE", "machine"),
        ],
        title=f"VM lab {name}: {len(rows)} VMs discovered; next: metalctl provision --cluster {name}",
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


@lab_group.command("vagrant-env")
@click.option("--name", required=True, help="Lab name (made with 'lab up --vms K --vagrant').")
def lab_vagrant_env_cmd(name: str) -> None:
    """Print the environment under which `vagrant` acts on this lab's VMs, for eval:

    eval "$(metalctl lab vagrant-env --name N)"; vagrant status

    METALCTL_BRIDGE is the bridge the VMs and the boot service share.
    """
    from metalctl.errors import ConflictError
    from metalctl.provisioners import vmlab_state, vmlab_vagrant

    lab = vmlab_state.require(name)
    if lab.driver != "vagrant":
        raise ConflictError(f"VM lab {name} was not made by Vagrant (driver {lab.driver})")
    env = {**vmlab_vagrant.environment(lab), "METALCTL_BRIDGE": lab.bridge}
    for key, value in env.items():
        click.echo(f"export {key}={shlex.quote(value)}")


@lab_group.command("down")
@click.option("--name", required=True, help="Lab name.")
def lab_down_cmd(name: str) -> None:
    """Remove every container, volume and network of the lab, and forget the cluster.

    Only objects made from this $METALCTL_HOME: a lab of the same name made from another
    home is left alone (and listed).
    """
    from metalctl.provisioners import lab, vmlab_state

    if vmlab_state.load(name) is not None:
        from metalctl.operations.vm_lab import require_root, vm_lab_down

        require_root()
        removed = vm_lab_down(Store(), name, ConsoleProgress().message)
        click.echo(f"lab {name}: removed {len(removed)} objects")
        return
    down = lab.lab_down(Store(), name, progress=ConsoleProgress().message)
    click.echo(
        f"lab {name}: removed {len(down.removed)} objects"
        if down.removed
        else f"lab {name}: nothing to remove"
    )
    for other in down.left_alone:
        click.echo(f"  left alone: {other}: another metalctl home's lab of the same name")
