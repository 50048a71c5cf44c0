from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from metalctl.store import Store

GOOD_SPEC = textwrap.dedent(
    """\
    apiVersion: metalctl/v1alpha1
    kind: Cluster
    metadata:
      name: rack1
    spec:
      provisioner: static
      nodes:
        - {name: n1, address: 192.0.2.11}
        - {name: n2, address: 192.0.2.12, ssh: {user: admin, port: 2222}}
        - {name: n3, address: 192.0.2.13, labels: {rack: r1}}
        - {name: n4, address: 192.0.2.14}
      swarm:
        master: n1
        managers: [n1, n2, n3]
      consul:
        servers: [n1, n2, n3]
    """
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty METALCTL_HOME for this test."""
    h = tmp_path / "home"
    monkeypatch.setenv("METALCTL_HOME", str(h))
    return h


@pytest.fixture
def store(home: Path) -> Store:
    s = Store()
    yield s
    s.close()
