"""A real Consul agent in dev mode on loopback, for tests and benchmarks.

Dev mode: one in-memory server, no ACLs and plain HTTP (the controller code under test is
the same; TLS and ACLs are covered by the e2e tests on lab nodes). Every port is a free
loopback port, so several can run side by side.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from metalctl.paths import metalctl_home

CONSUL_VERSION = "1.8.7"
# The node check our catalog-only stand-in nodes carry instead of serfHealth: the Consul
# leader reaps (every 60 s) catalog nodes that have serfHealth but are no serf members.
# Clients of the stand-ins use ConsulApi(..., member_check=MEMBER_CHECK).
MEMBER_CHECK = "metalctl-test-member"


def consul_binary() -> Path:
    return metalctl_home() / "artifacts" / "consul" / CONSUL_VERSION / "consul"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def consul_dev_agent(node: str = "dev") -> Iterator[str]:
    """Start ``consul agent -dev`` and yield its HTTP URL; stopped afterwards."""
    binary = consul_binary()
    if not binary.exists():
        raise RuntimeError(f"no Consul binary at {binary}: run 'make setup'")
    ports = {k: _free_port() for k in ("http", "server", "serf_lan", "serf_wan")}
    hcl = (
        f"ports {{ http = {ports['http']}, server = {ports['server']}, "
        f"serf_lan = {ports['serf_lan']}, serf_wan = {ports['serf_wan']}, "
        "dns = -1, grpc = -1 }"
    )
    with tempfile.TemporaryDirectory() as tmp:
        log = open(Path(tmp) / "consul.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [str(binary), "agent", "-dev", "-node", node, "-bind", "127.0.0.1",
             "-client", "127.0.0.1", "-hcl", hcl],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        url = f"http://127.0.0.1:{ports['http']}"
        try:
            _wait_for_leader(url, proc)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def _wait_for_leader(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"consul agent exited with {proc.returncode}")
        try:
            if requests.get(f"{url}/v1/status/leader", timeout=2).json():
                return
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.2)
    raise RuntimeError("consul dev agent elected no leader in 30s")


def register(
    url: str,
    node: str,
    address: str,
    role: str,
    status: str,
    session: requests.Session,
    *,
    member: bool = True,
) -> None:
    """A catalog registration of ``swarm-node`` as a live node has it: a passing
    membership check (``MEMBER_CHECK``, standing in for the leader's serfHealth) and the
    service's check. ``member=False``: without it, as a leaving agent's last sync writes it."""
    body = {
        "Node": node,
        "Address": address,
        "Service": {
            "ID": "swarm-node",
            "Service": "swarm-node",
            "Address": address,
            "Port": 2376,
            "Meta": {"role": role},
        },
        "Checks": [
            *(
                [{"CheckID": MEMBER_CHECK, "Name": "membership", "Status": "passing"}]
                if member
                else []
            ),
            {
                "CheckID": "swarm-node-docker-api",
                "Name": "Docker TLS API",
                "ServiceID": "swarm-node",
                "Status": status,
            },
        ],
    }
    session.put(f"{url}/v1/catalog/register", json=body, timeout=10).raise_for_status()


def deregister(url: str, node: str, session: requests.Session, *, whole_node: bool = False) -> None:
    """Deregister the service (as ``consul services deregister``), or with ``whole_node``
    the node and all its checks (as the Consul leader does when a member leaves)."""
    body = {"Node": node} if whole_node else {"Node": node, "ServiceID": "swarm-node"}
    session.put(f"{url}/v1/catalog/deregister", json=body, timeout=10).raise_for_status()
