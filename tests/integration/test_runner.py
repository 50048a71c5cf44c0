"""ansible-runner for real (local connection): events become progress and precise errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from metalctl.deploy.runner import TaskEvent, new_run_dir, run_playbook
from metalctl.errors import DeployError


def _project(tmp_path: Path, fail: bool) -> tuple[Path, Path]:
    roles = tmp_path / "roles"
    tasks = roles / "probe" / "tasks"
    tasks.mkdir(parents=True)
    marker = tmp_path / "marker"
    tasks.joinpath("main.yml").write_text(
        f"""\
- name: Write the marker
  ansible.builtin.copy:
    content: "hello\\n"
    dest: {marker}
    mode: "0644"
- name: Check the widget
  ansible.builtin.command: "{"/bin/false" if fail else "/bin/true"}"
  changed_when: false
"""
    )
    project = tmp_path / "project"
    project.mkdir()
    project.joinpath("playbook.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  roles: [probe]\n"
    )
    return project, roles


INVENTORY = {
    "all": {
        "hosts": {
            "box1": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
        }
    }
}


def test_failed_task_names_host_role_task_and_log(tmp_path: Path) -> None:
    project, roles = _project(tmp_path, fail=True)
    seen: list[TaskEvent] = []
    with pytest.raises(DeployError) as err:
        run_playbook(
            run_dir=new_run_dir(tmp_path / "runs", "t"),
            project_dir=project,
            playbook="playbook.yml",
            roles_path=roles,
            inventory=INVENTORY,
            known_hosts=tmp_path / "kh",
            phase="run workload roles",
            on_task=seen.append,
        )
    e = err.value
    assert (e.host, e.role, e.task) == ("box1", "probe", "Check the widget")
    assert e.log_path is not None and e.log_path.exists()
    assert "Check the widget" in e.log_path.read_text()
    assert ("box1", "probe", "Write the marker", "changed") in [
        (s.host, s.role, s.task, s.status) for s in seen
    ]


def test_success_counts_changes_and_second_run_is_zero(tmp_path: Path) -> None:
    project, roles = _project(tmp_path, fail=False)

    def run() -> int:
        result = run_playbook(
            run_dir=new_run_dir(tmp_path / "runs", "t"),
            project_dir=project,
            playbook="playbook.yml",
            roles_path=roles,
            inventory=INVENTORY,
            known_hosts=tmp_path / "kh",
            phase="p",
        )
        return result.changed.get("box1", 0)

    assert run() == 1
    assert run() == 0
    assert len(list((tmp_path / "runs").iterdir())) == 2  # artifacts kept per run
