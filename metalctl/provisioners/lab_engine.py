"""Which Docker engine the lab uses: always the local one, never a deployed cluster's.

`eval "$(metalctl swarm env ...)"` points DOCKER_HOST at the swarm master; a lab command
run in that shell must still create and remove its containers on this host's engine. So
the lab ignores DOCKER_HOST, DOCKER_CONTEXT and the TLS variables, and uses the local
socket, or the engine the user names explicitly in METALCTL_LAB_DOCKER_HOST.
"""

from __future__ import annotations

import os

import docker
import docker.errors

from metalctl.errors import HostSetupError

LOCAL_ENGINE = "unix:///var/run/docker.sock"
ENGINE_VARIABLE = "METALCTL_LAB_DOCKER_HOST"
# Variables through which a shell (or `swarm env`) points docker at another engine.
_DOCKER_TARGETING = ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")


def engine_url() -> str:
    return os.environ.get(ENGINE_VARIABLE) or LOCAL_ENGINE


def cli_env() -> dict[str, str]:
    """The environment for a `docker` CLI subprocess that must reach the lab's engine."""
    env = {k: v for k, v in os.environ.items() if k not in _DOCKER_TARGETING}
    env["DOCKER_HOST"] = engine_url()
    return env


def engine_client() -> docker.DockerClient:
    url = engine_url()
    try:
        client = docker.DockerClient(base_url=url, timeout=120)
        client.ping()
    except docker.errors.DockerException as exc:
        where = "the local Docker engine" if url == LOCAL_ENGINE else f"the Docker engine {url}"
        raise HostSetupError(
            f"cannot reach {where} ({url}) for the lab: {exc}",
            hint="run 'make setup' (installs docker.io and starts dockerd); the lab ignores "
            f"DOCKER_HOST and uses {ENGINE_VARIABLE} only when you set it",
        ) from exc
    return client
