"""Build a bootable Debian 12 disk image (raw, BIOS and UEFI) with cloud-init and the
workload packages preloaded, and store it in the image cache as ``debian-12``.

The recipe (measured on the build machines, docs: /work/shared/ENVIRONMENT.md "Bootable OS
disk images"):

    truncate 2 GiB; sfdisk GPT: 1 MiB BIOS boot, 127 MiB ESP, ext4 root (label root)
    losetup -f --show; partx -a (losetup -P makes no partition nodes here)
    mkfs; debootstrap --variant=minbase bookworm; apt-get install INSIDE the chroot
    grub-pc: grub-install --target=i386-pc + update-grub, then root=UUID (no udev in a chroot)
    UEFI: grub-mkstandalone stub -> EFI/BOOT/BOOTX64.EFI on the ESP with mtools (no vfat mount)
    empty machine-id, no SSH host keys (regenerated at first boot), root locked,
    cloud-init NoCloud tuned, systemd-networkd with a DHCP fallback, MODULES=list initramfs

Everything happens in a temporary folder under images/; the loop device is detached and
every mount undone in ``finally`` (Ctrl-C included). The result is stored
content-addressed (``catalog.store_image``), so a failed or interrupted build leaves the
previous image in place. A recipe hash over every input names the build: an unchanged
recipe is reused unless ``force``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from metalctl.errors import HostSetupError, WaitTimeout
from metalctl.images.cache import cache_root, recipe_hash
from metalctl.images.catalog import (
    ImageRecord,
    forget_if_unnamed,
    images_dir,
    lookup,
    store_image,
)
from metalctl.wait import wait_for

Say = Callable[[str], None]

NAME = "debian-12"
SCRIPT_VERSION = "debian-12/2"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
IMAGE_BYTES = 2 << 30
ROOT_LABEL = "root"
ESP_LABEL = "ESP"

# sfdisk script: 1 MiB BIOS boot (GRUB's core.img), 127 MiB ESP, the rest ext4 root.
PARTITIONS = """\
label: gpt
start=1MiB, size=1MiB, type=21686148-6449-6E6F-744E-656564454649, name="bios-boot"
size=127MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="esp"
type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="root"
"""

# In the chroot, one apt-get transaction (debootstrap cannot resolve cloud-init's virtual
# dependencies). --no-install-recommends: what the image needs is listed here.
PACKAGES = (
    # boot
    "linux-image-amd64",
    "initramfs-tools",
    "grub-pc",
    "grub-efi-amd64-bin",
    "systemd-sysv",
    "udev",
    "dbus",
    "kmod",
    # first boot, access
    "cloud-init",
    "cloud-guest-utils",
    "fdisk",
    "e2fsprogs",
    "openssh-server",
    "sudo",
    "python3",
    "python3-apt",
    # network, time
    "iproute2",
    "netbase",
    "systemd-resolved",
    "systemd-timesyncd",
    "ca-certificates",
    "tzdata",
    # workload: deploys on VMs need no network
    "docker.io",
    "apparmor",
    "iptables",
    "pigz",
    "xz-utils",
    "procps",
    "less",
    "zstd",  # initramfs compression (faster than gzip to unpack under TCG)
)

# Drivers the initramfs needs to find the root disk (virtio, SATA, SCSI, NVMe) and ext4.
# MODULES=most costs ~8 s of BIOS disk reads under TCG (a 37 MB initrd); this list, 8 MB.
INITRAMFS_MODULES = (
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "sd_mod",
    "ahci",
    "ata_piix",
    "nvme",
    "ext4",
    "crc32c_generic",
)

CLOUD_CFG = """\
# metalctl: NoCloud (a cidata ISO, or files under /var/lib/cloud/seed/nocloud written by
# the deploy agent), else None (defaults; networkd's DHCP fallback brings the NIC up).
datasource_list: [NoCloud, None]
disable_root: false
ssh_pwauth: false
manage_etc_hosts: true
locale: C.UTF-8
ssh_deletekeys: true
ssh_genkeytypes: [ed25519, ecdsa]
grub_dpkg:
  enabled: false
growpart:
  mode: auto
  devices: ["/"]
resize_rootfs: true
"""

DHCP_FALLBACK = """\
# metalctl: DHCP on every wired NIC when cloud-init wrote no network config of its own
# (cloud-init's 10-cloud-init-*.network sorts first and wins).
[Match]
Name=en* eth*

[Network]
DHCP=yes
"""

# Runs at every boot, after cloud-init made the keys (first boot) and before sshd. A power
# cut in the first half-minute after first boot leaves the new host keys EMPTY (ext4's
# delayed allocation had not written them yet) and sshd then refuses to start on every
# later boot: drop empty keys, make missing ones, and flush them to disk before sshd runs.
HOSTKEYS_SCRIPT = """\
#!/bin/sh
# metalctl: repair SSH host keys (see metalctl-ssh-hostkeys.service).
for key in /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub; do
    if [ -e "$key" ] && [ ! -s "$key" ]; then
        echo "metalctl: removing empty SSH host key $key (power cut after it was made)"
        rm -f "$key"
    fi
done
for key in /etc/ssh/ssh_host_*_key; do
    [ -e "$key.pub" ] || rm -f "$key"
done
ssh-keygen -A
sync -f /etc/ssh/sshd_config
"""

HOSTKEYS_UNIT = """\
[Unit]
Description=Repair or generate SSH host keys before sshd starts (metalctl)
After=cloud-init.service
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/bin/sh /usr/local/lib/metalctl/ssh-hostkeys.sh

[Install]
WantedBy=multi-user.target
"""

GRUB_DEFAULTS = """\
GRUB_TIMEOUT=1
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200n8"
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --speed=115200"
GRUB_DISABLE_OS_PROBER=true
"""

# The UEFI stub: without the insmods GRUB recurses; no prefix (no x86_64-efi modules in /boot).
EFI_STUB = """\
insmod part_gpt
insmod ext2
search --no-floppy --fs-uuid --set=root {uuid}
configfile ($root)/boot/grub/grub.cfg
"""

SOURCES_LIST = f"""\
deb {MIRROR} {SUITE} main
deb {MIRROR} {SUITE}-updates main
deb {SECURITY_MIRROR} {SUITE}-security main
"""

# Files written into the root before the package install (path -> content).
CONFIG_FILES: dict[str, str] = {
    "etc/apt/sources.list": SOURCES_LIST,
    "etc/initramfs-tools/modules": "".join(f"{m}\n" for m in INITRAMFS_MODULES),
    "etc/initramfs-tools/conf.d/metalctl.conf": "MODULES=list\n",
    "etc/default/grub.d/metalctl.cfg": GRUB_DEFAULTS,
    "etc/cloud/cloud.cfg.d/90_metalctl.cfg": CLOUD_CFG,
    "etc/systemd/network/90-metalctl-dhcp.network": DHCP_FALLBACK,
    "etc/systemd/system/metalctl-ssh-hostkeys.service": HOSTKEYS_UNIT,
    "usr/local/lib/metalctl/ssh-hostkeys.sh": HOSTKEYS_SCRIPT,
    "etc/modprobe.d/metalctl-blacklist.conf": "# probing a floppy costs seconds\nblacklist floppy\n",
    "etc/hostname": "debian\n",
    "etc/hosts": "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n",
    "usr/sbin/policy-rc.d": "#!/bin/sh\nexit 101\n",  # no daemon starts in the chroot
}
ENABLE_UNITS = ("systemd-networkd", "systemd-resolved", "metalctl-ssh-hostkeys")

HOST_TOOLS = {
    "debootstrap": "debootstrap",
    "sfdisk": "fdisk",
    "partx": "util-linux",
    "losetup": "mount",
    "mkfs.ext4": "e2fsprogs",
    "mkfs.vfat": "dosfstools",
    "mmd": "mtools",
    "mcopy": "mtools",
    "zstd": "zstd",
    "chroot": "coreutils",
    "fstrim": "util-linux",
}

CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def recipe() -> str:
    """The hash of everything that goes into the image."""
    parts: list[str] = [
        SCRIPT_VERSION,
        SUITE,
        MIRROR,
        str(IMAGE_BYTES),
        PARTITIONS,
        ROOT_LABEL,
        "\n".join(PACKAGES),
        EFI_STUB,
        "\n".join(ENABLE_UNITS),
    ]
    for path in sorted(CONFIG_FILES):
        parts += [path, CONFIG_FILES[path]]
    return recipe_hash(parts)


def build_debian12(say: Say, *, force: bool = False) -> ImageRecord:
    """Build (or reuse) the ``debian-12`` image; needs root, debootstrap and Debian's archive."""
    wanted = recipe()
    current = lookup(NAME)
    if current is not None and current.recipe == wanted and not force:
        say(f"{NAME}: recipe {wanted} already built ({current.sha256[:12]}), reusing it")
        return current
    check_host()
    folder = images_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with _build_lock(folder):
        current = lookup(NAME)  # another build may have finished while we waited
        if current is not None and current.recipe == wanted and not force:
            say(f"{NAME}: recipe {wanted} was just built by another process, reusing it")
            return current
        started = time.monotonic()
        log_path = cache_root() / "logs" / f"build-{NAME}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with (
            _build_dir(folder, say) as tmp,
            log_path.open("w") as log,
        ):
            build = _Build(tmp, say, log, log_path)
            stored, sha, size = build.run()
            record = store_image(
                stored,
                name=NAME,
                sha256=sha,
                size=size,
                compression="zstd",
                source=f"built:{NAME}",
                recipe=wanted,
            )
        if current is not None and current.sha256 != record.sha256 and forget_if_unnamed(current):
            say(f"{NAME}: removed the image it replaces ({current.sha256[:12]})")
        say(
            f"{NAME}: stored {record.file} ({size >> 20} MiB raw, {record.stored_size >> 20} MiB "
            f"zstd) in {time.monotonic() - started:.0f}s"
        )
        return record


def check_host() -> None:
    if os.geteuid() != 0:
        raise HostSetupError(
            f"building {NAME} needs root (loop devices, mounts, chroot)",
            hint="run it as root (sudo metalctl image build debian-12)",
        )
    missing = sorted({pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise HostSetupError(
            f"building {NAME} needs tools from these Debian packages: {', '.join(missing)}",
            hint=f"apt-get install -y {' '.join(missing)}",
        )


@contextlib.contextmanager
def _build_dir(folder: Path, say: Say) -> Iterator[Path]:
    """A temporary folder in images/ (same filesystem: the result is renamed into place).
    Removed afterwards, unless something is still mounted below it: deleting through a
    bind mount of /dev would delete the host's device nodes."""
    tmp = Path(tempfile.mkdtemp(prefix=f".build-{NAME}-", dir=folder))
    try:
        yield tmp
    finally:
        left = mounts_under(tmp)
        if left:
            say(f"{NAME}: NOT removing {tmp}: still mounted there: {', '.join(map(str, left))}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


# Clean-up waits: a mount or loop device that is still busy after this is left lazily
# detached (the kernel frees it when the last user goes) rather than hang a Ctrl-C.
CLEANUP_WAIT_S = 10.0


def _unmount(target: Path, *, under: Path) -> None:
    """Unmount ``target`` if it is still mounted below ``under``; retried while busy."""

    def gone() -> bool:
        if target not in mounts_under(under):
            return True
        subprocess.run(["umount", str(target)], capture_output=True)
        return target not in mounts_under(under)

    try:
        wait_for(gone, what=f"unmounting {target}", timeout=CLEANUP_WAIT_S, interval=0.5)
    except WaitTimeout:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def _detach_loop(loop: str, *, partitions: bool) -> None:
    """Remove ``loop``'s partition devices, detach it, and wait until the kernel agrees.

    Neither command's exit status is worth much: ``losetup -d`` on a device still in use
    only marks it for auto-clear, and partitions left behind outlive the detach (the next
    build that gets this device would fail in ``partx -a``). sysfs says what is true."""
    sysdir = Path("/sys/block") / Path(loop).name
    backing = sysdir / "loop" / "backing_file"

    def stale_partitions() -> bool:
        return any(sysdir.glob(f"{sysdir.name}p*"))

    def detached() -> bool:
        if partitions and stale_partitions():
            subprocess.run(["partx", "-d", loop], capture_output=True)
        if backing.exists():
            subprocess.run(["losetup", "-d", loop], capture_output=True)
        return not backing.exists() and not stale_partitions()

    with contextlib.suppress(WaitTimeout):
        wait_for(detached, what=f"detaching {loop}", timeout=CLEANUP_WAIT_S, interval=0.5)


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below ``path`` (deepest first), from /proc/self/mountinfo."""
    base = str(path.resolve())
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) < 5:
                continue
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            if point == base or point.startswith(base + "/"):
                found.append(Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


@contextlib.contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    with (folder / f".build-{NAME}.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class _Build:
    def __init__(self, tmp: Path, say: Say, log: object, log_path: Path) -> None:
        self.tmp = tmp
        self.say = say
        self.log = log
        self.log_path = log_path
        self.disk = tmp / "disk.raw"
        self.root = tmp / "root"
        self.loop: str | None = None
        self.partitions_added = False
        self.mounts: list[Path] = []
        # Downloaded .debs are kept across builds (a forced rebuild fetches only what changed).
        self.downloads = cache_root() / "downloads" / NAME
        self.root_uuid = str(uuid.uuid4())

    # -- helpers ---------------------------------------------------------------------------

    def sh(
        self, args: Sequence[str], *, input: str | None = None, env: dict[str, str] | None = None
    ) -> str:
        """Run a command; its output goes to the build log, a failure raises with the tail."""
        self._log(f"$ {' '.join(args)}\n")
        proc = subprocess.run(
            list(args),
            input=input,
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        self._log(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise HostSetupError(
                f"building {NAME}: `{' '.join(args[:4])}` failed (exit {proc.returncode}):\n{tail}",
                hint=f"full log: {self.log_path}",
            )
        return proc.stdout

    def chroot(self, *args: str) -> str:
        env = {
            "PATH": CHROOT_PATH,
            "DEBIAN_FRONTEND": "noninteractive",
            "LC_ALL": "C.UTF-8",
            "HOME": "/root",
        }
        return self.sh(["chroot", str(self.root), *args], env=env)

    def _log(self, text: str) -> None:
        self.log.write(text)  # type: ignore[attr-defined]
        self.log.flush()  # type: ignore[attr-defined]

    def write(self, relative: str, content: str, mode: int = 0o644) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        path.chmod(mode)

    def part(self, number: int) -> str:
        assert self.loop is not None
        return f"{self.loop}p{number}"

    def mount(self, args: Sequence[str], target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        self.sh(["mount", *args, str(target)])
        self.mounts.append(target)

    def unmount(self, target: Path) -> None:
        self.sh(["umount", str(target)])
        self.mounts.remove(target)

    # -- the build -------------------------------------------------------------------------

    def run(self) -> tuple[Path, str, int]:
        try:
            self.partition()
            self.bootstrap()
            self.configure()
            self.install_bootloaders()
            self.finish()
        finally:
            self.cleanup()
        return self.store()

    def partition(self) -> None:
        self.say(f"{NAME}: partitioning a {IMAGE_BYTES >> 30} GiB disk (GPT: BIOS boot, ESP, root)")
        with self.disk.open("wb") as fh:
            fh.truncate(IMAGE_BYTES)
        self.sh(["sfdisk", "--quiet", str(self.disk)], input=PARTITIONS)
        self.loop = self.sh(["losetup", "--show", "-f", str(self.disk)]).strip()
        if not re.fullmatch(r"/dev/loop\d+", self.loop):
            raise HostSetupError(f"losetup gave an unexpected device {self.loop!r}")
        # A device freed by auto-clear may still carry an earlier user's partitions.
        subprocess.run(["partx", "-d", self.loop], capture_output=True)
        self.sh(["partx", "-a", self.loop])
        self.partitions_added = True
        deadline = time.monotonic() + 10
        while not all(Path(self.part(n)).exists() for n in (1, 2, 3)):
            if time.monotonic() > deadline:
                raise HostSetupError(f"no partition devices {self.loop}p1..3 after partx -a")
            time.sleep(0.1)
        self.sh(["mkfs.vfat", "-F", "32", "-n", ESP_LABEL, self.part(2)])
        self.sh(
            ["mkfs.ext4", "-q", "-L", ROOT_LABEL, "-U", self.root_uuid, "-m", "1", self.part(3)]
        )
        self.mount([self.part(3)], self.root)

    def bootstrap(self) -> None:
        self.say(f"{NAME}: debootstrap {SUITE} (minbase) from {MIRROR}")
        debs = self.downloads / "debootstrap"
        debs.mkdir(parents=True, exist_ok=True)
        self.sh(
            [
                "debootstrap",
                "--variant=minbase",
                f"--cache-dir={debs}",
                SUITE,
                str(self.root),
                MIRROR,
            ]
        )
        self.mount(["-t", "proc", "proc"], self.root / "proc")
        self.mount(["-t", "sysfs", "sysfs"], self.root / "sys")
        self.mount(["--bind", "/dev"], self.root / "dev")

    def configure(self) -> None:
        for path, content in CONFIG_FILES.items():
            self.write(path, content, 0o755 if path.endswith("policy-rc.d") else 0o644)
        self.write("etc/fstab", f"UUID={self.root_uuid} / ext4 errors=remount-ro 0 1\n", 0o644)
        shutil.copyfile("/etc/resolv.conf", self.root / "etc/resolv.conf")
        self.sh(
            ["chroot", str(self.root), "debconf-set-selections"],
            input="grub-pc grub-pc/install_devices multiselect\n"
            "grub-pc grub-pc/install_devices_empty boolean true\n",
            env={"PATH": CHROOT_PATH},
        )
        self.say(f"{NAME}: apt-get install {len(PACKAGES)} packages in the chroot")
        archives = self.downloads / "apt"
        (archives / "partial").mkdir(parents=True, exist_ok=True)
        self.mount(["--bind", str(archives)], self.root / "var/cache/apt/archives")
        self.chroot("apt-get", "update")
        self.chroot(
            "apt-get",
            "install",
            "-y",
            "--no-install-recommends",
            "-o",
            "Dpkg::Options::=--force-confdef",
            "-o",
            "Dpkg::Options::=--force-confold",
            *PACKAGES,
        )
        self.chroot("systemctl", "enable", *ENABLE_UNITS)
        self.unmount(self.root / "var/cache/apt/archives")

    def install_bootloaders(self) -> None:
        assert self.loop is not None
        self.say(f"{NAME}: GRUB for BIOS (grub-install i386-pc) and UEFI (BOOTX64.EFI)")
        self.chroot("grub-install", "--target=i386-pc", self.loop)
        self.chroot("update-grub")
        cfg = self.root / "boot/grub/grub.cfg"
        text = cfg.read_text()
        # No udev in the chroot: grub-mkconfig names the loop partition. Boot by UUID.
        fixed = re.sub(r"root=/dev/\S+", f"root=UUID={self.root_uuid}", text)
        if f"root=UUID={self.root_uuid}" not in fixed:
            raise HostSetupError(f"{NAME}: grub.cfg has no root= to fix (see {self.log_path})")
        cfg.write_text(fixed)
        self.write("tmp/efi-stub.cfg", EFI_STUB.format(uuid=self.root_uuid))
        self.chroot(
            "grub-mkstandalone",
            "-O",
            "x86_64-efi",
            "--locales=",
            "--fonts=",
            "--themes=",
            "-o",
            "/tmp/BOOTX64.EFI",
            "boot/grub/grub.cfg=/tmp/efi-stub.cfg",
        )
        mtools = {"PATH": os.environ.get("PATH", CHROOT_PATH), "MTOOLS_SKIP_CHECK": "1"}
        esp = self.part(2)
        self.sh(["mmd", "-i", esp, "::/EFI", "::/EFI/BOOT"], env=mtools)
        self.sh(
            ["mcopy", "-i", esp, str(self.root / "tmp/BOOTX64.EFI"), "::/EFI/BOOT/BOOTX64.EFI"],
            env=mtools,
        )

    def finish(self) -> None:
        self.say(f"{NAME}: cleaning up the root (host keys, machine-id, apt cache, cloud-init)")
        self.chroot("passwd", "--lock", "root")
        self.chroot("apt-get", "clean")
        root = self.root
        for key in (root / "etc/ssh").glob("ssh_host_*"):
            key.unlink()
        (root / "etc/machine-id").write_text("")
        with contextlib.suppress(FileNotFoundError):
            (root / "var/lib/dbus/machine-id").unlink()
        for relative in ("usr/sbin/policy-rc.d", "tmp/BOOTX64.EFI", "tmp/efi-stub.cfg"):
            with contextlib.suppress(FileNotFoundError):
                (root / relative).unlink()
        for folder in ("var/lib/cloud", "var/log/journal"):
            shutil.rmtree(root / folder, ignore_errors=True)
        for pattern in ("var/log/*.log", "var/log/apt/*", "root/.bash_history"):
            for path in root.glob(pattern):
                if path.is_file():
                    path.unlink()
        # Freed blocks (deleted .debs, logs) would still hold data: discard them, so that the
        # raw file is sparse there and zstd gets zeros.
        self.sh(["fstrim", str(root)])
        self.sh(["sync"])

    def cleanup(self) -> None:
        """Undo mounts and the loop device, whatever happened (Ctrl-C is ignored meanwhile)."""
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self._kill_chroot_processes()
            # Ours, and whatever debootstrap mounted in the root and left on an interrupt.
            for target in [*reversed(self.mounts), *mounts_under(self.root)]:
                _unmount(target, under=self.root)
            self.mounts.clear()
            if self.loop:
                _detach_loop(self.loop, partitions=self.partitions_added)
                self.loop = None
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def _kill_chroot_processes(self) -> None:
        """A daemon a maintainer script left running inside our chroot (gpg-agent...), or
        the apt-get/dpkg a Ctrl-C hit. Waits (bounded) until they are gone: a dying process
        keeps its files open, so the mounts would be busy and the loop device stay bound."""
        root = str(self.root)
        killed = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                where = os.readlink(proc / "root")
            except OSError:
                continue
            if where == root or where.startswith(root + "/"):
                with contextlib.suppress(OSError):
                    os.kill(int(proc.name), signal.SIGKILL)
                    killed.append(proc)
        with contextlib.suppress(WaitTimeout):
            wait_for(
                lambda: not any(p.exists() for p in killed),
                what=f"{NAME}: processes in the build's chroot to exit",
                timeout=CLEANUP_WAIT_S,
                interval=0.2,
            )

    def store(self) -> tuple[Path, str, int]:
        self.say(f"{NAME}: hashing and compressing (zstd -3)")
        digest = hashlib.sha256()
        with self.disk.open("rb") as fh:
            while chunk := fh.read(4 << 20):
                digest.update(chunk)
        packed = self.tmp / "disk.raw.zst"
        self.sh(["zstd", "-q", "-3", "-T0", str(self.disk), "-o", str(packed)])
        return packed, digest.hexdigest(), IMAGE_BYTES
