"""`metalctl provision` and `metalctl power`: a cluster's machines, through its provisioner."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from metalctl import lifecycle, provisioners
from metalctl.errors import ConflictError, MetalctlError
from metalctl.provisioners.base import PowerAction, Say
from metalctl.spec import ClusterSpec
from metalctl.store import Store

# States provision takes a node from; an active node is already provisioned and in use.
PROVISIONABLE = (lifecycle.DISCOVERED, lifecycle.READY, lifecycle.FAILED, lifecycle.PROVISIONING)


@dataclass(frozen=True)
class MachineResult:
    node: str
    state: str
    error: str | None = None


def provision(
    store: Store, spec: ClusterSpec, names: Sequence[str], say: Say
) -> list[MachineResult]:
    """Bring the named nodes (default: every one not yet deployed) to ready, one node at a
    time through 'provisioning'. A node that fails ends 'failed' with the backend's message
    and the others go on; active and retired nodes are skipped, and say so."""
    backend = provisioners.get(spec.spec.provisioner)
    records = {n.name: n for n in store.list_nodes(spec.name)}
    for name in names:
        store.get_node(spec.name, name)  # a clear error for an unknown node, before any change
    targets = list(names) or [n for n, r in records.items() if r.state in PROVISIONABLE]
    results = []
    for name in targets:
        state = records[name].state
        if state not in PROVISIONABLE:
            results.append(MachineResult(name, state, f"skipped: node is '{state}'"))
            continue
        lifecycle.transition(store, spec.name, [name], lifecycle.PROVISIONING, "provision")
        try:
            backend.provision(store, spec, [name], say)
        except MetalctlError as exc:
            lifecycle.transition(
                store, spec.name, [name], lifecycle.FAILED, "provision failed", error=exc.message
            )
            results.append(MachineResult(name, lifecycle.FAILED, exc.message))
            continue
        except BaseException as exc:
            why = "interrupted" if isinstance(exc, KeyboardInterrupt) else repr(exc)
            lifecycle.transition(
                store, spec.name, [name], lifecycle.FAILED, "provision stopped", error=why
            )
            raise
        lifecycle.transition(store, spec.name, [name], lifecycle.READY, "provisioned")
        results.append(MachineResult(name, lifecycle.READY))
    return results


def power(store: Store, spec: ClusterSpec, node: str, action: PowerAction) -> MachineResult:
    record = store.get_node(spec.name, node)
    backend = provisioners.get(spec.spec.provisioner)
    if not backend.capabilities.power:
        raise ConflictError(
            f"cluster {spec.name}'s provisioner '{backend.name}' has no power control",
            hint="power the machine through its BMC or by hand",
        )
    backend.power(spec, node, action)
    return MachineResult(node, record.state)
