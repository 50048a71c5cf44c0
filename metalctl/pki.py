"""Cluster PKI and secrets, generated once on the admin host and reused on every run.

Two CAs per cluster, so that what a node holds is never what an operator holds
(docs/security.md):

- the cluster CA (``pki/ca.pem``) signs the node certificates (server + client usage,
  used by dockerd and Consul; SANs = name, address, localhost, and
  ``server.<dc>.consul`` for Consul servers so that ``verify_server_hostname`` holds).
  clientAuth stays on them because Consul agents present them as TLS clients for RPC
  with ``verify_incoming``; no dockerd trusts this CA for clients.
- the admin client CA (``pki/client-ca.pem``) signs only the admin client certificate
  (``docker-client/``, clientAuth only, usable as DOCKER_CERT_PATH). dockerd trusts
  this CA alone for clients, so a node's certificate (readable by root on that node)
  opens no other node's Docker API.

``docker-client/ca.pem`` is the cluster CA: it verifies the servers (dockerd, Consul).
Keys and secrets are written 0600. A certificate is re-issued only when its SANs, key
usages or issuing CA changed, or when it expires within RENEW_BEFORE, so a re-deploy
changes nothing on the nodes; a cluster made before the client CA gets its admin
certificate re-issued under it by the next deploy.
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
# Node and admin certificates: one year, renewed by any deploy in their last 30 days.
# Neither dockerd nor Consul 1.8 checks revocation, so a short life is what bounds a
# leaked certificate (see docs/security.md).
CERT_DAYS = 365
RENEW_BEFORE = dt.timedelta(days=30)
NODE_USAGES = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
ADMIN_USAGES = (ExtendedKeyUsageOID.CLIENT_AUTH,)
ADMIN_CN = "metalctl-admin"
_KeyT = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class NodeCertPaths:
    cert: Path
    key: Path


@dataclass(frozen=True)
class CaPaths:
    """Certificates of the two CAs (their keys stay next to them, 0600, on the admin host)."""

    cluster: Path  # signs node certificates; verifies dockerd and Consul servers
    client: Path  # signs the admin client certificate only; dockerd's client CA


def node_cert_paths(paths: ClusterPaths, node: str) -> NodeCertPaths:
    return NodeCertPaths(
        paths.pki / "nodes" / f"{node}.pem", paths.pki / "nodes" / f"{node}-key.pem"
    )


def ca_paths(paths: ClusterPaths) -> CaPaths:
    return CaPaths(paths.pki / "ca.pem", paths.pki / "client-ca.pem")


def admin_cert_paths(paths: ClusterPaths) -> NodeCertPaths:
    return NodeCertPaths(paths.docker_client / "cert.pem", paths.docker_client / "key.pem")


def ensure_cluster_pki(paths: ClusterPaths, spec: ClusterSpec) -> None:
    ensure_private_dir(paths.pki)
    cas = ca_paths(paths)
    ca_key, ca_cert = _ensure_ca(cas.cluster, f"metalctl {spec.name} CA")
    client_ca_key, client_ca_cert = _ensure_ca(cas.client, f"metalctl {spec.name} admin client CA")
    dc = spec.spec.consul.datacenter
    for node in spec.nodes:
        sans = [node.name, "localhost", node.address, "127.0.0.1"]
        if node.name in spec.spec.consul.servers:
            sans.append(f"server.{dc}.consul")
        target = node_cert_paths(paths, node.name)
        _ensure_leaf(target, ca_key, ca_cert, node.name, sans, NODE_USAGES)
    ensure_private_dir(paths.docker_client)
    _ensure_leaf(admin_cert_paths(paths), client_ca_key, client_ca_cert, ADMIN_CN, [], ADMIN_USAGES)
    write_public(paths.docker_client / "ca.pem", cas.cluster.read_text())


def _ensure_ca(cert_path: Path, common_name: str) -> tuple[_KeyT, x509.Certificate]:
    """The CA at ``cert_path`` (key: ``<stem>-key.pem``), made on first use and then kept:
    re-making a CA would re-issue every certificate it signed."""
    key_path = cert_path.with_name(f"{cert_path.stem}-key.pem")
    if key_path.exists() and cert_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key, x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    # Distinct names for the two CAs: issuer names pick the CA that verifies a chain.
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
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
    usages: tuple[x509.ObjectIdentifier, ...],
) -> None:
    if (
        target.cert.exists()
        and target.key.exists()
        and _leaf_matches(target.cert, ca_cert, sans, usages)
    ):
        return
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
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


def _leaf_matches(
    cert_path: Path,
    ca_cert: x509.Certificate,
    sans: list[str],
    usages: tuple[x509.ObjectIdentifier, ...],
) -> bool:
    """Whether the certificate on disk is still the one to use: issued by ``ca_cert``
    (an admin certificate of the single-CA scheme is not), with these key usages and
    SANs, and not within RENEW_BEFORE of its end."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if cert.issuer != ca_cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    if cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < RENEW_BEFORE:
        return False
    try:
        have_usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    if set(have_usages) != set(usages):
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
