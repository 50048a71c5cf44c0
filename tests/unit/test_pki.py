from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from metalctl.errors import NotFoundError
from metalctl.paths import ClusterPaths
from metalctl.pki import (
    admin_cert_paths,
    ca_paths,
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


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """Signed by ``ca``'s key (every chain here is CA -> leaf, no intermediates)."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _usages(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def _sign_with(
    ca_cert_path: Path, target_cert: Path, usages: list[x509.ObjectIdentifier], days: float
) -> None:
    """Replace ``target_cert`` by one keeping its subject, SANs and key, signed by the CA
    at ``ca_cert_path`` (key next to it) with ``usages`` and ``days`` of validity left."""
    ca_key = serialization.load_pem_private_key(
        ca_cert_path.with_name(f"{ca_cert_path.stem}-key.pem").read_bytes(), password=None
    )
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    old = _cert(target_cert)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(_cert(ca_cert_path).subject)
        .public_key(old.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    try:
        sans = old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        builder = builder.add_extension(sans, critical=False)
    except x509.ExtensionNotFound:
        pass
    cert = builder.sign(ca_key, hashes.SHA256())
    target_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _all_pem(paths: ClusterPaths) -> dict[Path, bytes]:
    return {
        p: p.read_bytes() for p in [*paths.pki.rglob("*.pem"), *paths.docker_client.glob("*.pem")]
    }


def test_node_certs_have_names_addresses_and_consul_server_san(tmp_path: Path) -> None:
    spec = parse_spec(GOOD_SPEC)
    paths = ClusterPaths(tmp_path / "c")
    ensure_cluster_pki(paths, spec)
    n1 = node_cert_paths(paths, "n1")
    assert {"n1", "192.0.2.11", "localhost", "127.0.0.1", "server.dc1.consul"} <= _sans(n1.cert)
    # n4 is a Consul client: it must not be able to pose as a server.
    assert "server.dc1.consul" not in _sans(node_cert_paths(paths, "n4").cert)
    for key in [
        n1.key,
        paths.pki / "ca-key.pem",
        paths.pki / "client-ca-key.pem",
        paths.docker_client / "key.pem",
    ]:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert {p.name for p in paths.docker_client.iterdir()} >= {"ca.pem", "cert.pem", "key.pem"}


def test_node_cert_does_not_chain_to_the_client_ca(tmp_path: Path) -> None:
    """dockerd trusts only the client CA for clients: a node's certificate (what root on
    that node can read) must not verify against it, whatever its key usages."""
    paths = ClusterPaths(tmp_path / "c")
    ensure_cluster_pki(paths, parse_spec(GOOD_SPEC))
    cas = ca_paths(paths)
    cluster_ca, client_ca = _cert(cas.cluster), _cert(cas.client)
    assert cluster_ca.subject != client_ca.subject
    assert cluster_ca.public_key() != client_ca.public_key()
    as_dockerd = PolicyBuilder().store(Store([client_ca])).build_client_verifier()
    for node in ["n1", "n4"]:
        cert = _cert(node_cert_paths(paths, node).cert)
        assert _issued_by(cert, cluster_ca)
        assert not _issued_by(cert, client_ca)
        with pytest.raises(VerificationError):
            as_dockerd.verify(cert, [])
        # Server + client: Consul agents present it as a TLS client for RPC.
        assert _usages(cert) == {
            ExtendedKeyUsageOID.SERVER_AUTH,
            ExtendedKeyUsageOID.CLIENT_AUTH,
        }
    n4 = _cert(node_cert_paths(paths, "n4").cert)
    as_consul_client = (
        PolicyBuilder().store(Store([cluster_ca])).build_server_verifier(x509.DNSName("n4"))
    )
    as_consul_client.verify(n4, [])


def test_admin_cert_is_client_only_and_chains_to_the_client_ca_only(tmp_path: Path) -> None:
    paths = ClusterPaths(tmp_path / "c")
    ensure_cluster_pki(paths, parse_spec(GOOD_SPEC))
    cas = ca_paths(paths)
    admin = _cert(admin_cert_paths(paths).cert)
    assert _issued_by(admin, _cert(cas.client))
    assert not _issued_by(admin, _cert(cas.cluster))
    assert _usages(admin) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    assert admin.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "metalctl-admin"
    # No SANs: it can never pass as a server (Consul's verify_server_hostname).
    with pytest.raises(x509.ExtensionNotFound):
        admin.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    # DOCKER_CERT_PATH's ca.pem verifies the servers: the cluster CA, not the client CA.
    assert (paths.docker_client / "ca.pem").read_bytes() == cas.cluster.read_bytes()


def test_rerun_keeps_certs_and_changed_sans_reissue(tmp_path: Path) -> None:
    spec = parse_spec(GOOD_SPEC)
    paths = ClusterPaths(tmp_path / "c")
    ensure_cluster_pki(paths, spec)
    before = _all_pem(paths)
    assert admin_cert_paths(paths).cert in before and ca_paths(paths).client in before
    ensure_cluster_pki(paths, spec)
    assert _all_pem(paths) == before
    moved = parse_spec(GOOD_SPEC.replace("192.0.2.14", "192.0.2.44"))
    ensure_cluster_pki(paths, moved)
    assert "192.0.2.44" in _sans(node_cert_paths(paths, "n4").cert)
    assert (
        node_cert_paths(paths, "n1").cert.read_bytes() == before[node_cert_paths(paths, "n1").cert]
    )


def test_single_ca_cluster_gets_a_client_ca_and_a_new_admin_cert(tmp_path: Path) -> None:
    """A cluster deployed before the client CA: its admin certificate was signed by the
    cluster CA (trusted by every dockerd). The next deploy re-issues only that one."""
    spec = parse_spec(GOOD_SPEC)
    paths = ClusterPaths(tmp_path / "c")
    ensure_cluster_pki(paths, spec)
    cas = ca_paths(paths)
    admin = admin_cert_paths(paths)
    _sign_with(cas.cluster, admin.cert, [ExtendedKeyUsageOID.CLIENT_AUTH], days=800)
    cas.client.unlink()
    cas.client.with_name("client-ca-key.pem").unlink()
    old_admin_key = admin.key.read_bytes()
    before = _all_pem(paths)
    ensure_cluster_pki(paths, spec)
    after = _all_pem(paths)
    assert _issued_by(_cert(admin.cert), _cert(cas.client))
    assert not _issued_by(_cert(admin.cert), _cert(cas.cluster))
    assert admin.key.read_bytes() != old_admin_key
    # Everything the nodes hold, and the CA that verifies them, is left as it was.
    unchanged = {p for p in before if p != admin.cert and p != admin.key}
    assert {p: after[p] for p in unchanged} == {p: before[p] for p in unchanged}
    ensure_cluster_pki(paths, spec)
    assert _all_pem(paths) == after


def test_certs_are_renewed_near_their_end_only(tmp_path: Path) -> None:
    spec = parse_spec(GOOD_SPEC)
    paths = ClusterPaths(tmp_path / "c")
    ensure_cluster_pki(paths, spec)
    cas = ca_paths(paths)
    node_usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    n1, n2 = node_cert_paths(paths, "n1"), node_cert_paths(paths, "n2")
    _sign_with(cas.cluster, n1.cert, node_usages, days=10)  # in its last 30 days
    _sign_with(cas.cluster, n2.cert, node_usages, days=700)  # e.g. an older 825-day one
    kept = n2.cert.read_bytes()
    ensure_cluster_pki(paths, spec)
    renewed = _cert(n1.cert)
    left = renewed.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=360) < left <= dt.timedelta(days=365)
    assert n2.cert.read_bytes() == kept
    # Changed key usages (e.g. serverAuth only) are re-issued as well.
    _sign_with(cas.cluster, n2.cert, [ExtendedKeyUsageOID.SERVER_AUTH], days=300)
    ensure_cluster_pki(paths, spec)
    assert _usages(_cert(n2.cert)) == set(node_usages)


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
