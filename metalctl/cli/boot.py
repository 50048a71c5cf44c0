"""`metalctl boot`: the PXE boot service (DHCP/TFTP by dnsmasq, HTTP for iPXE scripts)."""

from __future__ import annotations

import logging
import sys
from ipaddress import AddressValueError, IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from metalctl.errors import UsageError

if TYPE_CHECKING:
    _Address = click.ParamType[IPv4Address, Any]
    _Range = click.ParamType[tuple[IPv4Address, IPv4Address], Any]
else:  # older click's ParamType is not subscriptable
    _Address = _Range = click.ParamType

# Kept here rather than imported: `metalctl --help` must not import the boot service.
_DEFAULT_STATE_DIR = Path("/var/lib/metalctl/boot")
_EFI_LOADERS = ("snponly.efi", "ipxe.efi")
_PACKAGE_CACHE_PORT = 3142


class IPv4Param(_Address):
    name = "address"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> IPv4Address:
        if isinstance(value, IPv4Address):
            return value
        try:
            return IPv4Address(str(value).strip())
        except AddressValueError:
            self.fail(f"{value!r} is not an IPv4 address", param, ctx)


class RangeParam(_Range):
    name = "range"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[IPv4Address, IPv4Address]:
        if isinstance(value, tuple):
            return value
        parts = str(value).split(",")
        try:
            start, end = (IPv4Address(p.strip()) for p in parts)
        except (AddressValueError, ValueError):
            self.fail(f"{value!r} is not START,END (two IPv4 addresses)", param, ctx)
        return start, end

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "START,END"


@click.group("boot")
def boot_group() -> None:
    """The PXE boot service: machines that network-boot get iPXE, then their boot script."""


@boot_group.command("serve")
@click.option(
    "--interface",
    "-i",
    required=True,
    metavar="IF",
    help="The provisioning network's interface (a bridge, usually).",
)
@click.option(
    "--address",
    "-a",
    required=True,
    type=IPv4Param(),
    help="This host's address on IF (IF must have it).",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=8080,
    show_default=True,
    help="HTTP port on ADDRESS.",
)
@click.option(
    "--dhcp-range", type=RangeParam(), help="Full DHCP: hand out these addresses (in IF's network)."
)
@click.option(
    "--proxy", is_flag=True, help="Proxy DHCP: a site DHCP server hands out the addresses."
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=_DEFAULT_STATE_DIR,
    show_default=True,
    help="dnsmasq's config, leases, log and TFTP root (others must be able to enter it).",
)
@click.option(
    "--files-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Served under /files/ (discovery kernel and initrd). Default: STATE_DIR/files.",
)
@click.option(
    "--efi-loader",
    type=click.Choice(_EFI_LOADERS),
    default=_EFI_LOADERS[0],
    show_default=True,
    help="iPXE for UEFI: snponly.efi uses the firmware's NIC driver, ipxe.efi its own.",
)
@click.option(
    "--skip-dhcp-check", is_flag=True, help="Do not ask the segment for other DHCP servers first."
)
@click.option(
    "--package-cache",
    is_flag=True,
    help="Also run apt-cacher-ng on ADDRESS: Debian's archive (only) for nodes without "
    "internet, as the HTTP proxy http://ADDRESS:PACKAGE_CACHE_PORT.",
)
@click.option(
    "--package-cache-port",
    type=click.IntRange(1, 32767),  # apt-cacher-ng 3.7.4 cannot bind higher ports
    default=_PACKAGE_CACHE_PORT,
    show_default=True,
    help="The package cache's port on ADDRESS (with --package-cache).",
)
def boot_serve_cmd(
    interface: str,
    address: IPv4Address,
    port: int,
    dhcp_range: tuple[IPv4Address, IPv4Address] | None,
    proxy: bool,
    state_dir: Path,
    files_dir: Path | None,
    efi_loader: str,
    skip_dhcp_check: bool,
    package_cache: bool,
    package_cache_port: int,
) -> None:
    """Serve PXE boot on IF until Ctrl-C or SIGTERM (needs root).

    \b
    Two modes, choose one:
      --dhcp-range START,END  full DHCP: metalctl is the segment's DHCP server and
                              hands out these addresses (no default gateway)
      --proxy                 proxy DHCP: the site's DHCP server hands out addresses,
                              metalctl answers PXE clients with boot information only

    BIOS machines (DHCP arch 0) get undionly.kpxe by TFTP, x86-64 UEFI (arch 7, 9) the EFI
    loader; iPXE then fetches http://ADDRESS:PORT/boot.ipxe?mac=... (docs/pxe.md).

    The DHCP check: before it answers anything, metalctl broadcasts a DHCPDISCOVER on IF
    (as a PXE client would) and listens for 5 s. In full mode any answer refuses the start,
    naming the server; in proxy mode a DHCP server is expected and reported, but another
    PXE boot server refuses the start. --skip-dhcp-check skips the check.

    dnsmasq's log, leases and config are in STATE_DIR; HTTP requests are logged on stderr.

    --package-cache: nodes on a network with no route out get Debian packages through this
    host. apt-cacher-ng (Debian package apt-cacher-ng) listens on ADDRESS:PACKAGE_CACHE_PORT
    only, caches in STATE_DIR/apt-cacher-ng and proxies deb.debian.org and
    security.debian.org only (no CONNECT); give nodes
    "apt: {proxy: http://ADDRESS:PACKAGE_CACHE_PORT}" in their cloud-init user-data.
    """
    from metalctl.boot.server import BootServerSettings, serve_until_signalled

    if (dhcp_range is None) != proxy:
        raise UsageError(
            "choose one mode: --dhcp-range START,END (full DHCP) or --proxy (proxy DHCP)",
            hint="'metalctl boot serve --help' explains both",
        )
    if package_cache and package_cache_port == port:
        raise UsageError(
            f"--package-cache-port {package_cache_port} is the HTTP port (--port): choose another"
        )
    settings = BootServerSettings(
        interface=interface,
        address=address,
        state_dir=state_dir,
        port=port,
        dhcp_range=dhcp_range,
        files_dir=files_dir,
        check_dhcp=not skip_dhcp_check,
        efi_loader=efi_loader,
        package_cache=package_cache,
        package_cache_port=package_cache_port,
    )
    serve_until_signalled(settings, say=_say, logger=_stderr_logger())


def _say(text: str) -> None:
    click.echo(f"boot: {text}", err=True)


def _stderr_logger() -> logging.Logger:
    logger = logging.getLogger("metalctl.cli.boot")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger
