"""Stand-ins for deployed machines' sshd: addresses on a bridge that the test creates
(no ports, so no packet leaves the host) and one thread that answers every connection to
them with an SSH banner and closes it.

Fake-hardware nodes have no OS, so nothing would ever answer SSH at their addresses.
These stand-ins let the ironic provisioner's real ready check (an SSH banner at each
node's address) run against 50 distinct, non-loopback node addresses. They are NOT
sshd: no login, no key check (the e2e tests with lab containers do that).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import selectors
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass

BANNER = b"SSH-2.0-metalctl-test-standin\r\n"
# Benchmarking range (RFC 2544): never routed on the internet; a free /24 of it is used.
_RANGE = ipaddress.IPv4Network("198.18.0.0/15")


@dataclass(frozen=True)
class StandIns:
    addresses: list[str]
    port: int


def _used_networks() -> list[ipaddress.IPv4Network]:
    out = subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True, check=True)
    nets = []
    for link in json.loads(out.stdout):
        for a in link.get("addr_info", []):
            nets.append(ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False))
    routes = subprocess.run(["ip", "-j", "-4", "route"], capture_output=True, text=True, check=True)
    for r in json.loads(routes.stdout):
        if r.get("dst", "default") != "default":
            nets.append(ipaddress.IPv4Network(r["dst"], strict=False))
    return nets


def _free_subnet() -> ipaddress.IPv4Network:
    used = _used_networks()
    for net in _RANGE.subnets(new_prefix=24):
        if net.network_address.packed[2] < 100:  # leave the low part to others
            continue
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError("no free /24 in 198.18.0.0/15 for the SSH stand-ins")


@contextlib.contextmanager
def ssh_standins(count: int) -> Iterator[StandIns]:
    """``count`` addresses that answer SSH banners on one port; removed afterwards, also
    when the test fails. Needs root (it adds a bridge)."""
    if os.geteuid() != 0:
        raise RuntimeError("the SSH stand-ins need root (they add a bridge with addresses)")
    bridge = f"mtlssh{os.getpid() % 100000}"
    net = _free_subnet()
    addresses = [str(net.network_address + 10 + i) for i in range(count)]
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    try:
        batch = "".join(f"address add {a}/32 dev {bridge}\n" for a in addresses)
        subprocess.run(["ip", "-batch", "-"], input=batch, text=True, check=True)
        subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
        with _banner_server(addresses) as port:
            yield StandIns(addresses, port)
    finally:
        subprocess.run(["ip", "link", "del", bridge], check=False)


@contextlib.contextmanager
def _banner_server(addresses: list[str]) -> Iterator[int]:
    sel = selectors.DefaultSelector()
    listeners = []
    port = 0
    for address in addresses:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        port = sock.getsockname()[1]  # the first bind picks a free port; all share it
        sock.listen(64)
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
        listeners.append(sock)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            for key, _ in sel.select(timeout=0.2):
                with contextlib.suppress(OSError):
                    conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
                    with conn:
                        conn.sendall(BANNER)

    thread = threading.Thread(target=serve, name="ssh-standin", daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join(timeout=5)
        for sock in listeners:
            sock.close()
        sel.close()
