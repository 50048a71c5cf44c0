"""Workloads: a folder under workloads/ with workload.yaml (roles, constraints) and a playbook.

workloads/ and roles/ ship with metalctl (``paths.project_root()``); when they are missing
the installation is broken, which is a host-setup error (6), not a missing workload (4).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from metalctl.errors import HostSetupError, NotFoundError, SpecError
from metalctl.paths import project_root
from metalctl.spec import ClusterSpec

WORKLOAD_FILE = "workload.yaml"
_REINSTALL = (
    "reinstall metalctl (pip install -e . in its source tree), or point METALCTL_SHARE "
    "at the folder that holds workloads/ and roles/"
)


# The workload a cluster spec is checked against when it is registered (lab up, -f): the
# spec's swarm/consul sections are its groups. A deploy checks the workload it runs.
DEFAULT_WORKLOAD = "swarm"


@dataclass(frozen=True)
class GroupRule:
    """workload.yaml ``constraints.GROUP``: how many nodes the spec may put in a group.

    ``field`` is the dotted path of the spec list that fills the group
    (``spec.swarm.managers``); ``odd`` is for Raft groups, whose quorum an even size
    does not improve.
    """

    group: str
    field: str
    min: int = 1
    max: int | None = None
    odd: bool = False

    def problems(self, spec: ClusterSpec) -> list[tuple[str, str]]:
        members = _field(spec, self.field)
        if not isinstance(members, list):
            return [(self.field, f"the workload's group {self.group} needs this list")]
        count, why = len(members), f"(workload constraint {self.group})"
        problems = []
        if self.odd and count % 2 == 0:
            problems.append(
                (self.field, f"needs an odd number of nodes for a quorum, got {count} {why}")
            )
        if count < self.min:
            problems.append((self.field, f"needs at least {self.min}, got {count} {why}"))
        if self.max is not None and count > self.max:
            problems.append((self.field, f"at most {self.max} are supported, got {count} {why}"))
        return problems


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    directory: Path
    playbook: str
    roles: list[str]
    constraints: tuple[GroupRule, ...] = ()
    # workload.yaml ``preload.debian``: the Debian packages its roles install, which an
    # image built with ``--preload NAME`` carries already (the roles then skip the install).
    preload_debian: tuple[str, ...] = ()

    @property
    def roles_path(self) -> Path:
        return self.directory.parent.parent / "roles"

    def check(self, spec: ClusterSpec) -> None:
        """SpecError (exit 3) naming each field whose group breaks a constraint."""
        problems = [p for rule in self.constraints for p in rule.problems(spec)]
        if problems:
            raise SpecError(f"of cluster {spec.name} for workload {self.name}", problems)


def _field(spec: ClusterSpec, dotted: str) -> Any:
    value: Any = spec.model_dump(by_alias=True)
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def load_workload(name: str, root: Path | None = None) -> Workload:
    """The workload ``name``, checked: its workload.yaml parses and its roles exist."""
    base = _folder(root, "workloads")
    path = base / name / WORKLOAD_FILE
    if not path.is_file():
        known = ", ".join(w.name for w in list_workloads(root)) or "none"
        raise NotFoundError(
            f"no workload named '{name}' in {base}",
            hint=f"known workloads: {known} ('metalctl deploy list' describes them)",
        )
    workload = _parse(path)
    _check_roles(workload)
    return workload


def list_workloads(root: Path | None = None) -> list[Workload]:
    """Every workload under workloads/ (folders with a workload.yaml), sorted by name."""
    base = _folder(root, "workloads")
    return [_parse(p) for p in sorted(base.glob(f"*/{WORKLOAD_FILE}")) if p.is_file()]


def _folder(root: Path | None, name: str) -> Path:
    folder = (root or project_root()) / name
    if not folder.is_dir():
        raise HostSetupError(f"metalctl's {name}/ folder is missing: {folder}", hint=_REINSTALL)
    return folder


def _parse(path: Path) -> Workload:
    """One workload.yaml, every problem a SpecError naming the file."""

    def bad(field: str, problem: str) -> SpecError:
        return SpecError(str(path), [(field, problem)], kind="workload")

    try:
        data: Any = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise bad("file", f"cannot read it: {exc.strerror or exc}") from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise bad("yaml", f"malformed YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise bad("(top level)", "must be a mapping with name and roles")
    name, roles = data.get("name"), data.get("roles")
    if not isinstance(name, str) or not name:
        raise bad("name", "required: the workload's name")
    if not isinstance(roles, list) or not roles or not all(isinstance(r, str) for r in roles):
        raise bad("roles", "required: a list of role names (folders under roles/)")
    description = data.get("description") or ""
    playbook = data.get("playbook") or "playbook.yml"
    if not isinstance(description, str):
        raise bad("description", "must be text")
    if not isinstance(playbook, str):
        raise bad("playbook", "must be a file name in the workload's folder")
    rules = _rules(data.get("constraints") or {}, bad)
    preload = _preload(data.get("preload") or {}, bad)
    return Workload(name, description.strip(), path.parent, playbook, list(roles), rules, preload)


_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+")  # Debian policy's package name syntax


def _preload(raw: Any, bad: Callable[[str, str], SpecError]) -> tuple[str, ...]:
    if not isinstance(raw, dict) or set(raw) - {"debian"}:
        raise bad("preload", "must be a mapping with one key, debian: [package, ...]")
    packages = raw.get("debian") or []
    if not isinstance(packages, list) or not all(
        isinstance(p, str) and _PACKAGE.fullmatch(p) for p in packages
    ):
        raise bad("preload.debian", "must be a list of Debian package names")
    return tuple(packages)


def _rules(raw: Any, bad: Callable[[str, str], SpecError]) -> tuple[GroupRule, ...]:
    if not isinstance(raw, dict):
        raise bad("constraints", "must map group names to {field, min, max, odd}")
    rules = []
    for group, rule in raw.items():
        where = f"constraints.{group}"
        if not isinstance(rule, dict) or not isinstance(rule.get("field"), str):
            raise bad(where, "needs field: the dotted spec path of the group's node list")
        unknown = set(rule) - {"field", "min", "max", "odd"}
        if unknown:
            raise bad(where, f"unknown keys: {', '.join(sorted(unknown))}")
        low, high, odd = rule.get("min", 1), rule.get("max"), rule.get("odd", False)
        if type(low) is not int or (high is not None and type(high) is not int):
            raise bad(where, "min and max must be whole numbers")
        if not isinstance(odd, bool):
            raise bad(where, "odd must be true or false")
        rules.append(GroupRule(str(group), rule["field"], low, high, odd))
    return tuple(rules)


def _check_roles(workload: Workload) -> None:
    roles = workload.roles_path
    if not roles.is_dir():
        raise HostSetupError(f"metalctl's roles/ folder is missing: {roles}", hint=_REINSTALL)
    for role in workload.roles:
        if not (roles / role).is_dir():
            raise HostSetupError(
                f"workload '{workload.name}' needs role '{role}', but {roles / role} is missing",
                hint=_REINSTALL,
            )
