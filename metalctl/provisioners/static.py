"""The static provisioner: machines that already have an OS and an SSH login.

Nothing is installed or powered: enrolling records the spec's machines as ready, and
provisioning only checks that each one's SSH answers with an SSH banner.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from metalctl import lifecycle
from metalctl.errors import ConflictError
from metalctl.provisioners.base import Capabilities, PowerAction, Provisioner, Say, ssh_banner
from metalctl.spec import ClusterSpec
from metalctl.store import Store
from metalctl.wait import wait_for

SSH_WAIT_SECONDS = 60.0


class StaticProvisioner:
    name = "static"
    capabilities = Capabilities(creates_machines=False, power=False, installs_os=False)

    def enroll(
        self, store: Store, spec: ClusterSpec, reason: str, *, replace: bool = False
    ) -> None:
        lifecycle.register_cluster(
            store, spec, initial_state=lifecycle.READY, reason=reason, replace=replace
        )

    def provision(
        self,
        store: Store,
        spec: ClusterSpec,
        names: Sequence[str],
        say: Say,
        *,
        timeout: float | None = None,
    ) -> dict[str, str]:
        for name in names:
            node = spec.node(name)
            say(f"{name}: checking SSH on {node.address}:{node.ssh.port}")
            wait_for(
                functools.partial(ssh_banner, node.address, node.ssh.port),
                what=f"node {name}: an SSH banner on {node.address}:{node.ssh.port}",
                timeout=SSH_WAIT_SECONDS,
                interval=1.0,
                hint="a static machine must already run sshd with metalctl's key "
                "(metalctl's public key: $METALCTL_HOME/ssh/id_ed25519.pub)",
            )
        return {}

    def add_machine(
        self, store: Store, spec: ClusterSpec, role: str, name: str | None, say: Say
    ) -> ClusterSpec:
        raise ConflictError(
            f"cluster {spec.name} uses provisioner 'static', which cannot create machines",
            hint="add the machine to the spec's nodes, register it with -f, then "
            "'metalctl nodes add --name NODE'",
        )

    def power(self, spec: ClusterSpec, node: str, action: PowerAction) -> None:
        raise ConflictError(
            f"cluster {spec.name} uses provisioner 'static', which has no power control",
            hint="power the machine through its BMC or by hand",
        )

    def release(self, store: Store, spec: ClusterSpec, node: str) -> None:
        """The machine keeps its OS; nothing to free."""


PROVISIONER: Provisioner = StaticProvisioner()
