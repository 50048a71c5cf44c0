"""metalctl's own SSH key (ed25519), made once per admin host and kept 0600."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from metalctl.paths import ensure_private_dir, metalctl_home, write_private, write_public


def ssh_key_path(home: Path | None = None) -> Path:
    return (home or metalctl_home()) / "ssh" / "id_ed25519"


def ensure_ssh_key(home: Path | None = None) -> Path:
    """Return the private key path, creating the key pair on first use."""
    key_path = ssh_key_path(home)
    pub_path = key_path.with_suffix(".pub")
    if key_path.exists() and pub_path.exists():
        return key_path
    ensure_private_dir(key_path.parent)
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    write_private(key_path, private)
    write_public(pub_path, public.decode() + " metalctl\n")
    return key_path


def public_key(home: Path | None = None) -> str:
    return ensure_ssh_key(home).with_suffix(".pub").read_text()


def ssh_argv(
    address: str, *command: str, user: str = "root", port: int = 22, key: Path | None = None
) -> list[str]:
    """ssh with metalctl's key to a freshly installed machine: batch mode, and no host key
    pinning (a reinstalled machine has new host keys; provisioning trusts the network)."""
    return [
        "ssh", "-i", str(key or ensure_ssh_key()), "-p", str(port),
        "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
        "-o", "ConnectTimeout=10",
        f"{user}@{address}", *command,
    ]  # fmt: skip
