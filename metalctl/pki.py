"""Cluster PKI and secrets, generated once on the admin host and reused on every run.

One CA per cluster; per-node certificates (server + client usage, used by both
dockerd and Consul; SANs = name, address, localhost, and ``server.<dc>.consul``
for Consul servers so that ``verify_server_hostname`` holds); one admin client
certificate (``docker-client/``, usable as DOCKER_CERT_PATH). Keys and secrets are
written 0600. A certificate is re-issued only when its SANs or its CA changed,
so a re-deploy changes nothing on the nodes.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from metalctl.errors import ConflictError, NotFoundError
from metalctl.paths import ClusterPaths, ensure_private_dir, write_private, write_public
from metalctl.spec import ClusterSpec

CA_DAYS = 3650
CERT_DAYS = 825
_KeyT = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class NodeCertPaths:
    cert: Path
    key: Path


def node_cert_paths(paths: ClusterPaths, node: str) -> NodeCertPaths:
    return NodeCertPaths(
        paths.pki / "nodes" / f"{node}.pem", paths.pki / "nodes" / f"{node}-key.pem"
    )


def ensure_cluster_pki(paths: ClusterPaths, spec: ClusterSpec) -> None:
    ensure_private_dir(paths.pki)
    ca_key, ca_cert = _ensure_ca(paths.pki, spec.name)
    dc = spec.spec.consul.datacenter
    for node in spec.nodes:
        sans = [node.name, "localhost", node.address, "127.0.0.1"]
        if node.name in spec.spec.consul.servers:
            sans.append(f"server.{dc}.consul")
        target = node_cert_paths(paths, node.name)
        _ensure_leaf(target, ca_key, ca_cert, node.name, sans, server=True)
    client = ClusterPaths(paths.root).docker_client
    ensure_private_dir(client)
    _ensure_leaf(
        NodeCertPaths(client / "cert.pem", client / "key.pem"),
        ca_key,
        ca_cert,
        "metalctl-admin",
        [],
        server=False,
    )
    write_public(client / "ca.pem", (paths.pki / "ca.pem").read_text())


def _ensure_ca(pki: Path, cluster: str) -> tuple[_KeyT, x509.Certificate]:
    key_path, cert_path = pki / "ca-key.pem", pki / "ca.pem"
    if key_path.exists() and cert_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key, x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"metalctl {cluster} CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private(key_path, _key_pem(key))
    write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM).decode())
    return key, cert


def _ensure_leaf(
    target: NodeCertPaths,
    ca_key: _KeyT,
    ca_cert: x509.Certificate,
    cn: str,
    sans: list[str],
    *,
    server: bool,
) -> None:
    if target.cert.exists() and target.key.exists() and _leaf_matches(target.cert, ca_cert, sans):
        return
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if server:
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(_general_names(sans)), critical=False
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    target.cert.parent.mkdir(parents=True, exist_ok=True)
    write_private(target.key, _key_pem(key))
    write_public(target.cert, cert.public_bytes(serialization.Encoding.PEM).decode())


def _leaf_matches(cert_path: Path, ca_cert: x509.Certificate, sans: list[str]) -> bool:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if cert.issuer != ca_cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    try:
        have = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return not sans
    return set(have) == set(_general_names(sans))


def _general_names(sans: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for san in dict.fromkeys(sans):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            names.append(x509.DNSName(san))
    return names


def _key_pem(key: _KeyT) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# --- secrets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretPaths:
    gossip_key: Path
    master_token: Path
    acl_tokens: Path
    controller_token: Path  # {accessor, secret} of the membership controller's token


def secret_paths(paths: ClusterPaths) -> SecretPaths:
    return SecretPaths(
        paths.secrets / "gossip.key",
        paths.secrets / "consul-master.token",
        paths.secrets / "consul-tokens.json",
        paths.secrets / "consul-controller.json",
    )


def ensure_cluster_secrets(paths: ClusterPaths, spec: ClusterSpec) -> SecretPaths:
    """Gossip key and Consul tokens: made once, kept 0600, never regenerated by a re-run."""
    ensure_private_dir(paths.secrets)
    sp = secret_paths(paths)
    if not sp.gossip_key.exists():
        write_private(sp.gossip_key, base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    if not sp.master_token.exists():
        write_private(sp.master_token, str(uuid.uuid4()) + "\n")
    tokens: dict[str, dict[str, str]] = {}
    if sp.acl_tokens.exists():
        tokens = json.loads(sp.acl_tokens.read_text())
    missing = [n.name for n in spec.nodes if n.name not in tokens]
    for name in missing:
        tokens[name] = {"accessor": str(uuid.uuid4()), "secret": str(uuid.uuid4())}
    if missing or not sp.acl_tokens.exists():
        write_private(sp.acl_tokens, json.dumps(tokens, indent=2, sort_keys=True) + "\n")
    if not sp.controller_token.exists():
        pair = {"accessor": str(uuid.uuid4()), "secret": str(uuid.uuid4())}
        write_private(sp.controller_token, json.dumps(pair, indent=2) + "\n")
    return sp


def read_master_token(paths: ClusterPaths) -> str:
    return secret_paths(paths).master_token.read_text().strip()


def read_controller_token(paths: ClusterPaths) -> str:
    """The membership controller's Consul token (a narrow policy, not the management one)."""
    path = secret_paths(paths).controller_token
    try:
        return str(json.loads(path.read_text())["secret"])
    except FileNotFoundError:
        raise NotFoundError(
            f"cluster has no controller token ({path})",
            hint=f"the cluster was deployed by an older metalctl: run 'metalctl deploy swarm "
            f"--cluster {paths.root.name}' once, which creates it",
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConflictError(
            f"{path} is not the JSON {{accessor, secret}} metalctl wrote ({exc!r})",
            hint="restore it from a backup; a new one would not match the token in Consul",
        ) from None
