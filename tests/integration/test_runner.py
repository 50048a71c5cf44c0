"""ansible-runner for real (local connection): events become progress and precise errors."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from metalctl.deploy.runner import PlayResult, TaskEvent, new_run_dir, run_playbook
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


def play(
    tmp_path: Path,
    project: Path,
    roles: Path,
    inventory: dict[str, Any] = INVENTORY,
    *,
    run_dir: Path | None = None,
    on_task: Callable[[TaskEvent], None] | None = None,
    phase: str = "p",
) -> PlayResult:
    """run_playbook on a test project, in a new run folder unless ``run_dir`` names one."""
    return run_playbook(
        run_dir=run_dir or new_run_dir(tmp_path / "runs", "t"),
        project_dir=project,
        playbook="playbook.yml",
        roles_path=roles,
        inventory=inventory,
        known_hosts=tmp_path / "kh",
        phase=phase,
        on_task=on_task,
    )


def test_failed_task_names_host_role_task_and_log(tmp_path: Path) -> None:
    project, roles = _project(tmp_path, fail=True)
    seen: list[TaskEvent] = []
    with pytest.raises(DeployError) as err:
        play(tmp_path, project, roles, phase="run workload roles", on_task=seen.append)
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
        result = play(tmp_path, project, roles)
        return result.changed.get("box1", 0)

    assert run() == 1
    assert run() == 0
    assert len(list((tmp_path / "runs").iterdir())) == 2  # artifacts kept per run


def _sleepy_project(tmp_path: Path) -> tuple[Path, Path]:
    """Two roles whose tasks take known, distinct times on two hosts."""
    roles = tmp_path / "roles"
    for role, body in {
        "quick": "- name: Quick step\n  ansible.builtin.command: /bin/true\n  changed_when: false\n",
        "slow": (
            "- name: Slow step\n"
            "  ansible.builtin.command: sleep {{ slow_seconds }}\n"
            "  changed_when: false\n"
            "- name: Touch the file\n"
            "  ansible.builtin.file:\n"
            '    path: "{{ marker }}"\n'
            "    state: touch\n"
            '    mode: "0644"\n'
        ),
    }.items():
        (roles / role / "tasks").mkdir(parents=True)
        (roles / role / "tasks" / "main.yml").write_text(body)
    project = tmp_path / "project"
    project.mkdir()
    project.joinpath("playbook.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  roles: [quick, slow]\n"
    )
    return project, roles


def _two_hosts(tmp_path: Path) -> dict[str, Any]:
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    return {
        "all": {
            "hosts": {
                "fast1": {**host, "slow_seconds": 0.1, "marker": str(tmp_path / "m1")},
                "slow2": {**host, "slow_seconds": 1.5, "marker": str(tmp_path / "m2")},
            }
        }
    }


def test_timings_per_task_role_and_host_come_from_the_runs_events(tmp_path: Path) -> None:
    from metalctl.deploy.timing import role_timings, slowest, task_timings

    project, roles = _sleepy_project(tmp_path)
    run_dir = new_run_dir(tmp_path / "runs", "t")
    play(tmp_path, project, roles, _two_hosts(tmp_path), run_dir=run_dir)

    tasks = task_timings(run_dir)
    seen = {(t.host, t.role, t.task): t for t in tasks}
    assert set(seen) == {
        (h, r, task)
        for h in ("fast1", "slow2")
        for r, task in (("quick", "Quick step"), ("slow", "Slow step"), ("slow", "Touch the file"))
    }
    assert seen["slow2", "slow", "Slow step"].seconds >= 1.5
    assert seen["fast1", "slow", "Slow step"].seconds < 1.5
    assert seen["slow2", "slow", "Touch the file"].status == "changed"
    assert seen["fast1", "quick", "Quick step"].status == "ok"
    assert slowest(tasks, 1)[0] == seen["slow2", "slow", "Slow step"]
    by_role = {r.role: r for r in role_timings(tasks)}
    assert [r.role for r in role_timings(tasks)] == ["quick", "slow"]  # play order
    assert by_role["slow"].host == "slow2" and by_role["slow"].tasks == 2
    assert by_role["slow"].seconds >= 1.5


def test_a_failed_run_still_has_the_timings_of_what_ran(tmp_path: Path) -> None:
    from metalctl.deploy.timing import task_timings

    project, roles = _project(tmp_path, fail=True)
    run_dir = new_run_dir(tmp_path / "runs", "t")
    with pytest.raises(DeployError):
        play(tmp_path, project, roles, run_dir=run_dir)
    assert [(t.task, t.status) for t in task_timings(run_dir)] == [
        ("Write the marker", "changed"),
        ("Check the widget", "failed"),
    ]
