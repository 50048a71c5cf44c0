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
from tests.cli import metalctl

CHECKOUT = Path(__file__).resolve().parents[2]


@dataclass
class Lab:
    name: str
    home: Path
    env: dict[str, str] = field(repr=False)
    spec: dict = field(repr=False)  # type: ignore[type-arg]
    deploy_seconds: float = 0.0
    # How metalctl is run: the checkout's package, or an installed one (see wheel_install).
    command: tuple[str, ...] = (sys.executable, "-m", "metalctl")
    cwd: Path | None = None

    def metalctl(
        self, *args: str, check: bool = True, timeout: float = 1800
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*self.command, *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.cwd,
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


def swarm_node_rows(home: Path, cluster: str) -> list[list[str]]:
    """`docker node ls` by the real docker CLI under `metalctl swarm env` (mutual TLS):
    sorted [hostname, status] rows."""
    env = dict(os.environ)
    listed = metalctl("swarm", "env", "--cluster", cluster, home=home)
    for line in listed.stdout.splitlines():
        if line.startswith("export "):
            key, value = shlex.split(line[len("export ") :])[0].split("=", 1)
            env[key] = value
    assert env.get("DOCKER_TLS_VERIFY") == "1", listed.stdout + listed.stderr
    nodes = subprocess.run(
        ["docker", "node", "ls", "--format", "{{.Hostname}} {{.Status}}"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert nodes.returncode == 0, nodes.stderr
    return sorted(line.split() for line in nodes.stdout.splitlines())


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
def deployed(
    tmp: Path,
    nodes: int = 4,
    managers: int = 3,
    installed: WheelInstall | None = None,
    lab_flags: tuple[str, ...] = (),
) -> Iterator[Lab]:
    """A lab of ``nodes`` containers, deployed; removed afterwards even on failure. With
    ``installed``, every metalctl command is that wheel install's, run like a user of
    `pipx install` would: from a folder outside the checkout, nothing of it on the paths."""
    if shutil.which("docker") is None or os.geteuid() != 0:
        pytest.fail("e2e tests need root and Docker: run them with 'make test' (it runs setup)")
    home = make_home(tmp)
    name = f"e2e{secrets.token_hex(2)}"
    if installed:
        env = clean_env(home)
        lab = Lab(name, home, env, {}, command=(str(installed.metalctl),), cwd=installed.work)
    else:
        env = dict(os.environ, METALCTL_HOME=str(home))
        lab = Lab(name, home, env, {})
    try:
        lab.metalctl(
            "lab", "up", "--name", name, "--nodes", str(nodes), "--managers", str(managers),
            *lab_flags,
        )  # fmt: skip
        started = time.monotonic()
        out = lab.metalctl("deploy", "swarm", "--cluster", name, "-q", "-o", "json").stdout
        lab.deploy_seconds = time.monotonic() - started
        lab.spec = {
            "nodes": json.loads(lab.metalctl("nodes", "list", "-c", name, "-o", "json").stdout),
            "deploy": json.loads(out),
        }
        yield lab
    finally:
        # The checkout's metalctl: the lab must go even when an installed one is broken.
        subprocess.run(
            [sys.executable, "-m", "metalctl", "lab", "down", "--name", name],
            env=dict(os.environ, METALCTL_HOME=str(home), PYTHONPATH=str(CHECKOUT)),
            capture_output=True,
        )


@dataclass(frozen=True)
class WheelInstall:
    venv: Path
    work: Path  # a working folder outside the checkout
    seconds: float  # wheel build + clean venv install

    @property
    def metalctl(self) -> Path:
        return self.venv / "bin" / "metalctl"


def clean_env(home: Path) -> dict[str, str]:
    """The caller's environment without anything that could lead metalctl back to the
    checkout: no PYTHONPATH or METALCTL_SHARE, and no PATH entry holding a metalctl or an
    ansible-playbook (the dev venv's bin/), so the installed runner must find its own."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "METALCTL_SHARE", "VIRTUAL_ENV", "PYTHONHOME")
    }
    path = [
        entry
        for entry in env.get("PATH", "/usr/bin:/bin").split(os.pathsep)
        if entry
        and not any(Path(entry, tool).exists() for tool in ("metalctl", "ansible-playbook"))
    ]
    env["PATH"] = os.pathsep.join(path)
    env["METALCTL_HOME"] = str(home)
    return env


def _ok(*args: str | Path, cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=1800
    )
    assert proc.returncode == 0, (
        f"{' '.join(proc.args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    )
    return proc.stdout


@pytest.fixture(scope="session")
def wheel_install(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WheelInstall]:
    """metalctl built as a wheel from this checkout and installed, with its dependencies,
    into a clean venv outside it (what `pipx install .` does)."""
    started = time.monotonic()
    tmp = tmp_path_factory.mktemp("wheel")
    wheels, venv, work = tmp / "wheels", tmp / "venv", tmp / "work"
    work.mkdir()
    env = clean_env(tmp / "unused-home")
    # pip wheel, not python -m build: no extra dependency. Build isolation fetches
    # setuptools (from the pip cache after the first run), so the build hook really runs.
    _ok(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, CHECKOUT,
        cwd=work, env=env)  # fmt: skip
    (wheel,) = wheels.glob("metalctl-*.whl")
    # venv builds from the base interpreter: nothing of the dev venv is visible in it.
    _ok(sys.executable, "-m", "venv", venv, cwd=work, env=env)
    _ok(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel, cwd=work, env=env)
    yield WheelInstall(venv, work, time.monotonic() - started)
    shutil.rmtree(venv, ignore_errors=True)  # ~600 MB


@pytest.fixture(scope="session")
def deployed_lab(
    tmp_path_factory: pytest.TempPathFactory, wheel_install: WheelInstall
) -> Iterator[Lab]:
    """The session's 4-node lab, made and deployed by the wheel-installed metalctl: every
    test on it also proves that an installed metalctl (not the checkout) can deploy."""
    with deployed(tmp_path_factory.mktemp("e2e"), installed=wheel_install) as lab:
        yield lab
