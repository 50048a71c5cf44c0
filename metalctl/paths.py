"""Where metalctl keeps its state on the admin host.

$METALCTL_HOME/                      (default: $XDG_DATA_HOME/metalctl or ~/.local/share/metalctl)
  metalctl.db                        SQLite inventory
  ssh/id_ed25519[.pub]               metalctl's SSH key (0600)
  artifacts/consul/VERSION/consul    cached binaries (+ .sha256)
  clusters/NAME/cluster.yaml         the cluster's spec
  clusters/NAME/pki/                 CA and per-node certs (keys 0600)
  clusters/NAME/docker-client/       ca.pem cert.pem key.pem: DOCKER_CERT_PATH
  clusters/NAME/secrets/             gossip key, Consul tokens (0600)
  clusters/NAME/runs/RUN/            ansible-runner input and artifacts per run
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from metalctl.errors import HostSetupError, UsageError

CLUSTER_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def metalctl_home() -> Path:
    env = os.environ.get("METALCTL_HOME")
    try:
        if env:
            return Path(env).expanduser().resolve()
        data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    except RuntimeError as exc:  # "~nobody/x", a symlink loop, no $HOME and no passwd entry
        raise HostSetupError(
            f"cannot find metalctl's home (METALCTL_HOME={env or ''!r}): {exc}",
            hint="set METALCTL_HOME to an existing, writable directory",
        ) from exc
    return Path(data) / "metalctl"


def project_root() -> Path:
    """The folder holding roles/ and workloads/.

    $METALCTL_SHARE if set; else the copy a wheel ships in metalctl/share (setup.py puts it
    there at build time, as the two folders live at the top of the source tree); else the
    source tree itself, for an editable install or a checkout on PYTHONPATH.
    """
    env = os.environ.get("METALCTL_SHARE")
    if env:
        return Path(env)
    package = Path(__file__).resolve().parent
    shipped = package / "share"
    # Checked for workloads/, not just the folder: an empty leftover share/ must not hide
    # the source tree.
    if (shipped / "workloads").is_dir():
        return shipped
    return package.parent


def ensure_private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_private(path: Path, data: str | bytes) -> None:
    """Write a secret atomically with mode 0600 from the first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def write_public(path: Path, data: str) -> None:
    """Write a non-secret file atomically (a crash never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(data)
    os.replace(tmp, path)


@dataclass(frozen=True)
class ClusterPaths:
    root: Path

    @classmethod
    def for_cluster(cls, name: str, home: Path | None = None) -> ClusterPaths:
        # The name becomes a folder that 'lab down' deletes: '../x' or '/' must never get
        # here, whichever command passed it on.
        if not CLUSTER_NAME.fullmatch(name):
            raise UsageError(
                f"{name!r} is not a valid cluster name",
                hint="a cluster name is a lowercase DNS label: a-z, 0-9 and '-', at most 63",
            )
        return cls((home or metalctl_home()) / "clusters" / name)

    @property
    def spec(self) -> Path:
        return self.root / "cluster.yaml"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def docker_client(self) -> Path:
        return self.root / "docker-client"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"
