"""`metalctl provision` and `metalctl power`: a cluster's machines, through its provisioner."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from metalctl import lifecycle, provisioners
from metalctl.errors import ConflictError, MetalctlError, ProvisionError, UsageError
from metalctl.provisioners.base import (
    PowerAction,
    Provisioner,
    ProvisionOptions,
    Say,
    TunableProvisioner,
)
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
    store: Store,
    spec: ClusterSpec,
    names: Sequence[str],
    say: Say,
    *,
    timeout: float | None = None,
    options: ProvisionOptions | None = None,
) -> list[MachineResult]:
    """Bring the named nodes (default: every one not yet deployed) to ready through
    'provisioning'. A node that fails ends 'failed' with the backend's message and the
    others go on; active and retired nodes are skipped, and say so. Backends that install
    an OS get all nodes in one call (they write images in parallel); others one by one.
    ``options`` (--parallel, --inspect) only for backends that take them."""
    backend = provisioners.get(spec.spec.provisioner)
    unsupported = (options.given() if options else set()) - backend.capabilities.options
    if unsupported:
        raise UsageError(
            f"--{' --'.join(sorted(unsupported))}: provisioner '{backend.name}' of cluster "
            f"{spec.name} does not take it"
        )
    records = {n.name: n for n in store.list_nodes(spec.name)}
    for name in names:
        store.get_node(spec.name, name)  # a clear error for an unknown node, before any change
    default_from: tuple[str, ...] = PROVISIONABLE
    if backend.capabilities.ready_is_provisioned:
        default_from = tuple(s for s in PROVISIONABLE if s != lifecycle.READY)
    targets = list(names) or [n for n, r in records.items() if r.state in default_from]
    results = [
        MachineResult(n, records[n].state, f"skipped: node is '{records[n].state}'")
        for n in targets
        if records[n].state not in PROVISIONABLE
    ]
    todo = [n for n in targets if records[n].state in PROVISIONABLE]
    batches = [todo] if backend.capabilities.installs_os else [[n] for n in todo]
    for batch in batches:
        if batch:
            results += _provision_batch(store, spec, backend, batch, say, timeout, options)
    return results


def provision_unready(store: Store, spec: ClusterSpec, say: Say) -> list[MachineResult]:
    """Before a deploy of a spec that says ``provision: true``: the nodes not yet ready
    (lifecycle.not_yet_ready) through the cluster's provisioner, with its defaults.
    Raises ProvisionError naming those that failed: the deploy must not start."""
    names = lifecycle.not_yet_ready(store, spec.name) if spec.spec.provision else []
    if not names:
        return []
    say(f"provision: true: provisioning {', '.join(names)} first")
    results = provision(store, spec, names, say)
    failed = [r for r in results if r.state == lifecycle.FAILED]
    if failed:
        raise ProvisionError(
            f"provision before deploy: {len(failed)} node(s) failed: "
            + "; ".join(f"{r.node}: {r.error}" for r in failed[:5]),
            hint=f"'metalctl nodes show NODE -c {spec.name}' has the reason; fix it and "
            "re-run (ready nodes are not provisioned again)",
        )
    return results


def _provision_batch(
    store: Store,
    spec: ClusterSpec,
    backend: Provisioner,
    names: list[str],
    say: Say,
    timeout: float | None,
    options: ProvisionOptions | None,
) -> list[MachineResult]:
    lifecycle.transition(store, spec.name, names, lifecycle.PROVISIONING, "provision")
    try:
        if backend.capabilities.options:
            tunable = cast("TunableProvisioner", backend)  # the capability promises it
            failed = tunable.provision_with(
                store, spec, names, say, options=options or ProvisionOptions(), timeout=timeout
            )
        else:
            failed = backend.provision(store, spec, names, say, timeout=timeout)
    except MetalctlError as exc:
        failed = {name: exc.message for name in names}
    except BaseException as exc:
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else repr(exc)
        lifecycle.transition(
            store, spec.name, names, lifecycle.FAILED, "provision stopped", error=why
        )
        raise
    results = []
    for name in names:
        if name in failed:
            lifecycle.transition(
                store, spec.name, [name], lifecycle.FAILED, "provision failed", error=failed[name]
            )
            results.append(MachineResult(name, lifecycle.FAILED, failed[name]))
        else:
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


# States release takes a node from: provisioned or failed, not in the swarm.
RELEASABLE = (lifecycle.READY, lifecycle.FAILED, lifecycle.RETIRED)


def release(
    store: Store,
    spec: ClusterSpec,
    names: Sequence[str],
    say: Say,
    *,
    keep: bool = False,
    parallel: int = 1,
) -> list[MachineResult]:
    """Retire nodes that are not in the swarm: the backend frees each machine (ironic:
    undeploy, which cleans its disk, then retired in Ironic), then the node is 'retired'.
    ``keep`` leaves the machine as it is (deployed) and only retires the node. All nodes
    are checked before any is touched; swarm members are refused ('nodes remove' them).
    ``parallel`` > 1 (backends that take it) frees that many machines at once. A machine
    that cannot be freed leaves its node as it was, with the reason; the others go on."""
    backend = provisioners.get(spec.spec.provisioner)
    if parallel > 1 and "parallel" not in backend.capabilities.options:
        raise UsageError(
            f"--parallel: provisioner '{backend.name}' of cluster {spec.name} does not take it"
        )
    records = [store.get_node(spec.name, name) for name in names]
    for record in records:
        if record.state not in RELEASABLE:
            raise ConflictError(
                f"node {record.name} is '{record.state}'; release takes a ready, failed or "
                "retired node",
                hint="a swarm member leaves with 'metalctl nodes remove' (which releases it); "
                "a node being provisioned: wait for it, or re-run provision",
            )
    reason = "released, machine kept" if keep else "released"
    results = []

    def free(name: str) -> str | None:
        if keep:
            return None
        say(f"{name}: releasing its machine ({backend.name})")
        try:
            backend.release(store, spec, name)
        except MetalctlError as exc:
            say(f"{name}: {exc.message}")
            return exc.message
        return None

    # Machines are freed in worker threads; the store is written here, in this thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
        for record, error in zip(records, pool.map(free, [r.name for r in records]), strict=True):
            if error is None:
                lifecycle.transition(store, spec.name, [record.name], lifecycle.RETIRED, reason)
            results.append(
                MachineResult(
                    record.name, lifecycle.RETIRED if error is None else record.state, error
                )
            )
    return results
