from __future__ import annotations

from pathlib import Path

import yaml

from metalctl.deploy.inventory import ConsulSource, render_inventory
from metalctl.paths import ClusterPaths
from metalctl.pki import ensure_cluster_secrets
from metalctl.spec import parse_spec
from tests.conftest import GOOD_SPEC


def test_inventory_groups_roles_and_no_secret_values(tmp_path: Path) -> None:
    spec = parse_spec(GOOD_SPEC)
    paths = ClusterPaths(tmp_path / "c")
    sp = ensure_cluster_secrets(paths, spec)
    inv = render_inventory(spec, paths, tmp_path / "key", ConsulSource(src=tmp_path / "consul"))
    root = inv["all"]
    assert set(root["children"]["swarm_managers"]["hosts"]) == {"n1", "n2", "n3"}
    assert set(root["children"]["swarm_workers"]["hosts"]) == {"n4"}
    assert root["vars"]["swarm_master"] == "n1"
    assert root["vars"]["consul_bootstrap_expect"] == 3
    assert root["vars"]["consul_retry_join"] == ["192.0.2.11", "192.0.2.12", "192.0.2.13"]
    assert root["hosts"]["n2"]["ansible_port"] == 2222
    assert root["hosts"]["n2"]["ansible_user"] == "admin"
    assert root["hosts"]["n4"]["consul_server"] is False
    text = yaml.safe_dump(inv)
    # Secrets are passed as file paths, never as values.
    assert sp.gossip_key.read_text().strip() not in text
    assert sp.master_token.read_text().strip() not in text
