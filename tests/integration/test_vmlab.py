"""The VM lab against the real boot service: a bridge of the test's own, `metalctl boot serve`
on it, and one BIOS and one UEFI QEMU VM with blank disks that PXE-boot with their real
firmware (SeaBIOS + iPXE ROM; OVMF's own PXE → TFTP snponly.efi → iPXE) up to iPXE fetching
`/boot.ipxe?mac=...`. There is no discovery kernel in the files directory, so the chain ends
there. Then power control over QMP.

Traffic stays on the test's bridge and taps: the bridge gets FORWARD DROP rules and the VMs'
DHCP answers carry no router. Everything is removed in `finally` blocks, whatever happens.

Needs root, iproute2, iptables, dnsmasq, qemu-system-x86, qemu-utils, ovmf, ipxe, ipxe-qemu,
seabios (make setup).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Interface, ip_network
from pathlib import Path

import pytest

from metalctl.boot.dnsmasq_process import end_process
from metalctl.vmlab import network, qemu
from metalctl.vmlab.power import power as vm_power
from metalctl.vmlab.power import power_state as vm_power_state
from metalctl.vmlab.qemu import VmConfig
from metalctl.vmlab.qmp import QmpClient, power_state

CHECKOUT = Path(__file__).resolve().parents[2]
TOOLS = ("ip", "iptables", "dnsmasq", "qemu-system-x86_64", "qemu-img")
FILES = (
    Path("/usr/lib/ipxe/snponly.efi"),
    Path("/usr/lib/ipxe/qemu/pxe-virtio.rom"),
    qemu.OVMF_CODE,
    qemu.OVMF_VARS,
)


def _missing() -> list[str]:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [t for t in TOOLS if not shutil.which(t, path=path)] + [
        str(f) for f in FILES if not f.is_file()
    ]


pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (bridges, taps, iptables, DHCP)"),
    pytest.mark.skipif(bool(_missing()), reason=f"needs {', '.join(_missing())} (make setup)"),
]

SERVE_START_SECONDS = 40.0
BOOT_SECONDS = 90.0  # power-on → iPXE's HTTP fetch, both VMs at once under TCG
STOP_SECONDS = 20.0


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=check)


def _used_networks() -> list[IPv4Network]:
    routes = json.loads(_run("ip", "-j", "-4", "route", "show", "table", "all").stdout)
    nets = []
    for r in routes:
        dst = r.get("dst", "")
        if dst and dst != "default":
            net = ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
            if isinstance(net, IPv4Network):
                nets.append(net)
    return nets


def _free_network() -> IPv4Network:
    used = _used_networks()
    for _ in range(50):
        candidate = IPv4Network(f"10.214.{int.from_bytes(os.urandom(1), 'big')}.0/24")
        if not any(candidate.overlaps(n) for n in used):
            return candidate
    pytest.fail("no free /24 in 10.214.0.0/16 for the lab bridge")


def _free_port(address: IPv4Address) -> int:
    with socket.socket() as s:
        s.bind((str(address), 0))
        return int(s.getsockname()[1])


@dataclass
class Lab:
    cluster: str
    bridge: str
    net: IPv4Network
    root: Path  # 0755 directory under /tmp: dnsmasq reads its TFTP root as its own user
    taps: list[str]
    vms: list[VmConfig]

    @property
    def server(self) -> IPv4Address:
        return self.net.network_address + 1


@pytest.fixture
def lab() -> Iterator[Lab]:
    root = Path(tempfile.mkdtemp(prefix="metalctl-vmlab-", dir="/tmp"))
    root.chmod(0o755)
    cluster = f"vmlab-test-{os.urandom(4).hex()}"
    net = _free_network()
    made = Lab(cluster, network.bridge_name(cluster), net, root, [], [])
    try:
        yield made
    finally:
        for vm in made.vms:
            try:
                qemu.stop(vm)
            except Exception as exc:  # keep cleaning up
                print(f"cleanup: {exc}", file=sys.stderr)
        network.remove(*made.taps, made.bridge)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Serving:
    proc: subprocess.Popen[bytes]
    stderr_path: Path
    port: int
    state: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


@pytest.fixture
def serve(lab: Lab) -> Iterator[list[Serving]]:
    started: list[Serving] = []
    try:
        yield started
    finally:
        for s in started:
            end_process(s.proc, STOP_SECONDS)
            _kill_leftover_dnsmasq(s.state)


def _kill_leftover_dnsmasq(state: Path) -> None:
    try:
        pid = int((state / "dnsmasq.pid").read_text())
        if str(state).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


def start_serve(lab: Lab, started: list[Serving]) -> Serving:
    port = _free_port(lab.server)
    state = lab.root / "boot"
    log = lab.root / "serve.stderr"
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT), "METALCTL_HOME": str(lab.root / "home")}
    first, last = lab.net.network_address + 100, lab.net.network_address + 150
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "metalctl", "boot", "serve", "--interface", lab.bridge,
             "--address", str(lab.server), "--dhcp-range", f"{first},{last}",
             "--port", str(port), "--state-dir", str(state)],
            stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env,
        )  # fmt: skip
    serving = Serving(proc, log, port, state)
    started.append(serving)
    deadline = time.monotonic() + SERVE_START_SECONDS
    while "serving " not in serving.stderr():
        if proc.poll() is not None:
            pytest.fail(f"boot serve ended ({proc.returncode}):\n{serving.stderr()}")
        if time.monotonic() > deadline:
            pytest.fail(f"boot serve not ready in {SERVE_START_SECONDS:g} s:\n{serving.stderr()}")
        time.sleep(0.2)
    return serving


def _ula() -> IPv6Interface:
    raw = os.urandom(5).hex()
    return IPv6Interface(f"fd{raw[:2]}:{raw[2:6]}:{raw[6:]}::1/64")


def _forward_rules(tool: str, bridge: str) -> list[str]:
    return [
        line
        for line in _run(tool, "-w", "10", "-S", "FORWARD").stdout.splitlines()
        if f"metalctl-vmlab:{bridge}" in line
    ]


def _leased_ip(state: Path, mac: str) -> str | None:
    """dnsmasq.leases: ``expiry mac ip hostname client-id`` per line."""
    try:
        lines = (state / "dnsmasq.leases").read_text().splitlines()
    except OSError:
        return None
    return next((f[2] for f in map(str.split, lines) if len(f) > 2 and f[1] == mac), None)


def _fetched_script(serving: Serving, mac: str) -> bool:
    """The request log names the client's address, not the query: map the MAC through the
    lease (iPXE renews the firmware's lease, so both have the same address)."""
    ip = _leased_ip(serving.state, mac)
    return ip is not None and f"GET /boot.ipxe 200 {ip}\n" in serving.stderr()


def _new_vm(lab: Lab, index: int, firmware: qemu.Firmware) -> VmConfig:
    tap = network.tap_name(lab.cluster, index)
    lab.taps.append(tap)
    network.add_tap(tap, lab.bridge)
    name = f"vm{index}-{firmware}"
    vm = VmConfig(
        name=name,
        mac=qemu.mac_address(lab.cluster, index),
        tap=tap,
        disk=lab.root / name / "disk.qcow2",
        state_dir=lab.root / name,
        firmware=firmware,
        disk_size=1 << 30,
        memory_mib=512,
    )
    assert qemu.create_disk(vm.disk, vm.disk_size)
    return vm


def test_bios_and_uefi_vms_pxe_boot_to_ipxe_and_obey_power(lab: Lab, serve: list[Serving]) -> None:
    made = network.create_bridge(lab.bridge, IPv4Interface(f"{lab.server}/24"), _ula())
    assert made.created and made.name == lab.bridge and len(made.addresses) == 2
    again = network.create_bridge(lab.bridge, IPv4Interface(f"{lab.server}/24"))
    assert not again.created and again.addresses == () and again.rules == ()  # idempotent
    rules = _forward_rules("iptables", lab.bridge)
    assert any(f"-i {lab.bridge} -m comment" in r and r.endswith("-j DROP") for r in rules), rules
    assert any(f"-o {lab.bridge} -m comment" in r and r.endswith("-j DROP") for r in rules), rules
    assert Path(f"/proc/sys/net/ipv4/conf/{lab.bridge}/forwarding").read_text().strip() == "0"

    serving = start_serve(lab, serve)
    bios, uefi = _new_vm(lab, 0, "bios"), _new_vm(lab, 1, "uefi")
    lab.vms += [bios, uefi]
    assert bios.serial != uefi.serial and bios.uuid != uefi.uuid

    qemu.accelerator()  # the KVM probe (once per process) is not part of the boot times
    started = {}
    for vm in (bios, uefi):
        qemu.start(vm)
        started[vm.name] = time.monotonic()
        assert qemu.is_running(vm)

    # Both boot at once: each must reach iPXE's HTTP fetch of its own boot script.
    fetched: dict[str, float] = {}
    deadline = time.monotonic() + BOOT_SECONDS
    while len(fetched) < 2 and time.monotonic() < deadline:
        for vm in (bios, uefi):
            if vm.name not in fetched and _fetched_script(serving, vm.mac):
                fetched[vm.name] = time.monotonic() - started[vm.name]
        time.sleep(0.2)
    print(f"\npower-on -> GET /boot.ipxe: {fetched} (accel {qemu.accelerator()})")
    for vm in (bios, uefi):
        assert vm.name in fetched, (
            f"{vm.name} did not fetch /boot.ipxe in {BOOT_SECONDS:g} s\n"
            f"console:\n" + "\n".join(qemu.console_tail(vm)) + f"\nboot serve:\n{serving.stderr()}"
        )

    # The service issued a discovery token to each MAC (the script it rendered).
    with sqlite3.connect(lab.root / "home" / "metalctl.db") as db:
        token_macs = {row[0] for row in db.execute("SELECT mac FROM boot_tokens")}
    assert {bios.mac, uefi.mac} <= token_macs

    dnsmasq_log = (serving.state / "dnsmasq.log").read_text(errors="replace")
    # UEFI: the firmware's own PXE fetched snponly.efi by TFTP, and asked as arch 7 (x86-64 EFI).
    uefi_ip = _leased_ip(serving.state, uefi.mac)
    assert f"/tftp/snponly.efi to {uefi_ip}\n" in dnsmasq_log, dnsmasq_log[-3000:]
    # BIOS: the iPXE ROM asked directly (user class iPXE): no TFTP stage for it.
    assert f"undionly.kpxe to {_leased_ip(serving.state, bios.mac)}\n" not in dnsmasq_log
    # No default route offered to anyone: DHCP answers carry an empty router option.
    assert not re.search(r"sent size:\s+4 option:\s+3 router", dnsmasq_log)
    assert not re.search(r"option:\s+3 router\s+\d", dnsmasq_log)

    # Power: off holds the machine in reset (QEMU stays); on and cycle are a cold start.
    consoles = {vm.name: vm.console_path.read_bytes() for vm in (bios, uefi)}
    for vm in (bios, uefi):
        assert vm_power_state(vm) == "on"
        first_pid = qemu._pid(vm)
        assert vm_power(vm, "off") == "off"
        assert vm_power_state(vm) == "off"
        assert qemu.is_running(vm)  # held in reset, not gone: 'lab up' leaves it alone
        assert vm_power(vm, "off") == "off"  # again: still off
        assert vm_power(vm, "on") == "on"
        assert qemu._pid(vm) != first_pid  # a fresh process: RAM cleared, firmware cold
        on_pid = qemu._pid(vm)
        assert vm_power(vm, "on") == "on"  # on again: left running
        assert qemu._pid(vm) == on_pid
        assert vm_power(vm, "cycle") == "on"
        assert qemu._pid(vm) != on_pid
        with QmpClient(vm.qmp_path, vm=vm.name) as qmp:
            assert qmp.status() == "running"
            smbios_uuid = qmp.execute("query-uuid")["UUID"]
        assert smbios_uuid == vm.uuid
    # The console keeps the earlier boots: the process is new, its log is appended to.
    for vm in (bios, uefi):
        assert vm.console_path.read_bytes().startswith(consoles[vm.name])

    # Paused (as after a "stop") counts as off; on starts it again.
    with QmpClient(bios.qmp_path, vm=bios.name) as qmp:
        qmp.execute("stop")
        assert qmp.status() == "paused"
    assert vm_power_state(bios) == "off"
    assert vm_power(bios, "on") == "on"

    # Errors name the VM once QEMU is gone.
    assert qemu.stop(uefi)
    assert not qemu.is_running(uefi)
    assert not qemu.stop(uefi)  # already stopped: fine
    with pytest.raises(Exception, match=f"VM {uefi.name}: cannot connect"):
        power_state(uefi.qmp_path, vm=uefi.name)

    problems = qemu.console_problems(bios)
    assert isinstance(problems, list)
    assert any("iPXE" in line for line in qemu.console_tail(bios, 400)), qemu.console_tail(bios)


def test_remove_leaves_nothing_behind(lab: Lab) -> None:
    network.create_bridge(lab.bridge, IPv4Interface(f"{lab.server}/24"), _ula())
    taps = [network.tap_name(lab.cluster, i) for i in (0, 1, 12)]
    lab.taps += taps
    for tap in taps:
        assert network.add_tap(tap, lab.bridge)
    assert not network.add_tap(taps[0], lab.bridge)  # exists: reattached
    left = network.leftovers(lab.cluster)
    assert set(left.links) == {lab.bridge, *taps}
    assert len(left.rules) >= 3
    assert set(left.names()) == {lab.bridge, *taps}

    removed = network.remove(*left.names())
    assert f"link {lab.bridge}" in removed
    after = network.leftovers(lab.cluster)
    assert not after, after
    assert _forward_rules("iptables", lab.bridge) == []
    assert network.remove(*taps, lab.bridge) == []  # idempotent: all gone already


def test_names_fit_linux_limits() -> None:
    long = "a-very-long-cluster-name-" * 10
    assert len(network.bridge_name(long)) <= 15
    assert len(network.tap_name(long, network.MAX_INDEX)) <= 15
    assert network.bridge_name("x") != network.bridge_name("y")
    assert network.tap_name("x", 1) != network.tap_name("x", 11)
    assert network.bridge_name("x") == network.bridge_name("x")
    assert qemu.mac_address("x", 0) != qemu.mac_address("x", 1)
