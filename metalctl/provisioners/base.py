"""The provisioner interface: what the rest of metalctl may ask of a backend.

A backend brings machines to *ready state* (an OS, SSH with metalctl's key, the right
hostname) and frees them again. The rest of the code asks this interface and the
backend's ``capabilities``, never the backend's name. To add a backend: one module that
defines ``PROVISIONER`` (an object with these methods) and one line in
``metalctl.provisioners.BACKENDS``; see docs/architecture.md.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from metalctl.spec import ClusterSpec
from metalctl.store import Store

Say = Callable[[str], None]
PowerAction = Literal["on", "off", "cycle"]


@dataclass(frozen=True)
class Capabilities:
    # 'nodes add' can make a brand-new machine (lab: a container); otherwise it takes a
    # machine that the spec already names.
    creates_machines: bool
    # power on/off/cycle of a node's machine.
    power: bool
    # provision installs an OS on blank machines (pxe, ironic); otherwise it only checks
    # that machines which already have one are reachable.
    installs_os: bool
    # provision takes ProvisionOptions (provision_with): a bound on nodes in flight
    # (--parallel), inspection (--inspect).
    options: frozenset[str] = frozenset()
    # A re-run of provision without node names leaves ready nodes alone (their OS is
    # installed); otherwise it takes them through provisioning again (checks SSH).
    ready_is_provisioned: bool = False


@dataclass(frozen=True)
class ProvisionOptions:
    # At most this many nodes in flight; the others wait in a queue.
    parallel: int = 1
    # Inspect hardware (Ironic's inspection) before deploying.
    inspect: bool = False

    def given(self) -> set[str]:
        """The options that differ from the defaults (a backend must support them)."""
        default = ProvisionOptions()
        return {
            name
            for name in ("parallel", "inspect")
            if getattr(self, name) != getattr(default, name)
        }


class Provisioner(Protocol):
    name: str
    capabilities: Capabilities

    def enroll(
        self, store: Store, spec: ClusterSpec, reason: str, *, replace: bool = False
    ) -> None:
        """Record a validated spec's nodes in the store, in the state this backend starts
        them in (machines with an OS: ready). Nodes already known keep their state;
        ``replace`` makes this spec the cluster's (nodes it does not list are forgotten)."""

    def provision(
        self,
        store: Store,
        spec: ClusterSpec,
        names: Sequence[str],
        say: Say,
        *,
        timeout: float | None = None,
    ) -> dict[str, str]:
        """Bring the named nodes to ready (SSH with metalctl's key answers); returns
        {node: why} for nodes that failed while others went on (a raise fails them all).
        Backends that install an OS get all nodes at once (they work in parallel);
        ``timeout`` bounds the whole run (None: the backend's default)."""

    def add_machine(
        self, store: Store, spec: ClusterSpec, role: str, name: str | None, say: Say
    ) -> ClusterSpec:
        """Make one more machine ready and return the spec that includes it
        (only when ``capabilities.creates_machines``)."""

    def power(self, spec: ClusterSpec, node: str, action: PowerAction) -> None:
        """Power a node's machine on, off, or off and on (only with ``capabilities.power``)."""

    def release(self, store: Store, spec: ClusterSpec, node: str) -> None:
        """Free a retired node's machine (lab: delete the container; static: nothing)."""


class TunableProvisioner(Provisioner, Protocol):
    """A provisioner whose capabilities list ``options``: provision with them."""

    def provision_with(
        self,
        store: Store,
        spec: ClusterSpec,
        names: Sequence[str],
        say: Say,
        *,
        options: ProvisionOptions,
        timeout: float | None = None,
    ) -> dict[str, str]:
        """``provision`` with options."""


def ssh_banner(address: str, port: int = 22) -> bool:
    """Ready means sshd answers with its banner: a TCP connect alone can succeed before
    (Docker's and QEMU's port forwarding accept connections before the guest listens)."""
    with socket.create_connection((address, port), timeout=3) as sock:
        return sock.recv(8).startswith(b"SSH-")
