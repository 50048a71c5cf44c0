"""A thin typed client of OpenStack Ironic (the bare-metal API), over openstacksdk's
baremetal proxy (docs/ironic.md says why that library).

Only what the ironic provisioner needs. Every call returns plain values or ``IronicNode``;
every failure leaves as a MetalctlError subclass carrying Ironic's own words:

    Ironic not reachable (connection refused, no version document)  IronicUnreachableError (6)
    a cloud that no clouds.yaml has (or that it gets wrong)           HostSetupError (6)
    409, or 400 "can not be performed ... while it is in state"      IronicConflictError (5)
    any other refusal of the API                                     IronicApiError (6)

Waits are not here: the provisioner polls ``node_state`` through metalctl.wait (with
backoff) so that a wait has metalctl's timeout, abort and message.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from metalctl.errors import ClusterAccessError, ConflictError, HostSetupError, MetalctlError

# What a node's state poll asks for: one small GET (fields=...) instead of the whole node.
_STATE_FIELDS = (
    "uuid",
    "name",
    "provision_state",
    "target_provision_state",
    "power_state",
    "target_power_state",
    "last_error",
    "retired",
    "maintenance",
    "maintenance_reason",
)
# The interfaces that reach the BMC: validated before anything else is done to a node.
BMC_INTERFACES = ("power", "management")
# Ironic returns 400 (not 409) for a provision action that the node's state forbids.
_STATE_FORBIDS = ("can not be performed", "cannot be performed", "while it is in state")


class IronicUnreachableError(ClusterAccessError):
    """Ironic's API did not answer (exit 6)."""


class IronicConflictError(ConflictError):
    """Ironic refused because of the node's state, or it is locked (exit 5)."""


class IronicApiError(MetalctlError):
    """Ironic refused a request for another reason; the message is Ironic's (exit 6)."""

    exit_code = 6


@dataclass(frozen=True)
class IronicNode:
    uuid: str
    name: str
    provision_state: str
    target_provision_state: str | None
    power_state: str | None
    target_power_state: str | None
    last_error: str | None
    retired: bool
    maintenance: bool
    maintenance_reason: str | None


@dataclass(frozen=True)
class IronicTarget:
    """Where Ironic is: an endpoint with no auth (standalone Ironic) or a clouds.yaml cloud."""

    endpoint: str | None = None
    cloud: str | None = None

    def describe(self) -> str:
        return f"Ironic at {self.endpoint}" if self.endpoint else f"Ironic of cloud '{self.cloud}'"


class IronicClient:
    """One connection per thread (openstacksdk's sessions are not shared across threads)."""

    def __init__(self, target: IronicTarget, *, timeout: float = 60.0) -> None:
        self.target = target
        self._timeout = timeout
        self._local = threading.local()

    def _proxy(self) -> Any:
        proxy = getattr(self._local, "proxy", None)
        if proxy is None:
            proxy = self._connect().baremetal
            self._local.proxy = proxy
        return proxy

    def _common(self) -> dict[str, Any]:
        # 409 (node locked by a conductor) and 503 are retried by the proxy itself.
        return {"api_timeout": self._timeout, "baremetal_status_code_retries": 5}

    def check_config(self) -> None:
        """A cloud target: its clouds.yaml entry exists and is usable (read locally,
        Ironic is not contacted). Raises HostSetupError naming the cloud."""
        if self.target.endpoint:
            return
        import openstack.config

        with self._errors("read clouds.yaml"):
            openstack.config.get_cloud_region(cloud=self.target.cloud, **self._common())

    def _connect(self) -> Any:
        import openstack  # slow to import: only when a cluster uses Ironic

        common = self._common()
        with self._errors("connect"):
            if self.target.endpoint:
                return openstack.connect(
                    auth_type="none",
                    baremetal_endpoint_override=self.target.endpoint,
                    load_yaml_config=False,
                    load_envvars=False,
                    **common,
                )
            return openstack.connect(cloud=self.target.cloud, **common)

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        from keystoneauth1 import exceptions as ksa
        from openstack import exceptions as sdk

        try:
            yield
        except (ksa.ConnectionError, ksa.DiscoveryFailure) as exc:
            raise IronicUnreachableError(
                f"{self.target.describe()} is unreachable ({what}): {_first_line(exc)}",
                hint="is Ironic running? check spec.ironic; re-run once it answers: nodes "
                "resume from their Ironic state",
            ) from exc
        except sdk.HttpException as exc:
            raise _refusal(what, exc) from exc
        except (sdk.ConfigException, ksa.AuthPluginException) as exc:
            # A cloud no clouds.yaml has, an unknown auth_type or one missing its options.
            raise HostSetupError(
                f"{self.target.describe()}: {exc}",
                hint="clouds.yaml is read from $OS_CLIENT_CONFIG_FILE, ./clouds.yaml, "
                "~/.config/openstack/clouds.yaml or /etc/openstack/clouds.yaml",
            ) from exc

    # -- nodes ------------------------------------------------------------------------

    def find_node(self, name: str) -> IronicNode | None:
        from openstack import exceptions as sdk

        try:
            with self._errors(f"find node {name}"):
                raw = self._proxy().get_node(name, fields=_STATE_FIELDS)
        except IronicApiError as exc:
            if isinstance(exc.__cause__, sdk.NotFoundException):
                return None
            raise
        return _node(raw)

    def list_nodes(self) -> list[IronicNode]:
        """Every node (one paginated list with the state fields): a run with many nodes
        looks them up once instead of once per node."""
        with self._errors("list nodes"):
            return [_node(raw) for raw in self._proxy().nodes(fields=_STATE_FIELDS)]

    def node_state(self, ident: str) -> IronicNode:
        with self._errors(f"read node {ident}"):
            return _node(self._proxy().get_node(ident, fields=_STATE_FIELDS))

    def create_node(
        self,
        name: str,
        driver: str,
        driver_info: Mapping[str, Any],
        interfaces: Mapping[str, str],
    ) -> IronicNode:
        attrs = {f"{k}_interface": v for k, v in interfaces.items()}
        with self._errors(f"enroll node {name}"):
            raw = self._proxy().create_node(
                name=name, driver=driver, driver_info=dict(driver_info), **attrs
            )
        return _node(raw)

    def update_node(self, ident: str, **fields: Any) -> None:
        """Set top-level node fields (driver_info, instance_info, retired, ...); each value
        replaces the old one."""
        with self._errors(f"update node {ident} ({', '.join(sorted(fields))})"):
            self._proxy().update_node(ident, **fields)

    def validate(self, ident: str, interfaces: Sequence[str]) -> dict[str, str]:
        """{interface: Ironic's reason} for each of ``interfaces`` that fails validation."""
        with self._errors(f"validate node {ident}"):
            results = self._proxy().validate_node(ident, required=())
        return {
            name: str(results[name].reason or "invalid")
            for name in interfaces
            if name in results and results[name].result is False
        }

    def set_provision_state(
        self, ident: str, verb: str, *, config_drive: Mapping[str, Any] | None = None
    ) -> None:
        """Start a provision action (manage, inspect, provide, active, deleted); returns
        at once (202): the caller waits for the node's state."""
        with self._errors(f"'{verb}' on node {ident}"):
            self._proxy().set_node_provision_state(
                ident, verb, config_drive=dict(config_drive) if config_drive else None
            )

    def set_power_state(self, ident: str, target: str) -> None:
        """power on, power off, rebooting; returns at once."""
        with self._errors(f"'{target}' on node {ident}"):
            self._proxy().set_node_power_state(ident, target, wait=False)

    # -- ports ------------------------------------------------------------------------

    def port_macs(self, node_uuid: str) -> set[str]:
        with self._errors(f"list ports of node {node_uuid}"):
            return {p.address for p in self._proxy().ports(node_uuid=node_uuid, fields=["address"])}

    def all_port_macs(self) -> dict[str, set[str]]:
        """{node uuid: its ports' MACs} of every port (one paginated list)."""
        found: dict[str, set[str]] = {}
        with self._errors("list ports"):
            for port in self._proxy().ports(fields=["address", "node_uuid"]):
                found.setdefault(str(port.node_id), set()).add(str(port.address))
        return found

    def create_port(self, node_uuid: str, mac: str) -> None:
        with self._errors(f"add port {mac} to node {node_uuid}"):
            self._proxy().create_port(node_uuid=node_uuid, address=mac)


def _node(raw: Any) -> IronicNode:
    return IronicNode(
        uuid=str(raw.id),
        name=str(raw.name or raw.id),
        provision_state=str(raw.provision_state),
        target_provision_state=raw.target_provision_state,
        power_state=raw.power_state,
        target_power_state=raw.target_power_state,
        last_error=raw.last_error,
        retired=bool(raw.is_retired),
        maintenance=bool(raw.is_maintenance),
        maintenance_reason=raw.maintenance_reason,
    )


def _refusal(what: str, exc: Any) -> MetalctlError:
    """Ironic's own words (its faultstring), classed by what the caller can do about it."""
    words = str(exc.details or exc.message or exc).strip()
    text = f"Ironic refused {what}: {words}"
    status = getattr(exc, "status_code", None)
    if status == 409 or (status == 400 and any(s in words for s in _STATE_FORBIDS)):
        return IronicConflictError(text)
    return IronicApiError(text)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
