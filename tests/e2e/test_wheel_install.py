"""A wheel installed into a clean venv deploys a lab from any directory (like `pipx install .`).

The session lab (``deployed_lab``) is made and deployed by ``wheel_install``'s metalctl: a
wheel built from this checkout, installed with its dependencies into a fresh venv outside it,
run as <venv>/bin/metalctl from an unrelated working directory, with neither PYTHONPATH nor
METALCTL_SHARE and without the venv's bin/ (nor any other Ansible) on PATH, so the roles, the
workload and ansible-playbook can only come from the installed package and its venv.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.e2e.conftest import CHECKOUT, Lab, WheelInstall

pytestmark = pytest.mark.e2e


def test_wheel_in_a_clean_venv_deploys_a_lab(
    wheel_install: WheelInstall, deployed_lab: Lab
) -> None:
    assert deployed_lab.command == (str(wheel_install.metalctl),)
    assert not wheel_install.work.resolve().is_relative_to(CHECKOUT)
    assert shutil.which("ansible-playbook", path=deployed_lab.env["PATH"]) is None
    assert "PYTHONPATH" not in deployed_lab.env
    share = subprocess.run(
        [str(wheel_install.venv / "bin" / "python"), "-c",
         "import metalctl.paths as p; print(p.project_root())"],
        capture_output=True, text=True, env=deployed_lab.env, cwd=wheel_install.work, check=True,
    ).stdout  # fmt: skip
    assert (wheel_install.venv / "lib").exists() and share.strip().startswith(
        str(wheel_install.venv)
    ), share  # the wheel's roles, not the checkout's
    # Read right after its deploy (a later test of test_swarm_lab.py takes the lab down).
    nodes = deployed_lab.spec["nodes"]
    assert len(nodes) == 4 and {n["state"] for n in nodes} == {"active"}, nodes
    assert deployed_lab.spec["deploy"]["changed"], deployed_lab.spec["deploy"]
    print(f"\nwheel build + clean venv install: {wheel_install.seconds:.0f} s")
