from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography import x509

from metalctl.errors import NotFoundError
from metalctl.paths import ClusterPaths
from metalctl.pki import (
    ensure_cluster_pki,
    ensure_cluster_secrets,
    node_cert_paths,
    read_controller_token,
    read_master_token,
)
from metalctl.spec import parse_spec
from tests.conftest import GOOD_SPEC


def _sans(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in ext.get_values_for_type(x509.DNSName)} | {
        str(v) for v in ext.get_values_for_type(x509.IPAddress)
    }


def test_node_certs_have_names_addresses_and_consul_server_san(tmp_path: Path) -> None:
    spec = parse_spec(GOOD_SPEC)
    paths = ClusterPaths(tmp_path / "c")
    ensure_cluster_pki(paths, spec)
    n1 = node_cert_paths(paths, "n1")
    assert {"n1", "192.0.2.11", "localhost", "127.0.0.1", "server.dc1.consul"} <= _sans(n1.cert)
    # n4 is a Consul client: it must not be able to pose as a server.
    assert "server.dc1.consul" not in _sans(node_cert_paths(paths, "n4").cert)
    for key in [n1.key, paths.pki / "ca-key.pem", paths.docker_client / "key.pem"]:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert {p.name for p in paths.docker_client.iterdir()} >= {"ca.pem", "cert.pem", "key.pem"}


def test_rerun_keeps_certs_and_changed_sans_reissue(tmp_path: Path) -> None:
    spec = parse_spec(GOOD_SPEC)
    paths = ClusterPaths(tmp_path / "c")
    ensure_cluster_pki(paths, spec)
    before = {p: p.read_bytes() for p in paths.pki.rglob("*.pem")}
    ensure_cluster_pki(paths, spec)
    assert {p: p.read_bytes() for p in paths.pki.rglob("*.pem")} == before
    moved = parse_spec(GOOD_SPEC.replace("192.0.2.14", "192.0.2.44"))
    ensure_cluster_pki(paths, moved)
    assert "192.0.2.44" in _sans(node_cert_paths(paths, "n4").cert)
    assert (
        node_cert_paths(paths, "n1").cert.read_bytes() == before[node_cert_paths(paths, "n1").cert]
    )


def test_secrets_made_once_and_extended_for_new_nodes(tmp_path: Path) -> None:
    spec = parse_spec(GOOD_SPEC)
    paths = ClusterPaths(tmp_path / "c")
    sp = ensure_cluster_secrets(paths, spec)
    gossip, master = sp.gossip_key.read_text(), sp.master_token.read_text()
    tokens = json.loads(sp.acl_tokens.read_text())
    assert set(tokens) == {"n1", "n2", "n3", "n4"}
    assert len({t["secret"] for t in tokens.values()}) == 4
    grown = parse_spec(
        GOOD_SPEC.replace(
            "- {name: n4, address: 192.0.2.14}",
            "- {name: n4, address: 192.0.2.14}\n    - {name: n5, address: 192.0.2.15}",
        )
    )
    ensure_cluster_secrets(paths, grown)
    assert sp.gossip_key.read_text() == gossip
    assert sp.master_token.read_text() == master
    again = json.loads(sp.acl_tokens.read_text())
    assert again["n1"] == tokens["n1"] and "n5" in again
    for f in (sp.gossip_key, sp.master_token, sp.acl_tokens):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600


def test_controller_token_is_its_own_secret_kept_across_runs(tmp_path: Path) -> None:
    spec = parse_spec(GOOD_SPEC)
    paths = ClusterPaths(tmp_path / "c")
    sp = ensure_cluster_secrets(paths, spec)
    token = read_controller_token(paths)
    assert token and token != read_master_token(paths)
    assert stat.S_IMODE(sp.controller_token.stat().st_mode) == 0o600
    ensure_cluster_secrets(paths, spec)
    assert read_controller_token(paths) == token


def test_a_cluster_without_controller_token_says_to_redeploy(tmp_path: Path) -> None:
    paths = ClusterPaths(tmp_path / "old")
    sp = ensure_cluster_secrets(paths, parse_spec(GOOD_SPEC))
    sp.controller_token.unlink()  # as deployed by a metalctl before the controller token
    with pytest.raises(NotFoundError) as err:
        read_controller_token(paths)
    assert "metalctl deploy swarm --cluster old" in str(err.value)
