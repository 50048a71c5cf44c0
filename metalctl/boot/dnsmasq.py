"""The boot service's DHCP/TFTP side: a dnsmasq configuration, rendered from settings.

Two modes:

- ``full``: dnsmasq hands out addresses from a range (the provisioning network has no
  other DHCP server) and tells PXE clients what to boot (``dhcp-boot``).
- ``proxy``: a site DHCP server hands out addresses; dnsmasq answers PXE clients only,
  with boot information and no address (``dhcp-range=<net>,proxy`` + ``pxe-service``).

Either way the firmware's PXE gets an iPXE binary by TFTP, chosen by its architecture
(DHCP option 93), and iPXE (which identifies itself by user class "iPXE" or option 175)
gets the boot service's script URL, which iPXE expands (``${net0/mac}``) before fetching.

The file is written to the state directory; dnsmasq reads it with ``-C`` (never /etc).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Network
from pathlib import Path
from typing import Literal

from metalctl.errors import HostSetupError, UsageError

BootMode = Literal["full", "proxy"]

IPXE_DIR = Path("/usr/lib/ipxe")  # Debian's package ipxe
BIOS_LOADER = "undionly.kpxe"  # uses the NIC's own PXE stack (UNDI): works on any BIOS NIC
# snponly.efi drives the NIC through the firmware's SNP driver (like undionly on BIOS);
# ipxe.efi brings iPXE's own drivers, for firmware whose SNP is broken.
EFI_LOADERS = ("snponly.efi", "ipxe.efi")
IPXE_TAG = "ipxe"
# The script URL handed to iPXE; iPXE fills in the ${...} settings itself (docs/pxe.md).
CHAIN_PATH = "/boot.ipxe?mac=${net0/mac}&platform=${platform}"

CONFIG_NAME = "dnsmasq.conf"
LEASES_NAME = "dnsmasq.leases"
TFTP_DIR_NAME = "tftp"

# What goes into config lines: no whitespace, commas or '#' that would change their meaning.
_IFNAME = re.compile(r"[A-Za-z0-9_.@:+-]{1,15}")
_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_LEASE_TIME = re.compile(r"[1-9][0-9]*[mhd]?|infinite")


@dataclass(frozen=True)
class Loader:
    """One row of the architecture mapping: PXE clients of DHCP option 93 ``arch`` (dnsmasq
    calls that client system type ``csa``) are sent ``file``."""

    arch: int
    csa: str
    tag: str
    file: str


def loaders(efi_loader: str = EFI_LOADERS[0]) -> tuple[Loader, ...]:
    """BIOS (0) -> undionly.kpxe; x86-64 UEFI -> snponly.efi or ipxe.efi. x86-64 UEFI sends
    arch 7 (IANA's registry) or 9 (RFC 4578's original table): firmware uses both."""
    return (
        Loader(0, "x86PC", "bios", BIOS_LOADER),
        Loader(7, "BC_EFI", "efi64", efi_loader),
        Loader(9, "X86-64_EFI", "efi64", efi_loader),
    )


def loader_for(
    arch: int, *, ipxe: bool, chain_url: str, efi_loader: str = EFI_LOADERS[0]
) -> str | None:
    """What a client of architecture ``arch`` is told to boot (None: nothing, it is not a
    PXE client we serve). The same rules as the rendered config (both come from
    ``loaders``), in a form tests can ask."""
    if ipxe:
        return chain_url
    return next((ld.file for ld in loaders(efi_loader) if ld.arch == arch), None)


@dataclass(frozen=True)
class DnsmasqConfig:
    """``address``: the server's address on ``interface`` with its prefix (the network the
    range or the proxy serves). ``dhcp_range`` None means proxy mode. ``ra_prefix``: a ULA
    network on the interface to send router advertisements for (see ``_ra_lines``)."""

    interface: str
    address: IPv4Interface
    http_port: int
    state_dir: Path
    dhcp_range: tuple[IPv4Address, IPv4Address] | None = None
    efi_loader: str = EFI_LOADERS[0]
    ra_prefix: IPv6Network | None = None
    lease_time: str = "1h"
    user: str = "dnsmasq"
    group: str = "nogroup"

    def __post_init__(self) -> None:
        problems = [p for p in self._problems() if p]
        if problems:
            raise UsageError("invalid DHCP/TFTP settings: " + "; ".join(problems))

    @property
    def mode(self) -> BootMode:
        return "proxy" if self.dhcp_range is None else "full"

    @property
    def chain_url(self) -> str:
        return f"http://{self.address.ip}:{self.http_port}{CHAIN_PATH}"

    @property
    def config_path(self) -> Path:
        return self.state_dir / CONFIG_NAME

    @property
    def leases_path(self) -> Path:
        return self.state_dir / LEASES_NAME

    @property
    def tftp_root(self) -> Path:
        return self.state_dir / TFTP_DIR_NAME

    def _problems(self) -> list[str | None]:
        return [
            None
            if _IFNAME.fullmatch(self.interface)
            else f"interface {self.interface!r} is not an interface name",
            None
            if 0 < self.http_port < 65536
            else f"HTTP port {self.http_port} is not in 1..65535",
            None
            if self.state_dir.is_absolute()
            and str(self.state_dir).isprintable()
            and not any(c in str(self.state_dir) for c in " ,#")
            else f"state directory {str(self.state_dir)!r} must be an absolute path "
            "without spaces, commas or '#'",
            None
            if self.efi_loader in EFI_LOADERS
            else f"EFI loader {self.efi_loader!r} is not one of {', '.join(EFI_LOADERS)}",
            None
            if _LEASE_TIME.fullmatch(self.lease_time)
            else f"lease time {self.lease_time!r} is not like 1h, 30m, 86400 or infinite",
            None
            if _NAME.fullmatch(self.user) and _NAME.fullmatch(self.group)
            else f"user/group {self.user!r}/{self.group!r} are not account names",
            self._range_problem(),
        ]

    def _range_problem(self) -> str | None:
        if self.dhcp_range is None:
            return None
        start, end = self.dhcp_range
        net = self.address.network
        if start > end:
            return f"DHCP range {start}-{end} ends before it starts"
        hosts = (net.network_address, net.broadcast_address)
        if not (hosts[0] < start and end < hosts[1]):
            return (
                f"DHCP range {start}-{end} is not inside {net} (the network of "
                f"{self.address} on {self.interface}, without its network and broadcast "
                "addresses)"
            )
        if start <= self.address.ip <= end:
            return f"DHCP range {start}-{end} holds the server's own address {self.address.ip}"
        return None


def render(config: DnsmasqConfig) -> str:
    """The dnsmasq configuration file's text."""
    sections = [
        _header(config),
        _common_lines(config),
        _full_lines(config) if config.dhcp_range else _proxy_lines(config),
        _ra_lines(config),
    ]
    return "\n".join(line for section in sections for line in section) + "\n"


def _header(config: DnsmasqConfig) -> list[str]:
    return [
        f"# Written by metalctl boot serve at every start ({config.mode} DHCP on "
        f"{config.interface}); edits are lost.",
        "# dnsmasq --test -C THIS_FILE checks it.",
    ]


def _common_lines(config: DnsmasqConfig) -> list[str]:
    tags = [f"dhcp-match=set:{ld.tag},option:client-arch,{ld.arch}" for ld in loaders()]
    return [
        "# DHCP and TFTP only: no DNS, nothing from the host's resolv.conf or hosts.",
        "port=0",
        "no-resolv",
        "no-hosts",
        "# Only this interface, bound to it: nothing else on the host is answered.",
        f"interface={config.interface}",
        "except-interface=lo",
        "bind-interfaces",
        "# Run under metalctl: in the foreground, log to stderr (metalctl sends it to a",
        "# file), no pid file (metalctl holds the pid), root dropped after the sockets.",
        "keep-in-foreground",
        "log-facility=-",
        "log-dhcp",
        "pid-file=",
        f"user={config.user}",
        f"group={config.group}",
        f"dhcp-leasefile={config.leases_path}",
        "# Keep the boot file in the BOOTP 'file' field: old PXE ROMs read it only there.",
        "dhcp-no-override",
        "enable-tftp",
        f"tftp-root={config.tftp_root}",
        "# Client architecture (option 93) -> tag; iPXE says who it is by user class or",
        "# by sending option 175.",
        *tags,
        f"dhcp-userclass=set:{IPXE_TAG},iPXE",
        f"dhcp-match=set:{IPXE_TAG},175",
    ]


def _full_lines(config: DnsmasqConfig) -> list[str]:
    assert config.dhcp_range is not None
    start, end = config.dhcp_range
    boots = sorted(
        {f"dhcp-boot=tag:!{IPXE_TAG},tag:{ld.tag},{ld.file}" for ld in loaders(config.efi_loader)}
    )
    return [
        "# Full DHCP: this server is the segment's only one, so it answers with authority",
        "# (a client asking for an address from elsewhere is told NAK at once).",
        f"dhcp-range={start},{end},{config.address.netmask},{config.lease_time}",
        "dhcp-authoritative",
        "# No default gateway: the provisioning network has no route out through this host.",
        "dhcp-option=option:router",
        "# PXE firmware gets iPXE by TFTP (next server: this host); iPXE gets its script.",
        *boots,
        f"dhcp-boot=tag:{IPXE_TAG},{config.chain_url}",
    ]


def _proxy_lines(config: DnsmasqConfig) -> list[str]:
    net = config.address.network
    lines = [
        "# Proxy DHCP: the site's DHCP server gives addresses; this one answers PXE",
        "# clients with boot information only (its boot server on port 4011 names the file).",
        f"dhcp-range={net.network_address},proxy,{net.netmask}",
    ]
    for ld in loaders(config.efi_loader):
        lines.append(f'pxe-service=tag:!{IPXE_TAG},{ld.csa},"metalctl: iPXE",{ld.file}')
        lines.append(f'pxe-service=tag:{IPXE_TAG},{ld.csa},"metalctl: boot",{config.chain_url}')
    return lines


def _ra_lines(config: DnsmasqConfig) -> list[str]:
    if config.ra_prefix is None:
        return []
    return [
        "# iPXE ROMs wait ~14 s for an IPv6 router advertisement before they go on; with a",
        "# ULA on the interface, send one: no addresses (ra-only) and router lifetime 0, so",
        "# no client takes this host for an IPv6 default route.",
        "enable-ra",
        f"dhcp-range={config.ra_prefix.network_address},ra-only,{config.ra_prefix.prefixlen}",
        f"ra-param={config.interface},0,0",
    ]


def stage_tftp_root(config: DnsmasqConfig, ipxe_dir: Path = IPXE_DIR) -> list[Path]:
    """Copy Debian's iPXE binaries into the TFTP root (world-readable: dnsmasq reads them
    after dropping root). Copied at every start, so an upgraded ipxe package is served
    after the next restart; copies rather than links, as dnsmasq's user must be able to
    read them without reaching into /usr. Returns the files staged."""
    wanted = sorted({BIOS_LOADER, *EFI_LOADERS})
    missing = [name for name in wanted if not (ipxe_dir / name).is_file()]
    if missing:
        raise HostSetupError(
            f"iPXE binaries missing from {ipxe_dir}: {', '.join(missing)}",
            hint="install Debian's package ipxe (apt-get install ipxe)",
        )
    root = config.tftp_root
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    staged = []
    for name in wanted:
        target = root / name
        tmp = root / f".{name}.tmp"
        shutil.copyfile(ipxe_dir / name, tmp)
        tmp.chmod(0o644)
        tmp.replace(target)  # a client fetching during a restart never reads half a file
        staged.append(target)
    return staged
