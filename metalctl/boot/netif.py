"""What the host's network interface looks like: does it exist, is it up, which addresses.

Read from ``ip -j addr show dev IF`` (iproute2's JSON): the boot service must serve only
on an interface that really carries the address it was given.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Interface, IPv6Network, ip_interface
from typing import Any

from metalctl.errors import HostSetupError, NotFoundError

_IP_TIMEOUT = 10.0
_ULA = IPv6Network("fc00::/7")


@dataclass(frozen=True)
class Interface:
    name: str
    up: bool  # administratively up (the IFF_UP flag); carrier may still be missing
    ipv4: tuple[IPv4Interface, ...]
    ipv6: tuple[IPv6Interface, ...]

    def ula_network(self) -> IPv6Network | None:
        """The network of the first unique local (fc00::/7) address, if any."""
        return next((a.network for a in self.ipv6 if a.ip in _ULA), None)


def inspect(name: str) -> Interface:
    ip = shutil.which("ip")
    if ip is None:
        raise HostSetupError("'ip' not found", hint="install Debian's package iproute2")
    try:
        done = subprocess.run(
            [ip, "-j", "addr", "show", "dev", name],
            capture_output=True,
            text=True,
            timeout=_IP_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise HostSetupError(
            f"'ip addr show dev {name}' did not answer in {_IP_TIMEOUT:g} s"
        ) from exc
    if done.returncode != 0:
        raise NotFoundError(
            f"network interface {name!r} does not exist ({done.stderr.strip() or 'ip failed'})",
            hint="'ip -br link' lists the host's interfaces; create the provisioning bridge first",
        )
    try:
        return _parse(name, json.loads(done.stdout))
    except (ValueError, KeyError, TypeError) as exc:
        raise HostSetupError(f"cannot read 'ip -j addr show dev {name}': {exc}") from exc


def _parse(name: str, doc: Any) -> Interface:
    entry = next((e for e in doc if e.get("ifname") == name), None)
    if entry is None:
        raise NotFoundError(f"network interface {name!r} does not exist")
    addrs = [
        ip_interface(f"{a['local']}/{a['prefixlen']}")
        for a in entry.get("addr_info", [])
        if a.get("family") in ("inet", "inet6")
    ]
    return Interface(
        name=name,
        up="UP" in entry.get("flags", []),
        ipv4=tuple(a for a in addrs if isinstance(a, IPv4Interface)),
        ipv6=tuple(a for a in addrs if isinstance(a, IPv6Interface)),
    )


def require_address(interface: Interface, address: IPv4Address) -> IPv4Interface:
    """The interface's address ``address`` with its prefix, or a refusal saying what the
    interface has instead."""
    if not interface.up:
        raise HostSetupError(
            f"network interface {interface.name} is down",
            hint=f"bring it up: ip link set {interface.name} up",
        )
    for addr in interface.ipv4:
        if addr.ip == address:
            return addr
    has = ", ".join(str(a) for a in interface.ipv4) or "no IPv4 address"
    raise HostSetupError(
        f"network interface {interface.name} does not have the address {address} (it has {has})",
        hint=f"give it the address (ip addr add {address}/24 dev {interface.name}) or pass "
        "--address with one it has",
    )
