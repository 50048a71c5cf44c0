"""QEMU VMs that boot like rack servers: PXE first, every time, then the disk.

Each VM is one daemonized ``qemu-system-x86_64`` (q35) with a virtio NIC on a tap
(``bootindex=1``) and a virtio disk (``bootindex=2``); the boot service decides what a
machine boots (discovery, deploy, or "boot your disk"), as it would for real hardware.

- BIOS: SeaBIOS + iPXE's virtio NIC ROM (Debian's ipxe-qemu). SeaBIOS's serial console is
  on (``etc/sercon-port``), so SeaBIOS and iPXE messages land in ``console.log``.
- UEFI: OVMF (``OVMF_CODE_4M.fd`` read-only + a per-VM copy of ``OVMF_VARS_4M.fd``, kept
  across restarts like NVRAM) and NO option ROM on the NIC (``romfile=``): the firmware's own
  virtio-net driver and PXE do DHCP and TFTP ``snponly.efi``, which chains to iPXE — the path
  of a real UEFI server.

KVM is used only when it really works: the first ``start`` tries it once (OVMF under
``-accel kvm`` must reach its boot manager) and the answer is cached for the process;
otherwise TCG. ``METALCTL_VMLAB_ACCEL=kvm|tcg`` skips the probe.

Files in ``VmConfig.state_dir``: ``qemu.pid``, ``qmp.sock``, ``console.log`` (serial),
``qemu.stderr`` (QEMU's own messages until it daemonized), ``OVMF_VARS.fd`` (UEFI).
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from metalctl.errors import ConflictError, HostSetupError, ProvisionError, UsageError
from metalctl.vmlab.qmp import QmpClient

Firmware = Literal["bios", "uefi"]
DiskFormat = Literal["qcow2", "raw"]

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
IPXE_ROM_DIR = Path("/usr/lib/ipxe/qemu")
START_SECONDS = 30.0
STOP_SECONDS = 10.0
KVM_PROBE_SECONDS = 20.0
_SOCKET_PATH_MAX = 107  # sun_path
_POLL = 0.1
_KVM_FAILED = re.compile(rb"KVM internal error|emulation failure|kvm_.*[Aa]ssertion|[Ff]ailed to")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_SERIAL_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[c()][0-9A-B]?|[\x00-\x08\x0b-\x1f\x7f]")
_PROBLEMS = re.compile(
    r"No more network devices|Nothing to boot|No configuration methods|Connection timed out"
    r"|Could not|Boot failed|No bootable|PXE-E\d\d|Error|error|[Ff]ailed|Kernel panic"
    r"|not found|Permission denied",
)


def mac_address(cluster: str, index: int) -> str:
    """A stable MAC for VM ``index`` of ``cluster`` in QEMU's OUI 52:54:00."""
    digest = hashlib.sha256(f"{cluster}\0{index}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def _new_serial() -> str:
    return f"MTL{os.urandom(6).hex().upper()}"


def _new_uuid() -> str:
    return str(uuidlib.uuid4())


@dataclass(frozen=True)
class VmConfig:
    name: str
    mac: str
    tap: str
    disk: Path
    state_dir: Path
    firmware: Firmware = "bios"
    disk_size: int = 8 << 30  # bytes, for create_disk
    disk_format: DiskFormat = "qcow2"
    memory_mib: int = 1024
    cpus: int = 1
    serial: str = field(default_factory=_new_serial)  # SMBIOS type 1 serial number
    uuid: str = field(default_factory=_new_uuid)  # SMBIOS system UUID

    def __post_init__(self) -> None:
        problems = []
        if not _SERIAL_RE.match(self.name):
            problems.append(f"name {self.name!r}: letters, digits, '.', '_' or '-' only")
        if not _MAC_RE.match(self.mac):
            problems.append(f"mac {self.mac!r}: lowercase xx:xx:xx:xx:xx:xx")
        elif int(self.mac[:2], 16) & 1:
            problems.append(f"mac {self.mac!r}: a multicast address")
        if self.firmware not in ("bios", "uefi"):
            problems.append(f"firmware {self.firmware!r}: bios or uefi")
        if self.disk_format not in ("qcow2", "raw"):
            problems.append(f"disk_format {self.disk_format!r}: qcow2 or raw")
        if self.memory_mib < 128 or self.cpus < 1 or self.disk_size < 1 << 20:
            problems.append("memory_mib >= 128, cpus >= 1, disk_size >= 1 MiB")
        if not _SERIAL_RE.match(self.serial):
            problems.append(f"serial {self.serial!r}: up to 64 of [A-Za-z0-9._-]")
        try:
            uuidlib.UUID(self.uuid)
        except ValueError:
            problems.append(f"uuid {self.uuid!r}: not a UUID")
        if len(str(self.qmp_path)) > _SOCKET_PATH_MAX:
            problems.append(f"state_dir {self.state_dir}: too long for a unix socket path")
        if problems:
            raise UsageError(f"VM {self.name}: " + "; ".join(problems))

    @property
    def pid_path(self) -> Path:
        return self.state_dir / "qemu.pid"

    @property
    def qmp_path(self) -> Path:
        return self.state_dir / "qmp.sock"

    @property
    def console_path(self) -> Path:
        return self.state_dir / "console.log"

    @property
    def stderr_path(self) -> Path:
        return self.state_dir / "qemu.stderr"

    @property
    def vars_path(self) -> Path:
        return self.state_dir / "OVMF_VARS.fd"


# --- binaries and the accelerator ----------------------------------------------------------


def _qemu() -> str:
    found = shutil.which("qemu-system-x86_64")
    if found is None:
        raise HostSetupError(
            "qemu-system-x86_64 not found", hint="install Debian's package qemu-system-x86"
        )
    return found


def _needs(path: Path, package: str) -> Path:
    if not path.is_file():
        raise HostSetupError(f"{path} not found", hint=f"install Debian's package {package}")
    return path


_accel: str | None = None


def accelerator() -> str:
    """``kvm`` if QEMU can really run a guest with it here (probed once), else ``tcg``."""
    global _accel
    forced = os.environ.get("METALCTL_VMLAB_ACCEL", "")
    if forced in ("kvm", "tcg"):
        return forced
    if _accel is None:
        _accel = "kvm" if _kvm_works() else "tcg"
    return _accel


def _kvm_works() -> bool:
    """Boot OVMF (the more demanding firmware) under KVM with no devices: it must print its
    boot manager's first line on the serial port. /dev/kvm may exist and still fail (an
    emulation failure or an abort setting MSRs under nested virtualisation)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK) or not OVMF_CODE.is_file():
        return False
    with tempfile.TemporaryDirectory(prefix="mtl-kvm-") as tmp:
        serial, vars_copy = Path(tmp) / "serial", Path(tmp) / "vars.fd"
        shutil.copyfile(OVMF_VARS, vars_copy)
        argv = [
            _qemu(), "-accel", "kvm", "-machine", "q35", "-m", "256", "-nodefaults",
            "-display", "none", "-no-reboot", "-serial", f"file:{serial}",
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
        ]  # fmt: skip
        err_path = Path(tmp) / "stderr"
        with err_path.open("wb") as err:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        try:
            deadline = time.monotonic() + KVM_PROBE_SECONDS
            while time.monotonic() < deadline and proc.poll() is None:
                if serial.exists() and b"BdsDxe" in serial.read_bytes():
                    return True
                if _KVM_FAILED.search(err_path.read_bytes()):
                    return False  # QEMU stays alive, paused, after a KVM internal error
                time.sleep(_POLL)
            return False
        finally:
            proc.kill()
            proc.wait(STOP_SECONDS)


# --- disks ------------------------------------------------------------------------------


def create_disk(
    path: Path, size: int, disk_format: DiskFormat = "qcow2", *, exist_ok: bool = False
) -> bool:
    """A blank disk: qcow2 (``qemu-img create``) or a sparse raw file. An existing file is
    refused (or, with ``exist_ok``, kept untouched). Returns whether it was created."""
    if path.exists():
        if exist_ok:
            return False
        raise ConflictError(f"disk {path} exists already", hint="remove it or pick another path")
    if size < 1 << 20:
        raise UsageError(f"disk size {size} is below 1 MiB")
    path.parent.mkdir(parents=True, exist_ok=True)
    if disk_format == "raw":
        with path.open("xb") as f:
            f.truncate(size)
        return True
    if disk_format != "qcow2":
        raise UsageError(f"disk format must be qcow2 or raw, not {disk_format!r}")
    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        raise HostSetupError("qemu-img not found", hint="install Debian's package qemu-utils")
    argv = [qemu_img, "create", "-q", "-f", "qcow2", str(path), str(size)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired as exc:
        raise HostSetupError(f"'{shlex.join(argv)}' did not finish in 60 s") from exc
    if done.returncode != 0:
        raise HostSetupError(f"'{shlex.join(argv)}' failed: {done.stderr.strip()}")
    return True


# --- the VM process -----------------------------------------------------------------------


def qemu_argv(config: VmConfig, accel: str) -> list[str]:
    """The command line (without starting anything)."""
    c = config
    argv = [
        _qemu(),
        "-name", f"{c.name},process=mtl-{c.name}",
        "-machine", "q35", "-accel", accel, "-cpu", "max" if accel == "tcg" else "host",
        "-m", str(c.memory_mib), "-smp", str(c.cpus),
        "-uuid", c.uuid,
        "-smbios", f"type=1,manufacturer=metalctl,product=vmlab,serial={c.serial}",
        "-nodefaults", "-display", "none", "-no-shutdown",
        "-daemonize", "-pidfile", str(c.pid_path),
        "-qmp", f"unix:{c.qmp_path},server=on,wait=off",
        # append: a power cycle (a new process) keeps the earlier boots' console.
        "-chardev", f"file,id=console,path={c.console_path},append=on",
        "-serial", "chardev:console",
        "-netdev", f"tap,id=net0,ifname={c.tap},script=no,downscript=no",
    ]  # fmt: skip
    # BIOS: network first, every boot (the boot service answers "boot your disk" with
    # sanboot 0x80). UEFI: disk first, network second. iPXE (Debian's 2019 build) cannot
    # hand a UEFI machine to its local disk ("sanboot --drive 0x80": No such device), and
    # OVMF, whose variables were made while the disk was blank, has no disk entry to fall
    # back to after iPXE's "exit" (measured: it lands in its setup menu). A blank disk
    # boots nothing, so a blank UEFI VM still PXE-boots; the vmlab provisioner blanks the
    # disk before it redeploys (the lab's stand-in for a BMC's "next boot: network").
    nic_index, disk_index = (2, 1) if c.firmware == "uefi" else (1, 2)
    nic = f"virtio-net-pci,netdev=net0,mac={c.mac},bootindex={nic_index}"
    if c.firmware == "uefi":
        argv += [
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={_needs(OVMF_CODE, 'ovmf')}",
            "-drive", f"if=pflash,format=raw,unit=1,file={c.vars_path}",
            "-device", f"{nic},romfile=",
        ]  # fmt: skip
    else:
        # QEMU's default ROM for this NIC: efi-virtio.rom from ipxe-qemu (found on its
        # firmware path). Naming a ROM file by absolute path here left SeaBIOS without
        # the NIC boot entry (measured with QEMU 7.2): keep the default, check it exists.
        _needs(IPXE_ROM_DIR / "efi-virtio.rom", "ipxe-qemu")
        argv += [
            "-fw_cfg", f"name=etc/sercon-port,file={c.state_dir / 'sercon-port'}",
            "-device", nic,
        ]  # fmt: skip
    argv += [
        "-drive", f"if=none,id=disk0,format={c.disk_format},file={c.disk},discard=unmap",
        "-device", f"virtio-blk-pci,drive=disk0,bootindex={disk_index}",
    ]  # fmt: skip
    return argv


def start(config: VmConfig) -> int:
    """Start the VM (powered on: it PXE-boots at once). Returns QEMU's pid."""
    c = config
    if is_running(c):
        raise ConflictError(f"VM {c.name} is running already (pid {_pid(c)})")
    if not c.disk.is_file():
        raise ProvisionError(f"VM {c.name}: disk {c.disk} does not exist", hint="create_disk first")
    c.state_dir.mkdir(parents=True, exist_ok=True)
    for stale in (c.pid_path, c.qmp_path):
        stale.unlink(missing_ok=True)
    if c.firmware == "uefi" and not c.vars_path.exists():
        shutil.copyfile(_needs(OVMF_VARS, "ovmf"), c.vars_path)
    if c.firmware == "bios":
        # SeaBIOS reads a little-endian integer: its console on COM1 as well as VGA.
        (c.state_dir / "sercon-port").write_bytes((0x3F8).to_bytes(2, "little"))
    argv = qemu_argv(c, accelerator())
    with c.stderr_path.open("wb") as err:
        # -daemonize: the parent returns once the VM is set up (or failed to be).
        try:
            done = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                timeout=START_SECONDS, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise ProvisionError(f"VM {c.name}: QEMU did not start in {START_SECONDS:g} s") from exc
    said = _read_text(c.stderr_path).strip()
    if done.returncode != 0:
        raise ProvisionError(
            f"VM {c.name}: QEMU failed to start (exit {done.returncode}): {said[-2000:]}",
            hint=f"command: {shlex.join(argv)}",
        )
    pid = _pid(c)
    if pid is None or not _alive(pid):
        raise ProvisionError(f"VM {c.name}: QEMU exited right after starting: {said[-2000:]}")
    return pid


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _pid(config: VmConfig) -> int | None:
    """From the pidfile; without one (a state directory removed under a running VM), the
    QEMU whose command line names that pidfile."""
    try:
        return int(config.pid_path.read_text().strip())
    except (OSError, ValueError):
        pass
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _ours(config, int(entry.name)) and _alive(int(entry.name)):
            return int(entry.name)
    return None


def _alive(pid: int) -> bool:
    """Running and not a zombie (a daemonized QEMU is nobody's child once it exits: it may
    linger as a zombie where PID 1 does not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _ours(config: VmConfig, pid: int) -> bool:
    """The pid is a QEMU started for this config (its command line names our pidfile)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(config.pid_path).encode() in argv


def is_running(config: VmConfig) -> bool:
    pid = _pid(config)
    return pid is not None and _alive(pid) and _ours(config, pid)


def stop(config: VmConfig, seconds: float = STOP_SECONDS) -> bool:
    """End the VM: QMP ``quit``, then SIGTERM, then SIGKILL, each bounded by ``seconds``.
    Returns whether a running VM was stopped; a VM that is not running is fine."""
    c = config
    pid = _pid(c)
    if pid is None or not _alive(pid) or not _ours(c, pid):
        _forget(c)
        return False
    try:
        with QmpClient(c.qmp_path, vm=c.name, timeout=min(seconds, 5.0)) as qmp:
            qmp.execute("quit")
    except ProvisionError:
        pass  # QEMU hung or its socket is gone: signals below
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None and _alive(pid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
        deadline = time.monotonic() + seconds
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(_POLL)
        if not _alive(pid):
            break
    if _alive(pid):
        raise ProvisionError(f"VM {c.name}: QEMU (pid {pid}) survived SIGKILL for {seconds:g} s")
    _forget(c)
    return True


def _forget(config: VmConfig) -> None:
    for path in (config.pid_path, config.qmp_path):
        path.unlink(missing_ok=True)


# --- the console ----------------------------------------------------------------------


def console_tail(config: VmConfig, lines: int = 40, max_bytes: int = 64 << 10) -> list[str]:
    """The last ``lines`` non-blank lines of the serial console, terminal escapes removed."""
    try:
        with config.console_path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - max_bytes))
            raw = f.read().decode(errors="replace")
    except OSError:
        return []
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    cleaned = [_ANSI.sub("", line).strip() for line in text.split("\n")]
    return [line for line in cleaned if line][-lines:]


def console_problems(config: VmConfig, lines: int = 200) -> list[str]:
    """Lines of the console's tail that report a failure (firmware, iPXE, kernel)."""
    return [line for line in console_tail(config, lines) if _PROBLEMS.search(line)]
