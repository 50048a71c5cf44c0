"""Workloads: a folder under workloads/ with workload.yaml (roles, constraints) and a playbook."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from metalctl.errors import NotFoundError, SpecError
from metalctl.paths import project_root


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    directory: Path
    playbook: str
    roles: list[str]

    @property
    def roles_path(self) -> Path:
        return self.directory.parent.parent / "roles"


def load_workload(name: str, root: Path | None = None) -> Workload:
    base = (root or project_root()) / "workloads"
    path = base / name / "workload.yaml"
    if not path.exists():
        known = sorted(p.name for p in base.iterdir() if (p / "workload.yaml").exists())
        raise NotFoundError(
            f"no workload named '{name}'", hint=f"known workloads: {', '.join(known)}"
        )
    data = yaml.safe_load(path.read_text()) or {}
    try:
        return Workload(
            name=data["name"],
            description=data.get("description", ""),
            directory=path.parent,
            playbook=data.get("playbook", "playbook.yml"),
            roles=list(data["roles"]),
        )
    except (KeyError, TypeError) as exc:
        raise SpecError(str(path), [(str(exc), "required key missing in workload.yaml")]) from exc
