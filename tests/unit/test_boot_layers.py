"""The boot package uses core modules only: never the CLI, operations, deploys or membership.
Checked on the real import graph, in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = (
    "metalctl.cli",
    "metalctl.operations",
    "metalctl.deploy",
    "metalctl.membership",
    "metalctl.clients",
    "metalctl.provisioners",
)


def test_boot_service_imports_only_core_modules() -> None:
    code = "import json, sys; import metalctl.boot; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = [m for m in json.loads(out.stdout) if m.startswith("metalctl")]
    bad = sorted(m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))
    assert not bad, f"metalctl.boot pulls in {bad}"
    assert "metalctl.boot.http" in loaded
