"""The whole boot service: dnsmasq (DHCP/TFTP) beside the HTTP service, until told to stop.

    check the interface and its address -> write dnsmasq.conf, stage the iPXE binaries
    -> ask the segment whether another DHCP server answers (unless skipped)
    -> start the HTTP service (a busy port fails here, before any DHCP answer)
    -> start dnsmasq, wait until it is ready
    -> with --package-cache: start apt-cacher-ng on ADDRESS, wait until its port answers
    -> watch them all until the stop event
    -> stop apt-cacher-ng, dnsmasq, then HTTP (also when anything above fails)

``serve_until_signalled`` is ``metalctl boot serve``: SIGTERM and SIGINT set the stop event.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import signal
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from types import FrameType

from metalctl.boot import dhcp_probe, netif
from metalctl.boot.config import BootConfig
from metalctl.boot.dnsmasq import EFI_LOADERS, DnsmasqConfig, render, stage_tftp_root
from metalctl.boot.dnsmasq_process import DnsmasqProcess, check_config, describe_status
from metalctl.boot.package_cache import DEFAULT_PORT as PACKAGE_CACHE_PORT
from metalctl.boot.package_cache import PackageCache, package_cache_binary
from metalctl.boot.service import BootService
from metalctl.errors import ConflictError, HostSetupError, ProvisionError
from metalctl.paths import metalctl_home, write_public

DEFAULT_STATE_DIR = Path("/var/lib/metalctl/boot")
DEFAULT_HTTP_PORT = 8080
_WATCH_SECONDS = 0.5
# dnsmasq drops root for this account (Debian's dnsmasq-base creates it), else "nobody".
_DNSMASQ_USERS = ("dnsmasq", "nobody")

Say = Callable[[str], None]


def _silent(_: str) -> None:
    pass


@dataclass(frozen=True)
class BootServerSettings:
    """``dhcp_range`` None: proxy mode (a site DHCP server gives the addresses)."""

    interface: str
    address: IPv4Address
    state_dir: Path = DEFAULT_STATE_DIR
    port: int = DEFAULT_HTTP_PORT
    dhcp_range: tuple[IPv4Address, IPv4Address] | None = None
    files_dir: Path | None = None  # default: STATE_DIR/files
    store_path: Path | None = None  # default: $METALCTL_HOME/metalctl.db
    check_dhcp: bool = True
    dhcp_wait: float = dhcp_probe.DEFAULT_WAIT
    efi_loader: str = EFI_LOADERS[0]
    boot: BootConfig = field(default_factory=BootConfig)
    package_cache: bool = False  # apt-cacher-ng on ADDRESS: Debian's archive for the nodes
    package_cache_port: int = PACKAGE_CACHE_PORT


def run(
    settings: BootServerSettings,
    stop: threading.Event,
    say: Say = _silent,
    logger: logging.Logger | None = None,
) -> None:
    """Serve until ``stop`` is set. Raises (after stopping what it started) when a check
    refuses or when dnsmasq, the package cache or the HTTP service dies."""
    if settings.package_cache:
        package_cache_binary()  # missing: refused before anything is checked or started
    config = prepare(settings, say)
    if settings.check_dhcp:
        check_segment(config, settings.dhcp_wait, say)
    else:
        say("DHCP check skipped (--skip-dhcp-check)")
    if stop.is_set():  # a signal during the check: nothing started yet, nothing to stop
        return
    files_dir = settings.files_dir or settings.state_dir / "files"
    files_dir.mkdir(parents=True, exist_ok=True)
    http = BootService(
        settings.store_path or metalctl_home() / "metalctl.db",
        address=str(settings.address),
        port=settings.port,
        files_dir=files_dir,
        config=settings.boot,
        logger=logger,
    )
    # Leaving the stack stops them in reverse: the package cache, dnsmasq, then HTTP.
    with ExitStack() as running:
        running.enter_context(http)
        dnsmasq = running.enter_context(DnsmasqProcess(config.config_path, config.state_dir))
        say(f"HTTP on {http.url} (files: {files_dir})")
        say(f"dnsmasq running (pid {dnsmasq.pid}), log: {dnsmasq.log_path}")
        cache = None
        if settings.package_cache:
            cache = running.enter_context(
                PackageCache(config.state_dir, settings.address, settings.package_cache_port)
            )
            say(
                f"package cache (apt-cacher-ng, pid {cache.pid}) for Debian's archive: "
                f"nodes use the proxy {cache.url}; logs: {cache.log_path}"
            )
        say(f"serving {_mode_text(config)}; stop with Ctrl-C or SIGTERM")
        _watch(stop, dnsmasq, http, cache)
        say("stopping")


def serve_until_signalled(
    settings: BootServerSettings, say: Say = _silent, logger: logging.Logger | None = None
) -> None:
    """``run`` with SIGTERM and SIGINT as the stop event (main thread only)."""
    with _stop_on_signals() as stop:
        run(settings, stop, say, logger)


def prepare(settings: BootServerSettings, say: Say = _silent) -> DnsmasqConfig:
    """Check the interface, write dnsmasq's config and TFTP root, have dnsmasq check the
    config. Nothing is served yet."""
    iface = netif.inspect(settings.interface)
    address = netif.require_address(iface, settings.address)
    user = _dnsmasq_user()
    config = DnsmasqConfig(
        interface=settings.interface,
        address=address,
        http_port=settings.port,
        state_dir=settings.state_dir.absolute(),
        dhcp_range=settings.dhcp_range,
        efi_loader=settings.efi_loader,
        ra_prefix=iface.ula_network(),
        user=user.pw_name,
        group=grp.getgrgid(user.pw_gid).gr_name,
    )
    _make_state_dir(config.state_dir)
    stage_tftp_root(config)
    _check_reachable(config.tftp_root, user)
    write_public(config.config_path, render(config))
    check_config(config.config_path)
    if config.ra_prefix:
        say(f"{settings.interface} has {config.ra_prefix}: sending IPv6 router advertisements")
    say(f"dnsmasq config: {config.config_path}")
    return config


def check_segment(
    config: DnsmasqConfig, wait: float, say: Say = _silent
) -> list[dhcp_probe.DhcpOffer]:
    """Ask the segment who answers DHCP; refuse when that clashes with the mode."""
    say(f"DHCP check: asking who answers DHCP on {config.interface} ({wait:g} s)")
    offers = dhcp_probe.probe(config.interface, wait)
    for line in judge_offers(config, offers):
        say(line)
    return offers


def judge_offers(config: DnsmasqConfig, offers: list[dhcp_probe.DhcpOffer]) -> list[str]:
    """What the DHCP check reports, or a ConflictError naming the servers in the way.

    Full mode: any other DHCP server is in the way (machines would take its address and
    its boot information, or none). Proxy mode: a DHCP server is expected; one that sends
    PXE boot information (another boot server) is in the way."""
    iface = config.interface
    if config.mode == "full" and offers:
        raise ConflictError(
            f"another DHCP server ({_servers(offers)}) answers on {iface}; use proxy mode "
            "(--proxy) or stop it",
            hint="seen: " + "; ".join(o.describe() for o in offers),
        )
    rivals = [o for o in offers if o.pxe]
    if rivals:
        raise ConflictError(
            f"another PXE boot server ({_servers(rivals)}) answers on {iface}: machines would "
            "boot from either; stop it",
            hint="seen: " + "; ".join(o.describe() for o in rivals),
        )
    if config.mode == "full":
        return [f"DHCP check: no other DHCP server answers on {iface}"]
    if not offers:
        return [
            f"DHCP check: no DHCP server answered on {iface}; in proxy mode machines get "
            "their addresses from another server: start it, or use --dhcp-range"
        ]
    return [f"DHCP check: {o.describe()} gives the addresses on {iface}" for o in offers]


def _servers(offers: list[dhcp_probe.DhcpOffer]) -> str:
    return ", ".join(str(o.server) for o in offers)


def _mode_text(config: DnsmasqConfig) -> str:
    if config.dhcp_range:
        start, end = config.dhcp_range
        return f"full DHCP on {config.interface} ({start} - {end}), TFTP, iPXE chain to {config.chain_url}"
    return f"proxy DHCP on {config.interface} ({config.address.network}), TFTP, iPXE chain to {config.chain_url}"


def _watch(
    stop: threading.Event,
    dnsmasq: DnsmasqProcess,
    http: BootService,
    cache: PackageCache | None = None,
) -> None:
    # Wake now and then to notice a child or thread that died, rather than serve half.
    while not stop.wait(_WATCH_SECONDS):
        if not dnsmasq.alive():
            if stop.is_set():  # the stop signal reached dnsmasq too: no failure
                return
            raise ProvisionError(
                f"dnsmasq stopped unexpectedly ({describe_status(dnsmasq.exit_status())}):\n"
                f"{dnsmasq.log_tail()}",
                hint=f"its log: {dnsmasq.log_path}",
            )
        if cache is not None and not cache.alive():
            if stop.is_set():
                return
            raise ProvisionError(
                f"the package cache (apt-cacher-ng) stopped unexpectedly "
                f"({describe_status(cache.exit_status())}):\n{cache.log_tail()}",
                hint=f"its logs: {cache.log_path}",
            )
        if not http.alive():
            raise ProvisionError("the boot HTTP service stopped unexpectedly; see its log")


def _dnsmasq_user() -> pwd.struct_passwd:
    for name in _DNSMASQ_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise HostSetupError(
        f"no account for dnsmasq to run as (tried {', '.join(_DNSMASQ_USERS)})",
        hint="install Debian's package dnsmasq-base, which creates the user dnsmasq",
    )


def _make_state_dir(path: Path) -> None:
    # 0755: dnsmasq reads the TFTP root below it after dropping root. Nothing in it is
    # secret (config, leases, logs of a network anyone on it can watch).
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)


def _check_reachable(tftp_root: Path, user: pwd.struct_passwd) -> None:
    """dnsmasq serves TFTP files as ``user``: refuse now if a directory on the way is
    closed to it (root's home is 0700), rather than let machines time out on TFTP."""
    gids = set(os.getgrouplist(user.pw_name, user.pw_gid))
    for directory in [tftp_root, *tftp_root.parents]:
        st = directory.stat()
        if st.st_uid == user.pw_uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid in gids:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            raise HostSetupError(
                f"dnsmasq (running as {user.pw_name}) cannot reach its TFTP root {tftp_root}: "
                f"{directory} is mode {stat.S_IMODE(st.st_mode):04o}",
                hint=f"use a --state-dir that others may enter, e.g. {DEFAULT_STATE_DIR}",
            )


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    wanted = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, handler) for sig in wanted}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
