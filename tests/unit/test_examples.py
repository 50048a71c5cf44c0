from __future__ import annotations

from pathlib import Path

import pytest

from metalctl.spec import load_spec_file

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "inventories").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_specs_are_valid(path: Path) -> None:
    spec = load_spec_file(path)
    assert spec.spec.swarm.master in spec.spec.swarm.managers
