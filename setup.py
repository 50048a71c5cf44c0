"""Build hook: ship the top-level roles/ and workloads/ inside the wheel as metalctl/share/.

Everything else about the package lives in pyproject.toml. The two folders stay at the top
of the source tree (the layout is fixed), so a plain wheel would leave them behind and an
installed metalctl could not deploy; metalctl.paths.project_root() looks for this copy.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SHARED = ("roles", "workloads")


def _ignore(directory: str, names: list[str]) -> set[str]:
    """Leave out bytecode and links to folders that are shipped anyway.

    A wheel cannot hold a symlink, so workloads/swarm/roles -> ../../roles would become a
    second copy of every role; the runner finds roles through ANSIBLE_ROLES_PATH (the
    shipped share/roles), so the link is not needed there. Other links are copied as files.
    """
    shared = [HERE / name for name in SHARED]
    skipped = set()
    for name in names:
        path = Path(directory, name)
        if name == "__pycache__" or name.endswith(".pyc"):
            skipped.add(name)
        elif path.is_symlink() and path.is_dir():
            target = path.resolve()
            if any(target.is_relative_to(root) for root in shared):
                skipped.add(name)
    return skipped


class BuildPyWithShare(build_py):
    def run(self) -> None:
        super().run()
        # An editable install runs from the source tree, where project_root() finds the
        # folders in place; a copy in its build dir would only go stale.
        if getattr(self, "editable_mode", False):
            return
        missing = [name for name in SHARED if not (HERE / name).is_dir()]
        if missing:
            # Fail the build rather than produce a wheel that cannot deploy (e.g. built from
            # an sdist made without MANIFEST.in).
            raise SystemExit(f"cannot build metalctl: {', '.join(missing)} missing in {HERE}")
        share = Path(self.build_lib) / "metalctl" / "share"
        # build/ is reused between builds: start clean so removed roles do not linger.
        shutil.rmtree(share, ignore_errors=True)
        ignore: Callable[[str, list[str]], set[str]] = _ignore
        for name in SHARED:
            shutil.copytree(HERE / name, share / name, ignore=ignore)


setup(cmdclass={"build_py": BuildPyWithShare})
