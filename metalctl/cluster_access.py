"""Clients for a deployed cluster's APIs, always over mutual TLS with the cluster CA."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import consul
import docker
import docker.errors
import docker.tls
import requests

from metalctl.errors import ClusterAccessError
from metalctl.membership.consul_api import ConsulApi, ConsulEndpoint
from metalctl.paths import ClusterPaths
from metalctl.pki import read_controller_token, read_master_token
from metalctl.spec import ClusterSpec

CONSUL_HTTPS_PORT = 8501
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
    spec: ClusterSpec, paths: ClusterPaths, node: str | None = None, timeout: int = 30
) -> docker.DockerClient:
    target = spec.node(node or spec.spec.swarm.master)
    tls = _tls(paths.docker_client)
    url = f"tcp://{target.address}:{spec.spec.swarm.docker_api_port}"
    try:
        # A fixed API version (Docker 20.10's; every engine since accepts it) avoids the
        # version probe in the constructor, which would run before trust_env is off.
        client = docker.DockerClient(base_url=url, tls=tls, timeout=timeout, version=DOCKER_API)
    except docker.errors.DockerException as exc:
        raise ClusterAccessError(f"cannot reach Docker on {target.name} ({url}): {exc}") from exc
    # requests lets REQUESTS_CA_BUNDLE override a session's CA; we must verify against
    # the cluster CA only.
    client.api.trust_env = False
    return client


def docker_api_at(
    address: str, port: int, client_dir: Path, timeout: float = 15
) -> docker.APIClient:
    """A low-level Docker API client for one node's mutual-TLS endpoint (no network I/O yet)."""
    url = f"tcp://{address}:{port}"
    try:
        api = docker.APIClient(
            base_url=url, tls=_tls(client_dir), timeout=int(timeout), version=DOCKER_API
        )
    except docker.errors.DockerException as exc:
        raise ClusterAccessError(f"cannot reach Docker at {url}: {exc}") from exc
    api.trust_env = False  # only the cluster CA (see docker_for)
    return api


def _tls(client_dir: Path) -> docker.tls.TLSConfig:
    """The admin client certificate, verified against the cluster CA only."""
    return docker.tls.TLSConfig(
        client_cert=(str(client_dir / "cert.pem"), str(client_dir / "key.pem")),
        ca_cert=str(client_dir / "ca.pem"),
        verify=True,
    )


def consul_endpoint(
    spec: ClusterSpec, paths: ClusterPaths, node: str, *, as_controller: bool = False
) -> ConsulEndpoint:
    """The HTTPS API of ``node``'s Consul agent, with the admin client cert and a token
    read from its 0600 file: the management token for operator commands, or with
    ``as_controller`` the membership controller's narrow one."""
    client_dir = paths.docker_client
    token = read_controller_token(paths) if as_controller else read_master_token(paths)
    return ConsulEndpoint(
        url=f"https://{spec.node(node).address}:{CONSUL_HTTPS_PORT}",
        token=token,
        ca=str(client_dir / "ca.pem"),
        cert=(str(client_dir / "cert.pem"), str(client_dir / "key.pem")),
    )


def consul_server_api(
    spec: ClusterSpec, paths: ClusterPaths, exclude: Collection[str] = ()
) -> ConsulApi:
    """The HTTP API of the first Consul server that answers, skipping ``exclude`` (a node
    being removed, retired ones)."""
    errors = []
    for server in spec.spec.consul.servers:
        if server in exclude:
            continue
        api = ConsulApi(consul_endpoint(spec, paths, server))
        try:
            api.agent_node()
            return api
        except ClusterAccessError as exc:
            errors.append(exc.message)
            api.close()
    raise ClusterAccessError(
        "no Consul server answers: " + "; ".join(errors) if errors else "no other Consul server",
        hint="is a Consul quorum up? 'metalctl swarm status'",
    )


def consul_for(spec: ClusterSpec, paths: ClusterPaths, node: str | None = None) -> Any:
    target = spec.node(node or spec.spec.consul.servers[0])
    client_dir = paths.docker_client
    token = read_master_token(paths)
    client = consul.Consul(
        host=target.address,
        port=CONSUL_HTTPS_PORT,
        scheme="https",
        verify=str(client_dir / "ca.pem"),
        cert=(str(client_dir / "cert.pem"), str(client_dir / "key.pem")),
        token=token,
        connections_timeout=10,
    )
    # py-consul forgets the token on some endpoints (agent members, operator raft); a
    # session header sends it on every request.
    client.http.session.headers["X-Consul-Token"] = token
    return client


ACCESS_ERRORS: tuple[type[BaseException], ...] = (
    docker.errors.DockerException,
    requests.RequestException,
    consul.ConsulException,
    OSError,
)
