"""The DHCP check before dnsmasq starts: the DISCOVER it sends, how it reads what comes
back (hostile packets included), and what each mode makes of the answers."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metalctl.boot.dhcp_probe import (
    DhcpOffer,
    discover_packet,
    parse_offer,
    parse_options,
    random_client_mac,
)
from metalctl.boot.dnsmasq import DnsmasqConfig
from metalctl.boot.server import judge_offers
from metalctl.errors import ConflictError

MAC = bytes.fromhex("0212345678ab")
XID = 0x1234ABCD


def reply(
    *,
    xid: int = XID,
    mac: bytes = MAC,
    yiaddr: str = "10.66.0.150",
    options: bytes | None = None,
    file: bytes = b"",
) -> bytes:
    """A server's BOOTREPLY: by default a DHCPOFFER from 10.66.0.2."""
    header = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        2, 1, 6, 0, xid, 0, 0x8000,
        bytes(4), IPv4Address(yiaddr).packed, bytes(4), bytes(4),
        mac.ljust(16, b"\0"), bytes(64), file.ljust(128, b"\0"),
    )  # fmt: skip
    if options is None:
        options = bytes([53, 1, 2, 54, 4, 10, 66, 0, 2, 255])
    return header + b"\x63\x82\x53\x63" + options


def test_discover_looks_like_a_pxe_client_with_a_made_up_mac() -> None:
    mac = random_client_mac()
    assert mac[0] & 0b11 == 0b10  # locally administered, unicast
    packet = discover_packet(XID, mac)
    assert len(packet) >= 300
    op, _, _, _, xid, _, flags = struct.unpack_from("!BBBBIHH", packet)
    assert (op, xid, flags) == (1, XID, 0x8000)  # a request, asking for broadcast replies
    assert packet[28:34] == mac
    options = parse_options(packet[240:])
    assert options[53] == b"\x01"  # DHCPDISCOVER
    assert options[93] == b"\x00\x00"  # BIOS
    assert options[60].startswith(b"PXEClient")


def test_an_offer_names_its_server_and_address() -> None:
    offer = parse_offer(reply(), XID, MAC, "10.66.0.99")
    assert offer == DhcpOffer(IPv4Address("10.66.0.2"), IPv4Address("10.66.0.150"), None, False)


def test_a_proxy_offer_has_no_address_and_is_pxe() -> None:
    options = bytes([53, 1, 2, 54, 4, 10, 66, 0, 3, 60, 9]) + b"PXEClient" + b"\xff"
    offer = parse_offer(reply(yiaddr="0.0.0.0", options=options), XID, MAC, "10.66.0.3")
    assert offer is not None
    assert (offer.server, offer.offered, offer.pxe) == (IPv4Address("10.66.0.3"), None, True)
    assert "proxy-DHCP" in offer.describe()


def test_a_boot_file_makes_an_offer_pxe() -> None:
    offer = parse_offer(reply(file=b"pxelinux.0"), XID, MAC, "10.66.0.2")
    assert offer is not None
    assert (offer.boot_file, offer.pxe) == ("pxelinux.0", True)


def test_no_server_identifier_falls_back_to_the_source() -> None:
    offer = parse_offer(reply(options=bytes([53, 1, 2, 255])), XID, MAC, "10.66.0.7")
    assert offer is not None
    assert offer.server == IPv4Address("10.66.0.7")


@pytest.mark.parametrize(
    "packet",
    [
        reply(xid=XID + 1),  # someone else's transaction
        reply(mac=bytes.fromhex("020000000001")),  # someone else's client
        reply(options=bytes([53, 1, 5, 255])),  # an ACK, not an offer
        reply(options=bytes([54, 4, 10, 66, 0, 2, 255])),  # no message type
        reply(options=bytes([53, 200, 2])),  # option longer than the packet
        reply()[:100],  # truncated
        reply().replace(b"\x63\x82\x53\x63", b"\0\0\0\0"),  # no magic cookie
    ],
    ids=["xid", "mac", "ack", "no-type", "overlong", "truncated", "no-cookie"],
)
def test_packets_that_are_not_our_offer_are_ignored(packet: bytes) -> None:
    assert parse_offer(packet, XID, MAC, "10.66.0.2") is None


@given(st.binary(max_size=700))
def test_any_bytes_never_crash_the_parser(data: bytes) -> None:
    parse_offer(data, XID, MAC, "10.66.0.2")
    parse_offer(reply(options=data), XID, MAC, "10.66.0.2")


def test_repeated_options_are_joined() -> None:
    assert parse_options(bytes([60, 2]) + b"PX" + bytes([0, 60, 3]) + b"EXX" + b"\xff") == {
        60: b"PXEXX"
    }


FULL = DnsmasqConfig(
    interface="br0",
    address=IPv4Interface("10.66.0.1/24"),
    http_port=8080,
    state_dir=Path("/var/lib/metalctl/boot"),
    dhcp_range=(IPv4Address("10.66.0.100"), IPv4Address("10.66.0.199")),
)
PROXY = DnsmasqConfig(
    interface="br0",
    address=IPv4Interface("10.66.0.1/24"),
    http_port=8080,
    state_dir=FULL.state_dir,
)
SITE_DHCP = DhcpOffer(IPv4Address("10.66.0.2"), IPv4Address("10.66.0.150"), None, False)
OTHER_PXE = DhcpOffer(IPv4Address("10.66.0.3"), None, None, True)


def test_full_mode_refuses_any_other_dhcp_server_by_address() -> None:
    with pytest.raises(ConflictError) as err:
        judge_offers(FULL, [SITE_DHCP])
    assert (
        "another DHCP server (10.66.0.2) answers on br0; use proxy mode (--proxy) or stop it"
        in str(err.value)
    )
    assert err.value.exit_code == 5


def test_full_mode_on_a_quiet_segment_is_fine() -> None:
    assert judge_offers(FULL, []) == ["DHCP check: no other DHCP server answers on br0"]


def test_proxy_mode_reports_the_site_dhcp_server() -> None:
    (line,) = judge_offers(PROXY, [SITE_DHCP])
    assert "10.66.0.2 (offers 10.66.0.150) gives the addresses on br0" in line


def test_proxy_mode_refuses_another_pxe_server() -> None:
    with pytest.raises(ConflictError) as err:
        judge_offers(PROXY, [SITE_DHCP, OTHER_PXE])
    assert "another PXE boot server (10.66.0.3) answers on br0" in str(err.value)


def test_proxy_mode_warns_when_nobody_gives_addresses() -> None:
    (line,) = judge_offers(PROXY, [])
    assert "no DHCP server answered on br0" in line
