"""Provisioners: backends that bring machines to ready state, behind one interface.

``BACKENDS`` maps the spec's ``spec.provisioner`` to the module that implements it; the
module is imported only when that backend is used (the Docker SDK is slow to import).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from metalctl.errors import SpecError

if TYPE_CHECKING:
    from metalctl.provisioners.base import Provisioner

BACKENDS: dict[str, str] = {
    "ironic": "metalctl.provisioners.ironic",
    "lab": "metalctl.provisioners.lab",
    "pxe": "metalctl.provisioners.pxe",
    "static": "metalctl.provisioners.static",
    "vmlab": "metalctl.provisioners.vmlab",
}


def names() -> list[str]:
    return sorted(BACKENDS)


def check_known(name: str, source: str) -> None:
    """A SpecError naming the field when the spec names no known backend."""
    if name not in BACKENDS:
        raise SpecError(
            source,
            [("spec.provisioner", f"unknown provisioner '{name}'; known: {', '.join(names())}")],
        )


def get(name: str) -> Provisioner:
    check_known(name, f"(provisioner '{name}')")
    provisioner: Provisioner = importlib.import_module(BACKENDS[name]).PROVISIONER
    return provisioner
