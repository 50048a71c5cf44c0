"""Layers point one way: cli -> operations -> {provisioners, deploy, membership} -> clients
-> core. Checked on the real import graph, in a fresh interpreter per entry point."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def loaded_after_import(module: str) -> set[str]:
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {m for m in json.loads(out.stdout) if m.startswith("metalctl")}


def test_deploy_does_not_import_membership() -> None:
    loaded = loaded_after_import("metalctl.deploy.apply")
    assert not {m for m in loaded if m.startswith("metalctl.membership")}, sorted(loaded)


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        # clients talk to APIs; they know nothing of deploys, membership or operations
        (
            "metalctl.clients.consul",
            ("metalctl.deploy", "metalctl.membership", "metalctl.operations"),
        ),
        (
            "metalctl.clients.docker",
            ("metalctl.deploy", "metalctl.membership", "metalctl.operations"),
        ),
        (
            "metalctl.clients.ironic",
            (
                "metalctl.deploy",
                "metalctl.membership",
                "metalctl.operations",
                "metalctl.provisioners",
            ),
        ),
        # Ironic: one backend module behind the provisioner interface, over its client
        (
            "metalctl.provisioners.ironic",
            ("metalctl.deploy", "metalctl.membership", "metalctl.operations", "metalctl.cli"),
        ),
        # day-2 code may use day-1 code, never the reverse
        ("metalctl.membership.runtime", ("metalctl.deploy", "metalctl.operations", "metalctl.cli")),
        (
            "metalctl.provisioners.lab",
            ("metalctl.deploy", "metalctl.membership", "metalctl.operations"),
        ),
        # the boot service (PXE): core only
        (
            "metalctl.boot.service",
            (
                "metalctl.cli",
                "metalctl.operations",
                "metalctl.deploy",
                "metalctl.membership",
                "metalctl.clients",
            ),
        ),
        # PXE: the provisioners and the VM lab driver know nothing of deploys or the CLI
        (
            "metalctl.provisioners.vmlab",
            ("metalctl.deploy", "metalctl.membership", "metalctl.operations", "metalctl.cli"),
        ),
        ("metalctl.vmlab.qemu", ("metalctl.provisioners", "metalctl.operations", "metalctl.cli")),
        ("metalctl.images.discovery", ("metalctl.provisioners", "metalctl.boot", "metalctl.cli")),
        # core
        ("metalctl.deployments", ("metalctl.boot", "metalctl.provisioners", "metalctl.clients")),
        ("metalctl.lifecycle", ("metalctl.clients", "metalctl.deploy", "metalctl.membership")),
        ("metalctl.spec", ("metalctl.clients", "metalctl.deploy", "metalctl.provisioners")),
    ],
)
def test_lower_layers_do_not_import_higher_ones(module: str, forbidden: tuple[str, ...]) -> None:
    loaded = loaded_after_import(module)
    bad = sorted(m for m in loaded if any(m == f or m.startswith(f + ".") for f in forbidden))
    assert not bad, f"{module} pulls in {bad}"
