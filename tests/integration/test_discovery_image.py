"""The discovery image booted in QEMU (TCG) against the real boot service on 127.0.0.1.

The image is built (or taken from the cache, $METALCTL_CACHE or /var/cache/metalctl) once
per session. Each VM gets QEMU user-mode networking with ``restrict=on``: the guest can
reach nothing but ``10.0.2.100:80``, which QEMU forwards (``guestfwd``, one ``busybox nc``
per connection) to the boot service on the host's loopback. The kernel command line is the
one the boot service's own iPXE script carries, so the script and the agent are tested
against each other. Discovery runs under SeaBIOS and under OVMF (UEFI, direct kernel boot).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from metalctl import deployments
from metalctl.boot import BootConfig, BootService, tokens
from metalctl.deployments import DeploymentJob, ImageRef
from metalctl.images.discovery import DiscoveryImage, build_discovery, discovery_dir, find_discovery
from metalctl.store import Store
from tests.integration.boot_support import facts

GUEST_URL = "http://10.0.2.100:80"  # what the guest sees; QEMU forwards it to 127.0.0.1
VM_SECONDS = 240.0  # a TCG boot to the POST takes ~20 s; a busy host is slower
MAC = "52:54:00:d1:5c:01"
SERIAL = 'MC-"SER"\\0042'  # a quote and a backslash: the agent's JSON must escape them
UUID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"


def _missing() -> list[str]:
    tools = ("qemu-system-x86_64", "busybox", "cpio", "zstd", "sfdisk", "mkfs.ext4", "debugfs")
    return [t for t in tools if shutil.which(t) is None and not Path("/usr/sbin", t).exists()]


pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (builds the initramfs)"),
    pytest.mark.skipif(bool(_missing()), reason=f"needs {', '.join(_missing())} (make setup)"),
]


@pytest.fixture(scope="module")
def image() -> DiscoveryImage:
    said: list[str] = []
    return build_discovery(said.append)


@dataclass
class Disk:
    path: Path
    size: int
    serial: str


@dataclass
class Boot:
    service: BootService
    store_path: Path
    tmp: Path

    def store(self) -> Store:
        return Store(self.store_path)

    def ipxe_script(self, mac: str) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.service.port, timeout=10)
        try:
            conn.request("GET", f"/boot.ipxe?mac={mac}")
            reply = conn.getresponse()
            body = reply.read().decode()
        finally:
            conn.close()
        assert reply.status == 200, body
        return body


@pytest.fixture
def boot(tmp_path: Path) -> Iterator[Boot]:
    files = tmp_path / "files"
    (files / "discovery").mkdir(parents=True)
    config = BootConfig(base_url=GUEST_URL)
    with BootService(tmp_path / "metalctl.db", files_dir=files, config=config) as service:
        yield Boot(service, tmp_path / "metalctl.db", tmp_path)


def kernel_args(script: str) -> str:
    """The kernel's arguments from an iPXE script (what iPXE would pass)."""
    found = re.search(r"^kernel \S+ initrd=initrd\.img (.*)$", script, re.MULTILINE)
    assert found, script
    return found.group(1)


def blank_disk(tmp: Path, name: str, size: int, serial: str) -> Disk:
    path = tmp / f"{name}.raw"
    with open(path, "wb") as f:
        f.truncate(size)
    return Disk(path, size, serial)


@dataclass
class Run:
    returncode: int
    seconds: float
    console: str


OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


def run_vm(
    image: DiscoveryImage,
    boot: Boot,
    args: str,
    disks: list[Disk],
    *,
    smbios: bool = True,
    firmware: str = "bios",
) -> Run:
    """Boot the image until the guest powers off or reboots (-no-reboot: QEMU exits),
    bounded by VM_SECONDS; QEMU is killed whatever happens."""
    console = boot.tmp / "console.log"
    forward = f"cmd:busybox nc 127.0.0.1 {boot.service.port}"
    argv = [
        "qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-smp", "1",
        "-display", "none", "-monitor", "none", "-no-reboot", "-nodefaults",
        "-serial", f"file:{console}",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", args,
        "-netdev", f"user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:80-{forward}",
        "-device", f"virtio-net-pci,netdev=n0,mac={MAC}",
    ]  # fmt: skip
    if smbios:
        argv += ["-smbios", f"type=1,serial={SERIAL},uuid={UUID}"]
    if firmware == "uefi":  # OVMF, with a copy of the variable store of this VM's own
        shutil.copyfile(OVMF_VARS, boot.tmp / "OVMF_VARS.fd")
        argv += [
            "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,file={boot.tmp / 'OVMF_VARS.fd'}",
        ]  # fmt: skip
    for i, disk in enumerate(disks):
        argv += [
            "-drive", f"file={disk.path},if=none,id=d{i},format=raw",
            "-device", f"virtio-blk-pci,drive=d{i},serial={disk.serial}",
        ]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        out, _ = proc.communicate(timeout=VM_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=10)
        text = console.read_text(errors="replace") if console.exists() else ""
        pytest.fail(f"the VM did not stop by itself in {VM_SECONDS:g} s; console:\n{text[-3000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = console.read_text(errors="replace")
    assert proc.returncode == 0, f"qemu: {out.decode(errors='replace')}\n{text[-3000:]}"
    return Run(proc.returncode, time.monotonic() - started, text)


def agent_lines(console: str) -> str:
    return "\n".join(line for line in console.splitlines() if "metalctl-agent:" in line)


def test_the_image_is_cached_by_recipe(image: DiscoveryImage) -> None:
    said: list[str] = []
    again = build_discovery(said.append)
    assert again == image == find_discovery()
    assert any("is cached" in line for line in said), said
    assert image.kernel.parent == discovery_dir() / image.recipe
    # This process's build left nothing half-made beside the finished image.
    ours = f".build-{image.recipe}-{os.getpid()}-"
    assert not [p for p in discovery_dir().iterdir() if p.name.startswith(ours)]


# --- discover ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "firmware",
    [
        "bios",
        pytest.param(
            "uefi",
            marks=pytest.mark.skipif(not OVMF_CODE.exists(), reason="needs ovmf (make setup)"),
        ),
    ],
)
def test_discovery_boot_records_the_machine(
    image: DiscoveryImage, boot: Boot, firmware: str
) -> None:
    args = kernel_args(boot.ipxe_script(MAC))
    assert "metalctl.mode=discover" in args and f"metalctl.url={GUEST_URL}" in args
    disks = [
        blank_disk(boot.tmp, "one", 1 << 30, "DISK-ONE"),
        blank_disk(boot.tmp, "two", 256 << 20, "DISK-TWO"),
    ]

    run = run_vm(image, boot, args, disks, firmware=firmware)

    assert "metalctl-agent: discovered" in run.console, agent_lines(run.console)
    assert "metalctl-agent: powering off" in run.console
    [machine] = boot.store().list_machines()
    assert machine.state == "discovered" and machine.primary_mac == MAC
    assert machine.macs == (MAC,) and machine.smbios_uuid == UUID
    found = machine.facts
    assert found["boot_mode"] == firmware
    assert found["memory_bytes"] == 512 << 20
    assert found["cpu"]["count"] == 1 and found["cpu"]["model"]
    assert [n["mac"] for n in found["nics"]] == [MAC] and found["nics"][0]["link"] is True
    assert [(d["name"], d["size_bytes"], d["serial"]) for d in found["disks"]] == [
        ("vda", 1 << 30, "DISK-ONE"),
        ("vdb", 256 << 20, "DISK-TWO"),
    ]
    assert found["dmi"]["serial"] == SERIAL and found["dmi"]["uuid"] == UUID
    assert found["dmi"]["vendor"] == "QEMU"


def test_refused_token_stores_nothing_and_the_machine_powers_off(
    image: DiscoveryImage, boot: Boot
) -> None:
    args = kernel_args(boot.ipxe_script(MAC))
    # Swap the script's token for one that expired half an hour ago.
    expired = tokens.issue(boot.store(), MAC, ttl=60, now=time.time() - 1800)
    args = re.sub(r"metalctl\.token=\S+", f"metalctl.token={expired.token}", args)

    run = run_vm(image, boot, args, [blank_disk(boot.tmp, "one", 64 << 20, "D1")])

    assert boot.store().list_machines() == []
    lines = agent_lines(run.console)
    assert "refused" in lines and "403" in lines, lines
    # The server's reason reaches the console, so that an operator sees why.
    assert "expired" in lines, lines
    assert "metalctl-agent: powering off" in run.console


# --- deploy -------------------------------------------------------------------------------

OS_RELEASE = 'PRETTY_NAME="metalctl test OS"\nID=debian\n'
SEED = {
    "meta-data": "instance-id: i-test\nlocal-hostname: node-7\n",
    "user-data": "#cloud-config\nhostname: node-7\n",
    "network-config": "version: 2\n",
}
IMAGE_BYTES = 64 << 20
PART_START = 1 << 20  # sfdisk's default alignment: the partition starts at 1 MiB


@dataclass
class OsImage:
    raw: bytes
    sha256: str
    part_end: int


@pytest.fixture(scope="module")
def os_image(tmp_path_factory: pytest.TempPathFactory) -> OsImage:
    """64 MiB: a GPT with one ext4 partition that holds /etc/os-release (no loop devices:
    the file system is made in a file of its own and copied into the partition)."""
    tmp = tmp_path_factory.mktemp("osimage")
    raw = tmp / "os.raw"
    with open(raw, "wb") as f:
        f.truncate(IMAGE_BYTES)
    subprocess.run(
        ["sfdisk", "--quiet", str(raw)],
        input="label: gpt\n,,L\n",
        text=True,
        check=True,
        timeout=30,
    )
    dump = subprocess.run(
        ["sfdisk", "--dump", str(raw)], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    found = re.search(r"start=\s*(\d+), size=\s*(\d+)", dump)
    assert found, dump
    start, sectors = int(found.group(1)) * 512, int(found.group(2)) * 512
    assert start == PART_START
    tree = tmp / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "os-release").write_text(OS_RELEASE)
    fs = tmp / "root.ext4"
    with open(fs, "wb") as f:
        f.truncate(sectors)
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(tree), str(fs)],
        check=True,
        timeout=60,
        capture_output=True,
    )
    data = bytearray(raw.read_bytes())
    data[start : start + sectors] = fs.read_bytes()
    shutil.rmtree(tmp)
    return OsImage(bytes(data), hashlib.sha256(data).hexdigest(), start + sectors)


def provisioning(boot: Boot, stored: Path, image: OsImage, disk: Disk, compression: str) -> str:
    """A discovered machine with a deployment of ``stored`` to ``disk``; its id."""
    store = boot.store()
    doc = facts(MAC, uuid=UUID)
    doc["disks"] = [{"name": "vda", "size_bytes": disk.size, "serial": disk.serial}]
    machine = store.upsert_discovered(doc, boot_mac=MAC)
    job = DeploymentJob(
        node="node-7",
        disk="vda",
        disk_size=disk.size,
        disk_serial=disk.serial,
        image=ImageRef(
            name="test-os",
            sha256=image.sha256,
            size=len(image.raw),
            path=str(stored),
            compression=compression,
            stored_size=stored.stat().st_size,
        ),
        seed=dict(SEED),
    )
    deployments.start(store, machine.id, "c1", job, "deploy test")
    return machine.id


def debugfs(fs: Path, request: str) -> str:
    done = subprocess.run(
        ["debugfs", "-R", request, str(fs)], capture_output=True, text=True, timeout=30
    )
    return done.stdout


def test_deploy_writes_verifies_and_seeds_the_disk(
    image: DiscoveryImage, boot: Boot, os_image: OsImage
) -> None:
    stored = boot.tmp / "os.raw.zst"
    subprocess.run(
        ["zstd", "-q", "-3", "-o", str(stored)],
        input=os_image.raw,
        check=True,
        timeout=60,
    )
    disk = blank_disk(boot.tmp, "target", 256 << 20, "TARGET-1")
    machine_id = provisioning(boot, stored, os_image, disk, "zstd")
    args = kernel_args(boot.ipxe_script(MAC))
    assert "metalctl.mode=deploy" in args

    run = run_vm(image, boot, args, [disk])

    lines = agent_lines(run.console)
    assert "metalctl-agent: rebooting" in run.console, lines
    store = boot.store()
    assert store.get_machine(machine_id).state == "provisioned", lines
    done = deployments.get(store, machine_id)
    assert done is not None and done.status == "ok"
    assert done.result["readback_sha256"] == os_image.sha256
    assert done.result["bytes"] == str(IMAGE_BYTES)
    # The disk holds the image: byte for byte outside the root file system (the GPT,
    # its backup copy at the image's end), and the seed inside it.
    written = disk.path.read_bytes()
    assert written[:PART_START] == os_image.raw[:PART_START]
    assert written[os_image.part_end : IMAGE_BYTES] == os_image.raw[os_image.part_end :]
    assert written[IMAGE_BYTES:] == bytes(len(written) - IMAGE_BYTES)
    fs = boot.tmp / "root.ext4"
    fs.write_bytes(written[PART_START : os_image.part_end])
    fsck = subprocess.run(["e2fsck", "-fn", str(fs)], capture_output=True, text=True, timeout=60)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert debugfs(fs, "cat /etc/os-release") == OS_RELEASE
    for name, content in SEED.items():
        path = f"/var/lib/cloud/seed/nocloud/{name}"
        assert debugfs(fs, f"cat {path}") == content
        assert re.search(r"Mode:\s+0600", debugfs(fs, f"stat {path}")), name


def test_deploy_of_a_corrupted_image_fails_and_wipes_the_disk(
    image: DiscoveryImage, boot: Boot, os_image: OsImage
) -> None:
    flipped = bytearray(os_image.raw)
    flipped[PART_START + 5000] ^= 0x01  # one bit, the image's sha256 is still the good one
    stored = boot.tmp / "os.raw"
    stored.write_bytes(flipped)
    disk = blank_disk(boot.tmp, "target", 256 << 20, "TARGET-1")
    with open(disk.path, "r+b") as f:  # whatever was on the disk before, at both ends
        f.write(b"\xaa" * (1 << 20))
        f.seek(disk.size - (1 << 20))
        f.write(b"\xaa" * (1 << 20))
    machine_id = provisioning(boot, stored, os_image, disk, "none")

    run = run_vm(image, boot, kernel_args(boot.ipxe_script(MAC)), [disk])

    lines = agent_lines(run.console)
    assert "metalctl-agent: powering off" in run.console, lines
    assert "metalctl-agent: rebooting" not in run.console, lines
    store = boot.store()
    assert store.get_machine(machine_id).state == "failed"
    done = deployments.get(store, machine_id)
    assert done is not None and done.status == "failed"
    got = hashlib.sha256(flipped).hexdigest()
    assert done.message == f"sha256 mismatch: image {got}, expected {os_image.sha256}"
    written = disk.path.read_bytes()
    mib = 1 << 20
    assert written[:mib] == bytes(mib), "the partition table survived"
    assert written[-mib:] == bytes(mib), "the disk's last MiB (backup GPT) survived"
    # Between the two, the bytes written stay: only the ends are wiped.
    assert written[PART_START + 5000] == flipped[PART_START + 5000]
