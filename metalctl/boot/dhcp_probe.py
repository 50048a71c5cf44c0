"""Is another DHCP (or PXE) server answering on a segment? Ask it, the way a machine would.

One DHCPDISCOVER, broadcast from port 68 on the interface (SO_BINDTODEVICE, so it leaves
through that interface only), made to look like a PXE client so that proxy-DHCP servers
answer too; then every DHCPOFFER for it is collected until a deadline. The client MAC is
made up (locally administered) and the xid random, so the offers we read are for us. Offers
are never accepted: no server hands out a lease for the probe.

Needs root (port 68, SO_BINDTODEVICE). Used by the boot service before it starts dnsmasq.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time
from dataclasses import dataclass
from ipaddress import IPv4Address

from metalctl.errors import HostSetupError, UsageError

DHCP_SERVER_PORT = 67
DHCP_CLIENT_PORT = 68
DEFAULT_WAIT = 5.0
# A dnsmasq pings an address before it offers it and leaves the first DISCOVER of a client
# unanswered meanwhile; it answers a repeat. Real clients repeat too: so do we.
_RESEND_EVERY = 1.0
_MAX_WAIT = 60.0
_MAX_PACKETS = 256  # bounded work whatever a noisy segment sends

_MAGIC = b"\x63\x82\x53\x63"
_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # 236 bytes, then the magic cookie
_BOOTREQUEST, _BOOTREPLY = 1, 2
_DISCOVER, _OFFER = 1, 2
_BROADCAST_FLAG = 0x8000  # ask for a broadcast reply: our made-up MAC is nobody's

OPT_PAD, OPT_END = 0, 255
OPT_MESSAGE_TYPE = 53
OPT_SERVER_ID = 54
OPT_PARAMS = 55
OPT_MAX_SIZE = 57
OPT_VENDOR_CLASS = 60
OPT_BOOTFILE = 67
OPT_CLIENT_ARCH = 93
OPT_CLIENT_NDI = 94
OPT_CLIENT_UUID = 97
_PXE_VENDOR = b"PXEClient"


@dataclass(frozen=True)
class DhcpOffer:
    """One server's answer. ``offered`` is None for a proxy-DHCP answer (boot information
    only, no address); ``pxe`` says the answer carries PXE boot information."""

    server: IPv4Address
    offered: IPv4Address | None
    boot_file: str | None
    pxe: bool

    def describe(self) -> str:
        what = f"offers {self.offered}" if self.offered else "proxy-DHCP, no address"
        if self.pxe or self.boot_file:
            what += ", PXE boot " + (repr(self.boot_file) if self.boot_file else "menu")
        return f"{self.server} ({what})"


def random_client_mac() -> bytes:
    """A locally administered unicast MAC (bit 1 of the first octet set, bit 0 clear):
    never a real NIC's, so no server mistakes the probe for a known machine."""
    mac = bytearray(os.urandom(6))
    mac[0] = (mac[0] & 0xFC) | 0x02
    return bytes(mac)


def discover_packet(xid: int, mac: bytes) -> bytes:
    """A DHCPDISCOVER that a PXE ROM would send (BIOS, arch 0)."""
    header = _HEADER.pack(
        _BOOTREQUEST, 1, 6, 0, xid, 0, _BROADCAST_FLAG,
        bytes(4), bytes(4), bytes(4), bytes(4), mac.ljust(16, b"\0"), bytes(64), bytes(128),
    )  # fmt: skip
    options = b"".join(
        [
            _option(OPT_MESSAGE_TYPE, bytes([_DISCOVER])),
            _option(OPT_PARAMS, bytes([1, 3, 43, 54, 60, 66, 67, 97])),
            _option(OPT_MAX_SIZE, struct.pack("!H", 1472)),
            _option(OPT_CLIENT_ARCH, struct.pack("!H", 0)),
            _option(OPT_CLIENT_NDI, bytes([1, 2, 1])),
            _option(OPT_CLIENT_UUID, b"\0" + os.urandom(16)),
            _option(OPT_VENDOR_CLASS, b"PXEClient:Arch:00000:UNDI:002001"),
            bytes([OPT_END]),
        ]
    )
    # BOOTP's minimum message size: some servers drop anything shorter.
    return (header + _MAGIC + options).ljust(300, b"\0")


def _option(code: int, value: bytes) -> bytes:
    return bytes([code, len(value)]) + value


def parse_offer(packet: bytes, xid: int, mac: bytes, source: str) -> DhcpOffer | None:
    """The offer in ``packet`` if it is a DHCPOFFER for this probe, else None. Anything on
    the wire may be malformed: a bad packet is ignored, never an error."""
    if len(packet) < _HEADER.size + len(_MAGIC):
        return None
    fields = _HEADER.unpack_from(packet)
    op, reply_xid, yiaddr, chaddr, file_field = (
        fields[0],
        fields[4],
        fields[8],
        fields[11],
        fields[13],
    )
    if op != _BOOTREPLY or reply_xid != xid or chaddr[: len(mac)] != mac:
        return None
    if packet[_HEADER.size : _HEADER.size + 4] != _MAGIC:
        return None
    options = parse_options(packet[_HEADER.size + 4 :])
    if options.get(OPT_MESSAGE_TYPE) != bytes([_OFFER]):
        return None
    server_id = options.get(OPT_SERVER_ID, b"")
    try:
        server = IPv4Address(server_id if len(server_id) == 4 else source)
    except ValueError:
        return None
    offered = IPv4Address(yiaddr)
    boot_file = _text(options.get(OPT_BOOTFILE) or file_field)
    vendor = options.get(OPT_VENDOR_CLASS, b"")
    return DhcpOffer(
        server=server,
        offered=None if offered == IPv4Address(0) else offered,
        boot_file=boot_file,
        pxe=vendor.startswith(_PXE_VENDOR) or boot_file is not None,
    )


def parse_options(data: bytes) -> dict[int, bytes]:
    """DHCP options (code -> value; a repeated code's parts joined, RFC 3396). Stops at
    END or at the first option that runs past the data."""
    found: dict[int, bytes] = {}
    i = 0
    while i < len(data):
        code = data[i]
        if code == OPT_END:
            break
        if code == OPT_PAD:
            i += 1
            continue
        if i + 1 >= len(data) or i + 2 + data[i + 1] > len(data):
            break
        length = data[i + 1]
        found[code] = found.get(code, b"") + data[i + 2 : i + 2 + length]
        i += 2 + length
    return found


def _text(raw: bytes) -> str | None:
    text = raw.split(b"\0", 1)[0].decode("ascii", "replace")
    return "".join(c if c.isprintable() else "?" for c in text) or None


def probe(interface: str, wait: float = DEFAULT_WAIT) -> list[DhcpOffer]:
    """The servers that answer a DHCPDISCOVER on ``interface`` within ``wait`` seconds,
    one offer per server, in the order they answered."""
    if not 0 < wait <= _MAX_WAIT:  # a zero wait would hear nobody and pass any check
        raise UsageError(f"DHCP check wait must be in (0, {_MAX_WAIT:g}] seconds, not {wait!r}")
    mac, xid = random_client_mac(), int.from_bytes(os.urandom(4), "big")
    packet = discover_packet(xid, mac)
    offers: dict[IPv4Address, DhcpOffer] = {}
    with _client_socket(interface) as sock:
        start = time.monotonic()
        deadline, next_send = start + wait, start
        for _ in range(_MAX_PACKETS):
            now = time.monotonic()
            if now >= deadline:
                break
            if now >= next_send:
                _send(sock, interface, packet)
                next_send = now + _RESEND_EVERY
            ready, _, _ = select.select([sock], [], [], min(deadline, next_send) - now)
            if not ready:
                continue
            data, (source, _port) = sock.recvfrom(4096)
            offer = parse_offer(data, xid, mac, source)
            if offer is not None:
                offers.setdefault(offer.server, offer)
    return list(offers.values())


def _client_socket(interface: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        # A DHCP client of the host's (dhclient) may hold port 68 with SO_REUSEADDR too;
        # broadcasts then reach both sockets, which is all the probe needs.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        sock.bind(("0.0.0.0", DHCP_CLIENT_PORT))
    except OSError as exc:
        sock.close()
        raise HostSetupError(
            f"cannot listen for DHCP answers on {interface} (UDP port {DHCP_CLIENT_PORT}): "
            f"{exc.strerror or exc}",
            hint="the DHCP check needs root and a free port 68 on that interface; "
            "--skip-dhcp-check skips it if you know the segment",
        ) from exc
    return sock


def _send(sock: socket.socket, interface: str, packet: bytes) -> None:
    try:
        sock.sendto(packet, ("255.255.255.255", DHCP_SERVER_PORT))
    except OSError as exc:
        raise HostSetupError(
            f"cannot send a DHCP probe on {interface}: {exc.strerror or exc}",
            hint=f"check that {interface} is up ('ip link set {interface} up')",
        ) from exc
