"""Build the lab node image offline: debootstrap a Debian 12 system and ``docker import`` it.

No registry is reachable on the build machines, so ``docker pull`` is not an option.
The image looks like a freshly installed machine: systemd as PID 1, sshd with host
keys generated at first boot (so every node has its own), python3 for Ansible, and
nothing else the roles are meant to install. The recipe's hash is stored as an image
label so that a changed recipe rebuilds and an unchanged one is reused.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from metalctl.errors import HostSetupError, ProvisionError
from metalctl.provisioners.lab_engine import cli_env

IMAGE = "metalctl/lab-node:bookworm"
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    "systemd,systemd-sysv,dbus,openssh-server,python3,python3-apt,sudo,iproute2,"
    "iputils-ping,ca-certificates,procps,curl,gnupg,iptables,kmod,busybox-static,less"
)

# Files laid over the debootstrapped tree: path -> content.
_OVERLAY: dict[str, str] = {
    # Host keys are removed from the image; each node makes its own on first boot.
    "etc/systemd/system/metalctl-ssh-hostkeys.service": (
        "[Unit]\nDescription=Generate SSH host keys on first boot\n"
        "Before=ssh.service\nConditionPathExists=!/etc/ssh/ssh_host_ed25519_key\n\n"
        "[Service]\nType=oneshot\nExecStart=/usr/bin/ssh-keygen -A\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    ),
    "etc/ssh/sshd_config.d/metalctl.conf": (
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n"
    ),
    "etc/hosts": "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
}
_MASKED_UNITS = (
    "getty.target",
    "console-getty.service",
    "systemd-udevd.service",
    "e2scrub_reap.service",
)


@dataclass(frozen=True)
class Preload:
    """A workload's packages baked into the image (``lab up --preload WORKLOAD``)."""

    workload: str
    packages: tuple[str, ...]


def image_tag(preload: Preload | None = None) -> str:
    return f"{IMAGE}-{preload.workload}" if preload else IMAGE


def _packages(preload: Preload | None) -> str:
    return ",".join([PACKAGES, *preload.packages]) if preload else PACKAGES


def recipe_hash(mirror: str, preload: Preload | None = None) -> str:
    h = hashlib.sha256()
    recipe = f"{SUITE}|{mirror}|{_packages(preload)}|{sorted(_OVERLAY.items())}|{_MASKED_UNITS}"
    h.update(recipe.encode())
    return h.hexdigest()[:16]


def image_is_current(mirror: str = DEFAULT_MIRROR, preload: Preload | None = None) -> bool:
    out = subprocess.run(
        [
            "docker",
            "image",
            "inspect",
            "-f",
            '{{ index .Config.Labels "metalctl.recipe" }}',
            image_tag(preload),
        ],
        capture_output=True,
        text=True,
        env=cli_env(),
    )
    return out.returncode == 0 and out.stdout.strip() == recipe_hash(mirror, preload)


def ensure_image(
    mirror: str = DEFAULT_MIRROR,
    progress: Callable[[str], None] | None = None,
    preload: Preload | None = None,
) -> str:
    """Return the lab image tag, building it first if missing or built from an older recipe."""
    tag = image_tag(preload)
    if image_is_current(mirror, preload):
        return tag
    if shutil.which("debootstrap") is None:
        raise HostSetupError(
            "debootstrap is not installed; it is needed to build the lab node image offline",
            hint="run 'make setup' (or: apt-get install -y debootstrap)",
        )
    with tempfile.TemporaryDirectory(prefix="metalctl-rootfs-") as tmp:
        root = Path(tmp) / "rootfs"
        if progress:
            extra = f", with the packages of workload {preload.workload}" if preload else ""
            progress(f"building lab node image {tag} with debootstrap{extra} (a minute or two)")
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={_packages(preload)}",
                SUITE,
                str(root),
                mirror,
            ],
            "debootstrap",
        )
        customize_rootfs(root, mirror)
        if progress:
            progress(f"importing {tag}")
        import_rootfs(root, recipe_hash(mirror, preload), tag)
    return tag


def customize_rootfs(root: Path, mirror: str) -> None:
    security = mirror.rstrip("/") + "-security"
    (root / "etc/apt/sources.list").write_text(
        f"deb {mirror} {SUITE} main\ndeb {mirror} {SUITE}-updates main\n"
        f"deb {security} {SUITE}-security main\n"
    )
    for rel, content in _OVERLAY.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "metalctl-ssh-hostkeys.service"
    if not link.is_symlink():
        link.symlink_to("/etc/systemd/system/metalctl-ssh-hostkeys.service")
    for unit in _MASKED_UNITS:
        masked = root / "etc/systemd/system" / unit
        if masked.exists() or masked.is_symlink():
            masked.unlink()
        masked.symlink_to("/dev/null")
    # An empty machine-id makes systemd generate a fresh one per container.
    (root / "etc/machine-id").write_text("")
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True)
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True)


def import_rootfs(root: Path, recipe: str, tag: str = IMAGE) -> None:
    tar = subprocess.Popen(
        ["tar", "-C", str(root), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE
    )
    imp = subprocess.run(
        [
            "docker",
            "import",
            "-c",
            'CMD ["/sbin/init"]',
            "-c",
            "ENV container=docker",
            "-c",
            f"LABEL metalctl.recipe={recipe}",
            "-",
            tag,
        ],
        stdin=tar.stdout,
        capture_output=True,
        text=True,
        env=cli_env(),
    )
    if tar.stdout:
        tar.stdout.close()
    tar.wait()
    if tar.returncode != 0 or imp.returncode != 0:
        raise ProvisionError(f"docker import of the lab image failed: {imp.stderr.strip()}")


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise ProvisionError(
            f"{what} failed (exit {proc.returncode}):\n{tail}",
            hint="the lab image needs Debian's archive reachable from this host",
        )
