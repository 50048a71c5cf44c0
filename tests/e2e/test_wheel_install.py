"""A wheel installed into a clean venv deploys a lab from any directory (like `pipx install .`).

The wheel is built from this checkout and installed with its dependencies into a fresh venv
outside it; metalctl then runs as <venv>/bin/metalctl from an unrelated working directory,
with neither PYTHONPATH nor METALCTL_SHARE and without the venv's bin/ (nor any other
Ansible) on PATH, so the roles, the workload and ansible-playbook can only come from the
installed package and its venv.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import lab_objects, make_home

pytestmark = pytest.mark.e2e

CHECKOUT = Path(__file__).resolve().parents[2]


def clean_env(home: Path) -> dict[str, str]:
    """The caller's environment without anything that could lead metalctl back to the checkout.

    PATH entries holding a metalctl or ansible-playbook (the dev venv's bin/) are dropped, so
    the deploy proves the runner finds the wheel venv's Ansible by itself.
    """
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


def run(
    *args: str | Path, cwd: Path, env: dict[str, str], timeout: float = 1800
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def ok(*args: str | Path, cwd: Path, env: dict[str, str]) -> str:
    proc = run(*args, cwd=cwd, env=env)
    assert proc.returncode == 0, (
        f"{' '.join(proc.args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    )
    return proc.stdout


def test_wheel_in_a_clean_venv_deploys_a_lab(tmp_path: Path) -> None:
    if shutil.which("docker") is None or os.geteuid() != 0:
        pytest.fail("e2e tests need root and Docker: run them with 'make test' (it runs setup)")
    started = time.monotonic()
    wheels, venv, work = tmp_path / "wheels", tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    assert not work.resolve().is_relative_to(CHECKOUT)  # the point is: not the checkout
    env = clean_env(make_home(tmp_path))
    assert shutil.which("ansible-playbook", path=env["PATH"]) is None

    # pip wheel, not python -m build: no extra dependency. Build isolation fetches setuptools
    # (from the pip cache after the first run), so the build hook in setup.py really runs.
    pip = (sys.executable, "-m", "pip")
    ok(*pip, "wheel", "-q", "--no-deps", "-w", wheels, CHECKOUT, cwd=work, env=env)
    (wheel,) = wheels.glob("metalctl-*.whl")
    # sys.executable is the dev venv's python; venv builds the new one from the base
    # interpreter, so nothing of the dev venv is visible in it.
    ok(sys.executable, "-m", "venv", venv, cwd=work, env=env)
    python = venv / "bin" / "python"
    ok(python, "-m", "pip", "install", "-q", wheel, cwd=work, env=env)
    install_seconds = time.monotonic() - started

    share = ok(
        python, "-c", "import metalctl.paths as p; print(p.project_root())", cwd=work, env=env
    )
    assert Path(share.strip()).is_relative_to(venv), share  # the wheel's roles, not the checkout's

    name = f"e2ew{secrets.token_hex(2)}"
    metalctl = venv / "bin" / "metalctl"
    deploy_started = time.monotonic()
    try:
        ok(
            metalctl,
            *("lab", "up", "--name", name, "--nodes", "1", "--managers", "1"),
            cwd=work,
            env=env,
        )
        deploy = ok(
            metalctl, *("deploy", "swarm", "--cluster", name, "-q", "-o", "json"), cwd=work, env=env
        )
        assert json.loads(deploy)
        nodes = ok(metalctl, *("nodes", "list", "-c", name, "-o", "json"), cwd=work, env=env)
        assert [n["state"] for n in json.loads(nodes)] == ["active"], nodes
    finally:
        down = run(metalctl, "lab", "down", "--name", name, cwd=work, env=env, timeout=600)
        if down.returncode != 0:
            # A broken install must not leave containers behind: the checkout's metalctl
            # knows the lab through the same home.
            checkout = (sys.executable, "-m", "metalctl")
            env_checkout = dict(env, PYTHONPATH=str(CHECKOUT))
            run(*checkout, "lab", "down", "--name", name, cwd=work, env=env_checkout, timeout=600)
    print(
        f"\nwheel build + clean venv install: {install_seconds:.0f} s; "
        f"lab up + deploy + down: {time.monotonic() - deploy_started:.0f} s"
    )
    assert down.returncode == 0, down.stderr
    assert lab_objects(name) == []
    # Kept when the test fails, to look into; otherwise ~600 MB that pytest's tmp dirs keep.
    shutil.rmtree(venv)
