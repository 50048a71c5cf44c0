"""The cluster PKI works for mutual TLS with a real TLS server (OpenSSL via ssl)."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest

from metalctl.paths import ClusterPaths
from metalctl.pki import ensure_cluster_pki, node_cert_paths
from metalctl.spec import parse_spec
from tests.conftest import GOOD_SPEC


def _server(paths: ClusterPaths) -> tuple[int, threading.Thread]:
    node = node_cert_paths(paths, "n1")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(node.cert, node.key)
    # Like dockerd: clients are verified against the admin client CA only.
    ctx.load_verify_locations(paths.pki / "client-ca.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        with listener:
            for _ in range(3):
                conn, _ = listener.accept()
                try:
                    with ctx.wrap_socket(conn, server_side=True) as tls:
                        tls.sendall(b"hello")
                except (ssl.SSLError, OSError):
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return port, t


def test_client_cert_required_and_server_name_checked(tmp_path: Path) -> None:
    paths = ClusterPaths(tmp_path / "c")
    ensure_cluster_pki(paths, parse_spec(GOOD_SPEC))
    port, thread = _server(paths)
    client = paths.docker_client
    ok = ssl.create_default_context(cafile=str(client / "ca.pem"))
    ok.load_cert_chain(client / "cert.pem", client / "key.pem")
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        ok.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.recv(5) == b"hello"
    no_cert = ssl.create_default_context(cafile=str(client / "ca.pem"))
    with (
        pytest.raises((ssl.SSLError, ConnectionResetError, OSError)),
        socket.create_connection(("127.0.0.1", port)) as raw,
        no_cert.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        # TLS 1.3: the refusal arrives on the first read.
        if tls.recv(5) == b"":
            raise ConnectionResetError("closed")
    # Another node's own certificate (what a compromised node holds) is no client identity.
    other = node_cert_paths(paths, "n2")
    as_node = ssl.create_default_context(cafile=str(client / "ca.pem"))
    as_node.load_cert_chain(other.cert, other.key)
    with (
        pytest.raises((ssl.SSLError, ConnectionResetError, OSError)),
        socket.create_connection(("127.0.0.1", port)) as raw,
        as_node.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        if tls.recv(5) == b"":
            raise ConnectionResetError("closed")
    thread.join(timeout=5)
