"""`metalctl nodes enroll`: tie a discovered machine to a cluster's node by hand."""

from __future__ import annotations

from metalctl.errors import ConflictError
from metalctl.spec import PXE_PROVISIONERS, parse_spec
from metalctl.store import (
    MACHINE_DISCOVERED,
    MACHINE_ENROLLED,
    MACHINE_FAILED,
    MachineRecord,
    Store,
)


def enroll_machine(store: Store, cluster: str, node: str, machine: str) -> MachineRecord:
    record = store.get_cluster(cluster)
    spec = parse_spec(record.spec_yaml, source=f"cluster {cluster}")
    if spec.spec.provisioner not in PXE_PROVISIONERS:
        raise ConflictError(
            f"cluster {cluster} uses provisioner '{spec.spec.provisioner}', which installs no "
            "OS: its nodes have their machines already",
        )
    if node not in {n.name for n in spec.nodes}:
        _unknown(cluster, node)
    found = store.get_machine(machine)
    if found.cluster == cluster and found.node == node:
        return found
    if found.state not in (MACHINE_DISCOVERED, MACHINE_FAILED) or found.node:
        raise ConflictError(
            f"machine {found.id} is {found.state}"
            + (f" as node {found.node} of cluster {found.cluster}" if found.node else ""),
            hint="only a discovered machine can be enrolled",
        )
    taken = [m for m in store.list_machines() if m.cluster == cluster and m.node == node]
    if taken:
        raise ConflictError(f"node {node} of cluster {cluster} has machine {taken[0].id} already")
    return store.set_machine_state(
        found.id, MACHINE_ENROLLED, f"enrolled as {cluster}/{node}", cluster=cluster, node=node
    )


def _unknown(cluster: str, node: str) -> None:
    raise ConflictError(
        f"cluster {cluster} has no node '{node}' in its spec",
        hint="add the node to the spec and register it with -f --replace first",
    )
