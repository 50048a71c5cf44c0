"""`metalctl boot serve` on a real segment: a bridge, a network namespace and a veth pair that
each test creates (and removes, whatever happens). DHCP clients are busybox's udhcpc and a
small PXE client emulation run inside the namespace; a rival DHCP server is a second dnsmasq
inside the namespace. Nothing here touches an interface the test did not create: dnsmasq
binds to the test's bridge only, and the namespace has no route out.

Needs root, iproute2, dnsmasq, busybox and Debian's iPXE binaries (make setup).
"""

from __future__ import annotations

import http.client
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network, ip_network
from pathlib import Path

import pytest

from metalctl.boot.dnsmasq_process import end_process
from metalctl.boot.server import BootServerSettings, prepare
from metalctl.boot.server import run as run_server
from metalctl.errors import HostSetupError, NotFoundError

CHECKOUT = Path(__file__).resolve().parents[2]
IPXE = Path("/usr/lib/ipxe")
NEEDED = ("ip", "dnsmasq", "busybox")


def _missing() -> list[str]:
    tools = [
        t
        for t in NEEDED
        if not shutil.which(t, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    ]
    return tools + ([] if (IPXE / "undionly.kpxe").is_file() else ["ipxe"])


pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (bridges, namespaces, DHCP ports)"),
    pytest.mark.skipif(bool(_missing()), reason=f"needs {', '.join(_missing())} (make setup)"),
]

SERVE_START_SECONDS = 40.0  # CLI start + the 5 s DHCP check, on a busy machine
STOP_SECONDS = 20.0
CMD_SECONDS = 30.0


def run(
    *argv: str, timeout: float = CMD_SECONDS, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=check)


# --- the segment ----------------------------------------------------------------------


@dataclass
class Segment:
    bridge: str
    host_veth: str
    netns: str
    ns_if: str
    net: IPv4Network
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def server(self) -> IPv4Address:
        return self.net.network_address + 1

    @property
    def peer(self) -> IPv4Address:
        """The namespace side's own address (the rival's, and the TFTP client's)."""
        return self.net.network_address + 2

    def host(self, n: int) -> IPv4Address:
        return self.net.network_address + n

    def in_ns(self, *argv: str, timeout: float = CMD_SECONDS) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.netns, *argv, timeout=timeout, check=False)


def _used_networks() -> list[IPv4Network]:
    routes = json.loads(run("ip", "-j", "-4", "route", "show", "table", "all").stdout)
    nets = []
    for r in routes:
        dst = r.get("dst", "")
        if dst and dst != "default" and r.get("type", "unicast") in ("unicast", "local"):
            nets.append(ip_network(dst if "/" in dst else f"{dst}/32", strict=False))
    return [n for n in nets if isinstance(n, IPv4Network)]


def _free_test_network() -> IPv4Network:
    """A /24 in 10.213.0.0/16 that no route on this host touches (bounded tries)."""
    used = _used_networks()
    for _ in range(50):
        candidate = IPv4Network(f"10.213.{int.from_bytes(os.urandom(1), 'big')}.0/24")
        if not any(candidate.overlaps(n) for n in used):
            return candidate
    pytest.fail("no free /24 in 10.213.0.0/16 for the test segment")


@pytest.fixture
def segment(state_dir: Path) -> Iterator[Segment]:
    tag = os.urandom(3).hex()
    seg = Segment(
        f"mtl-b{tag}", f"mtl-h{tag}", f"mtl-ns-{tag}", f"mtl-n{tag}", _free_test_network()
    )
    try:
        run("ip", "link", "add", seg.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{seg.server}/24", "dev", seg.bridge)
        run("ip", "link", "set", seg.bridge, "up")
        run("ip", "netns", "add", seg.netns)
        run(
            "ip",
            "link",
            "add",
            seg.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            seg.ns_if,
            "netns",
            seg.netns,
        )
        run("ip", "link", "set", seg.host_veth, "master", seg.bridge, "up")
        run("ip", "-n", seg.netns, "link", "set", "lo", "up")
        run("ip", "-n", seg.netns, "addr", "add", f"{seg.peer}/24", "dev", seg.ns_if)
        run("ip", "-n", seg.netns, "link", "set", seg.ns_if, "up")
        yield seg
    finally:
        for proc in seg.processes:
            end_process(proc, STOP_SECONDS)
        _kill_leftover_dnsmasq(state_dir)
        run("ip", "netns", "del", seg.netns, check=False)
        run("ip", "link", "del", seg.host_veth, check=False)
        run("ip", "link", "del", seg.bridge, check=False)


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """Under /tmp, not pytest's tmp_path: dnsmasq reads its TFTP root after dropping root,
    and pytest's base directory is 0700."""
    path = Path(tempfile.mkdtemp(prefix="mtl-boot-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path / "state"
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _kill_leftover_dnsmasq(state: Path) -> None:
    """A dnsmasq (or package cache) of ours that outlived its metalctl (only when a test
    failed badly)."""
    for pid_file in (state / "dnsmasq.pid", state / "apt-cacher-ng" / "apt-cacher-ng.pid"):
        try:
            pid = int(pid_file.read_text())
            if str(state).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass


# --- metalctl boot serve --------------------------------------------------------------


@dataclass
class Serving:
    proc: subprocess.Popen[bytes]
    stderr_path: Path
    port: int

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def _free_port(address: IPv4Address) -> int:
    with socket.socket() as s:
        s.bind((str(address), 0))
        return int(s.getsockname()[1])


def start_serve(seg: Segment, state: Path, home: Path, *mode: str) -> Serving:
    port = _free_port(seg.server)
    log = state.parent / f"serve-{os.urandom(2).hex()}.stderr"
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT), "METALCTL_HOME": str(home)}
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "metalctl", "boot", "serve", "--interface", seg.bridge,
             "--address", str(seg.server), "--port", str(port), "--state-dir", str(state), *mode],
            stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env,
        )  # fmt: skip
    seg.processes.append(proc)
    return Serving(proc, log, port)


def healthz(address: IPv4Address, port: int) -> int | None:
    conn = http.client.HTTPConnection(str(address), port, timeout=2)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def wait_serving(seg: Segment, serving: Serving) -> None:
    """Until /healthz answers and dnsmasq reports ready (or the command ends)."""
    deadline = time.monotonic() + SERVE_START_SECONDS
    while time.monotonic() < deadline:
        if serving.proc.poll() is not None:
            pytest.fail(f"boot serve ended ({serving.proc.returncode}):\n{serving.stderr()}")
        if "serving " in serving.stderr() and healthz(seg.server, serving.port) == 200:
            return
        time.sleep(0.2)
    pytest.fail(f"boot serve not ready in {SERVE_START_SECONDS:g} s:\n{serving.stderr()}")


def wait_exit(serving: Serving, seconds: float = SERVE_START_SECONDS) -> int:
    try:
        return serving.proc.wait(seconds)
    except subprocess.TimeoutExpired:
        pytest.fail(f"boot serve still runs after {seconds:g} s:\n{serving.stderr()}")


# --- clients in the namespace ---------------------------------------------------------

UDHCPC_SCRIPT = """#!/bin/sh
[ "$1" = bound ] || exit 0
echo "ip=$ip"
echo "boot_file=$boot_file"
echo "siaddr=$siaddr"
echo "router=$router"
"""


def udhcpc(seg: Segment, script: Path, *options: str) -> dict[str, str]:
    """One lease with busybox udhcpc (no interface change: the script only prints)."""
    done = seg.in_ns(
        "timeout", "25", "busybox", "udhcpc", "-i", seg.ns_if, "-n", "-q", "-t", "3", "-T", "3",
        "-s", str(script), *options, timeout=CMD_SECONDS,
    )  # fmt: skip
    assert done.returncode == 0, f"udhcpc got no lease: {done.stdout}{done.stderr}"
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def test_full_mode_gives_leases_boot_files_and_tftp(
    segment: Segment, state_dir: Path, tmp_path: Path
) -> None:
    ula = f"fd{os.urandom(5).hex()}"
    ula = f"{ula[:4]}:{ula[4:8]}:{ula[8:]}::1/64"
    run("ip", "addr", "add", ula, "dev", segment.bridge)
    start, end = segment.host(100), segment.host(150)
    serving = start_serve(segment, state_dir, tmp_path / "home", "--dhcp-range", f"{start},{end}")
    wait_serving(segment, serving)
    assert healthz(segment.server, serving.port) == 200
    assert f"no other DHCP server answers on {segment.bridge}" in serving.stderr()

    script = tmp_path / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    bios = udhcpc(segment, script, "-x", "0x5d:0000")
    assert start <= IPv4Address(bios["ip"]) <= end
    assert bios["boot_file"] == "undionly.kpxe"
    assert bios["siaddr"] == str(segment.server)
    assert bios["router"] == ""  # no default gateway: no route out through the boot host
    assert udhcpc(segment, script, "-x", "0x5d:0007")["boot_file"] == "snponly.efi"
    ipxe = udhcpc(segment, script, "-x", "0x5d:0009", "-x", "0x4d:69505845")  # user class iPXE
    chain = (
        f"http://{segment.server}:{serving.port}/boot.ipxe?mac=${{net0/mac}}&platform=${{platform}}"
    )
    assert ipxe["boot_file"] == chain

    fetched = tmp_path / "undionly.kpxe"
    done = segment.in_ns(
        "timeout",
        "20",
        "busybox",
        "tftp",
        "-g",
        "-r",
        "undionly.kpxe",
        "-l",
        str(fetched),
        str(segment.server),
    )
    assert done.returncode == 0, done.stderr
    assert fetched.read_bytes() == (IPXE / "undionly.kpxe").read_bytes()

    dnsmasq_pid = int((state_dir / "dnsmasq.pid").read_text())
    log = (state_dir / "dnsmasq.log").read_text()
    assert "router advertisement on fd" in log  # the bridge's ULA: iPXE's IPv6 wait is cut short
    assert bios["ip"] in (state_dir / "dnsmasq.leases").read_text()

    serving.proc.send_signal(signal.SIGTERM)
    assert wait_exit(serving, STOP_SECONDS) == 0, serving.stderr()
    assert not Path(f"/proc/{dnsmasq_pid}").exists()
    assert healthz(segment.server, serving.port) is None


def start_rival(seg: Segment, tmp: Path) -> None:
    """A second DHCP server on the segment: dnsmasq inside the namespace, on its veth."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", seg.netns, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
         "--port=0", f"--interface={seg.ns_if}", "--except-interface=lo", "--bind-interfaces",
         f"--dhcp-range={seg.host(160)},{seg.host(180)}", f"--dhcp-leasefile={tmp / 'rival.leases'}",
         "--pid-file=", f"--log-facility={tmp / 'rival.log'}", "--log-dhcp"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    seg.processes.append(proc)
    deadline = time.monotonic() + 10
    while "started, version" not in _read(tmp / "rival.log"):
        assert proc.poll() is None, _read(tmp / "rival.log")
        assert time.monotonic() < deadline, "rival dnsmasq did not start"
        time.sleep(0.1)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def test_a_rival_dhcp_server_refuses_full_mode_and_suits_proxy_mode(
    segment: Segment, state_dir: Path, tmp_path: Path
) -> None:
    start_rival(segment, tmp_path)
    home = tmp_path / "home"
    range_ = f"{segment.host(100)},{segment.host(150)}"

    refused = start_serve(segment, state_dir, home, "--dhcp-range", range_)
    assert wait_exit(refused) == 5, refused.stderr()
    expected = f"another DHCP server ({segment.peer}) answers on {segment.bridge}; use proxy mode (--proxy) or stop it"
    assert expected in refused.stderr()
    assert not (state_dir / "dnsmasq.pid").exists()  # it answered nothing

    proxy = start_serve(segment, state_dir, home, "--proxy")
    wait_serving(segment, proxy)
    assert f"{segment.peer} (offers " in proxy.stderr()  # the site DHCP server, reported

    # A PXE ROM and an iPXE in the namespace ask our proxy what to boot.
    for arch, ipxe, expected_file in [
        (0, False, "undionly.kpxe"),
        (7, False, "snponly.efi"),
        (
            9,
            True,
            f"http://{segment.server}:{proxy.port}/boot.ipxe?mac=${{net0/mac}}&platform=${{platform}}",
        ),
    ]:
        assert pxe_boot_file(segment, arch, ipxe) == expected_file

    proxy.proc.send_signal(signal.SIGINT)
    assert wait_exit(proxy, STOP_SECONDS) == 0, proxy.stderr()


def test_refuses_a_missing_interface_a_wrong_address_and_a_closed_state_dir(
    segment: Segment, state_dir: Path, tmp_path: Path
) -> None:
    base = BootServerSettings(
        interface=segment.bridge,
        address=segment.server,
        state_dir=state_dir,
        dhcp_range=(segment.host(100), segment.host(150)),
    )
    with pytest.raises(NotFoundError, match="network interface 'mtl-nonexist' does not exist"):
        prepare(replace(base, interface="mtl-nonexist"))
    with pytest.raises(
        HostSetupError, match=f"{segment.bridge} does not have the address {segment.host(77)}"
    ):
        prepare(replace(base, address=segment.host(77)))
    # pytest's tmp_path lies below a 0700 directory: dnsmasq's user could not read TFTP files.
    with pytest.raises(HostSetupError, match="cannot reach its TFTP root"):
        prepare(replace(base, state_dir=tmp_path / "closed"))


def test_a_dnsmasq_that_cannot_start_is_reported_with_its_own_words(
    segment: Segment, state_dir: Path, tmp_path: Path
) -> None:
    settings = BootServerSettings(
        interface=segment.bridge,
        address=segment.server,
        state_dir=state_dir,
        port=_free_port(segment.server),
        dhcp_range=(segment.host(100), segment.host(150)),
        store_path=tmp_path / "metalctl.db",
        check_dhcp=False,
    )
    # Port 67 on the test bridge taken (a socket that answers nothing): dnsmasq cannot bind.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, segment.bridge.encode())
        blocker.bind(("0.0.0.0", 67))
        with pytest.raises(HostSetupError) as err:
            run_server(settings, threading.Event())
    assert "dnsmasq stopped at start (exit" in str(err.value)
    assert "Address already in use" in str(err.value)
    assert not (state_dir / "dnsmasq.pid").exists()
    assert healthz(segment.server, settings.port) is None  # the HTTP side was stopped too


PROXY_GET = """
import sys, urllib.error, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": sys.argv[1]}))
try:
    print(opener.open(sys.argv[2], timeout=10).status)
except urllib.error.HTTPError as exc:
    print(exc.code)
"""


def test_package_cache_serves_the_segment_and_its_death_ends_boot_serve(
    segment: Segment, state_dir: Path, tmp_path: Path
) -> None:
    cache_port = 20000 + int.from_bytes(os.urandom(2), "big") % 12000  # apt-cacher-ng: < 32768
    start, end = segment.host(100), segment.host(150)
    serving = start_serve(
        segment, state_dir, tmp_path / "home", "--dhcp-range", f"{start},{end}",
        "--skip-dhcp-check", "--package-cache", "--package-cache-port", str(cache_port),
    )  # fmt: skip
    wait_serving(segment, serving)
    proxy = f"http://{segment.server}:{cache_port}"
    assert f"nodes use the proxy {proxy}" in serving.stderr()
    # A node on the segment reaches it; anything but Debian's archive is refused by the
    # cache itself (403, no lookup: the host is under .invalid).
    done = segment.in_ns(
        sys.executable, "-c", PROXY_GET, proxy, "http://example.invalid/debian/dists/x/Release"
    )
    assert done.stdout.strip() == "403", done.stdout + done.stderr

    cache_pid = int((state_dir / "apt-cacher-ng" / "apt-cacher-ng.pid").read_text())
    dnsmasq_pid = int((state_dir / "dnsmasq.pid").read_text())
    os.kill(cache_pid, signal.SIGKILL)
    assert wait_exit(serving) == 6, serving.stderr()
    assert "package cache (apt-cacher-ng) stopped unexpectedly (killed by SIGKILL)" in (
        serving.stderr()
    )
    assert not Path(f"/proc/{dnsmasq_pid}").exists()
    assert healthz(segment.server, serving.port) is None


# --- a PXE client, for proxy mode ---------------------------------------------------------
# udhcpc takes the first offer it gets and cannot follow proxy DHCP, so this does what a
# PXE ROM does: DISCOVER (getting the proxy's answer, which carries no address), then ask
# the proxy's boot server (port 4011) for the boot file. Run inside the namespace.

PXE_CLIENT = """
import sys
from tests.integration.test_boot_dhcp import pxe_exchange
print(pxe_exchange(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"))
"""


def pxe_boot_file(seg: Segment, arch: int, ipxe: bool) -> str:
    done = seg.in_ns(
        "env", f"PYTHONPATH={CHECKOUT}", sys.executable, "-c", PXE_CLIENT,
        seg.ns_if, str(seg.peer), str(arch), "1" if ipxe else "0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _dhcp(
    kind: int,
    xid: int,
    mac: bytes,
    arch: int,
    ipxe: bool,
    ciaddr: str = "0.0.0.0",
    extra: bytes = b"",
) -> bytes:
    def opt(code: int, value: bytes) -> bytes:
        return bytes([code, len(value)]) + value

    options = (
        opt(53, bytes([kind]))
        + opt(93, struct.pack("!H", arch))
        + opt(94, bytes([1, 2, 1]))
        + opt(97, bytes(17))
        + opt(60, f"PXEClient:Arch:{arch:05d}:UNDI:002001".encode())
        + (opt(77, b"iPXE") + opt(175, bytes([0x13, 1, 1])) if ipxe else b"")
        + extra
        + b"\xff"
    )
    header = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        1, 1, 6, 0, xid, 0, 0x8000, socket.inet_aton(ciaddr), bytes(4), bytes(4), bytes(4),
        mac.ljust(16, b"\0"), bytes(64), bytes(128),
    )  # fmt: skip
    return (header + b"\x63\x82\x53\x63" + options).ljust(300, b"\0")


def _recv(sock: socket.socket, deadline: float) -> bytes | None:
    left = deadline - time.monotonic()
    if left <= 0 or not select.select([sock], [], [], left)[0]:
        return None
    return sock.recv(4096)


def pxe_exchange(interface: str, own_address: str, arch: int, ipxe: bool) -> str:
    from metalctl.boot.dhcp_probe import parse_options

    mac, xid = bytes.fromhex("02") + os.urandom(5), int.from_bytes(os.urandom(4), "big")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        sock.bind(("0.0.0.0", 68))
        sock.sendto(_dhcp(1, xid, mac, arch, ipxe), ("255.255.255.255", 67))
        deadline = time.monotonic() + 10  # the rival's ping delays its offer, not the proxy's
        for _ in range(32):
            packet = _recv(sock, deadline)
            if packet is None:
                sys.exit("no proxy-DHCP offer")
            options = parse_options(packet[240:])
            if struct.unpack_from("!I", packet, 4)[0] == xid and options.get(60) == b"PXEClient":
                break
        else:
            sys.exit("no proxy-DHCP offer among 32 packets")
    server = socket.inet_ntoa(options[54])
    # A BIOS ROM picks the (only) menu item; UEFI gets no menu and just asks.
    menu = parse_options(options[43]).get(9, b"") if 43 in options else b""
    item = bytes([43, 7, 71, 4]) + menu[:2] + b"\0\0\xff" if menu else b""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((own_address, 0))
        sock.sendto(_dhcp(3, xid, mac, arch, ipxe, own_address, item), (server, 4011))
        answer = _recv(sock, time.monotonic() + 10)
    if answer is None:
        sys.exit(f"no answer from the boot server {server}:4011")
    return answer[108:236].split(b"\0", 1)[0].decode()
