"""Docker API clients for a deployed cluster, always over mutual TLS with the cluster CA."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import docker.tls
import requests

from metalctl.errors import ClusterAccessError
from metalctl.paths import ClusterPaths
from metalctl.spec import ClusterSpec

DOCKER_API = "1.41"


@dataclass(frozen=True)
class DockerEnv:
    host: str
    cert_path: str

    def exports(self) -> list[tuple[str, str]]:
        return [
            ("DOCKER_HOST", self.host),
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", self.cert_path),
        ]


def docker_env(spec: ClusterSpec, paths: ClusterPaths) -> DockerEnv:
    master = spec.node(spec.spec.swarm.master)
    return DockerEnv(
        f"tcp://{master.address}:{spec.spec.swarm.docker_api_port}", str(paths.docker_client)
    )


def docker_for(
    spec: ClusterSpec, paths: ClusterPaths, node: str | None = None, timeout: float = 30
) -> docker.APIClient:
    """The Docker API of a node of the cluster (default: the master)."""
    target = spec.node(node or spec.spec.swarm.master)
    return docker_api_at(
        target.address, spec.spec.swarm.docker_api_port, paths.docker_client, timeout
    )


def docker_api_at(
    address: str, port: int, client_dir: Path, timeout: float = 15
) -> docker.APIClient:
    """The one factory for a node's mutual-TLS Docker API (no network I/O yet)."""
    url = f"tcp://{address}:{port}"
    try:
        # A fixed API version (Docker 20.10's; every engine since accepts it) avoids the
        # version probe in the constructor, which would run before trust_env is off.
        api = docker.APIClient(
            base_url=url, tls=_tls(client_dir), timeout=int(timeout), version=DOCKER_API
        )
    except docker.errors.DockerException as exc:
        raise ClusterAccessError(f"cannot reach Docker at {url}: {exc}") from exc
    # requests lets REQUESTS_CA_BUNDLE override a session's CA; we must verify against
    # the cluster CA only.
    api.trust_env = False
    return api


def _tls(client_dir: Path) -> docker.tls.TLSConfig:
    """The admin client certificate, verified against the cluster CA only."""
    return docker.tls.TLSConfig(
        client_cert=(str(client_dir / "cert.pem"), str(client_dir / "key.pem")),
        ca_cert=str(client_dir / "ca.pem"),
        verify=True,
    )


ACCESS_ERRORS: tuple[type[BaseException], ...] = (
    docker.errors.DockerException,
    requests.RequestException,
    OSError,
)
