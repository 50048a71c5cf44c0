"""Fixtures for e2e tests: a real lab of container nodes, deployed with the real roles.

Needs root, a running dockerd, debootstrap and the cached Consul binary: `make setup`
provides all of it (and `make test` runs setup first). Everything created is removed
at the end, even when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from metalctl.paths import metalctl_home


@dataclass
class Lab:
    name: str
    home: Path
    env: dict[str, str] = field(repr=False)
    spec: dict = field(repr=False)  # type: ignore[type-arg]
    deploy_seconds: float = 0.0

    def metalctl(
        self, *args: str, check: bool = True, timeout: float = 1800
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "metalctl", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"metalctl {' '.join(args)} failed ({proc.returncode}):\n"
                f"{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def node_names(self) -> list[str]:
        return [n["name"] for n in self.spec["nodes"]]

    def address(self, node: str) -> str:
        return next(n["address"] for n in self.spec["nodes"] if n["name"] == node)

    def exec(self, node: str, *cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "exec", node, *cmd], capture_output=True, text=True, timeout=120
        )

    def docker_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The real docker CLI with the env printed by `metalctl swarm env`."""
        env = dict(os.environ)
        for line in self.metalctl("swarm", "env", "--cluster", self.name).stdout.splitlines():
            if line.startswith("export "):
                key, value = shlex.split(line[len("export ") :])[0].split("=", 1)
                env[key] = value
        return subprocess.run(
            ["docker", *args], capture_output=True, text=True, env=env, timeout=300
        )

    def consul(
        self, path: str, token: str | None, method: str = "GET", data: str | None = None
    ) -> requests.Response:
        """Consul's HTTPS API on the first node, with the admin client cert and ``token``."""
        client = self.home / "clusters" / self.name / "docker-client"
        return requests.request(
            method,
            f"https://{self.address(self.node_names()[0])}:8501{path}",
            headers={"X-Consul-Token": token} if token else {},
            data=data,
            verify=str(client / "ca.pem"),
            cert=(str(client / "cert.pem"), str(client / "key.pem")),
            timeout=10,
        )

    def node_token(self, node: str) -> str:
        tokens = self.home / "clusters" / self.name / "secrets" / "consul-tokens.json"
        return str(json.loads(tokens.read_text())[node]["secret"])

    def master_token(self) -> str:
        return (
            (self.home / "clusters" / self.name / "secrets" / "consul-master.token")
            .read_text()
            .strip()
        )


def lab_objects(name: str) -> list[str]:
    """Every container, volume and network carrying the lab's label."""
    found: list[str] = []
    for kind in ("container", "volume", "network"):
        args = ["docker", kind, "ls", "-q", "--filter", f"label=metalctl.lab={name}"]
        if kind == "container":
            args = ["docker", "ps", "-aq", "--filter", f"label=metalctl.lab={name}"]
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()
        found += [f"{kind} {o}" for o in out]
    return found


def make_home(tmp: Path) -> Path:
    """A private METALCTL_HOME that shares the host's artifact cache (Consul binary)."""
    home = tmp / "home"
    home.mkdir(parents=True)
    cache = metalctl_home() / "artifacts"
    if not cache.exists():
        pytest.fail(f"no artifact cache at {cache}: run 'make setup' first")
    (home / "artifacts").symlink_to(cache)
    return home


@contextlib.contextmanager
def deployed(tmp: Path, nodes: int = 4, managers: int = 3) -> Iterator[Lab]:
    """A lab of ``nodes`` containers, deployed; removed afterwards even on failure."""
    if shutil.which("docker") is None or os.geteuid() != 0:
        pytest.fail("e2e tests need root and Docker: run them with 'make test' (it runs setup)")
    home = make_home(tmp)
    env = dict(os.environ, METALCTL_HOME=str(home))
    name = f"e2e{secrets.token_hex(2)}"
    lab = Lab(name, home, env, {})
    try:
        lab.metalctl(
            "lab", "up", "--name", name, "--nodes", str(nodes), "--managers", str(managers)
        )
        started = time.monotonic()
        out = lab.metalctl("deploy", "swarm", "--cluster", name, "-q", "-o", "json").stdout
        lab.deploy_seconds = time.monotonic() - started
        lab.spec = {
            "nodes": json.loads(lab.metalctl("nodes", "list", "-c", name, "-o", "json").stdout),
            "deploy": json.loads(out),
        }
        yield lab
    finally:
        subprocess.run(
            [sys.executable, "-m", "metalctl", "lab", "down", "--name", name],
            env=env,
            capture_output=True,
        )


@pytest.fixture(scope="session")
def deployed_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with deployed(tmp_path_factory.mktemp("e2e")) as lab:
        yield lab
