"""The node state machine: the only place that changes a node's state.

    discovered -> provisioning -> ready -> deploying -> active -> leaving -> retired
         \\______________\\_______________ failed <______/__________/

Every transition is one SQLite transaction that updates the node and appends an
event (who, when, from, to, why). ``failed`` keeps ``last_error`` and allows a retry.
"""

from __future__ import annotations

import json
import sqlite3
import time

from metalctl.errors import ConflictError, InvalidTransitionError, NotFoundError
from metalctl.spec import ClusterSpec
from metalctl.store import Store, add_event

DISCOVERED, PROVISIONING, READY = "discovered", "provisioning", "ready"
DEPLOYING, ACTIVE, LEAVING, RETIRED, FAILED = "deploying", "active", "leaving", "retired", "failed"

TRANSITIONS: dict[str, frozenset[str]] = {
    DISCOVERED: frozenset({PROVISIONING, FAILED}),
    PROVISIONING: frozenset({READY, FAILED}),
    READY: frozenset({DEPLOYING, PROVISIONING, RETIRED}),
    # A re-deploy of an active node goes through deploying again.
    DEPLOYING: frozenset({ACTIVE, FAILED}),
    ACTIVE: frozenset({DEPLOYING, LEAVING, FAILED}),
    LEAVING: frozenset({RETIRED, FAILED}),
    RETIRED: frozenset({PROVISIONING, READY}),
    FAILED: frozenset({PROVISIONING, READY, DEPLOYING, LEAVING, RETIRED}),
}


# A node in these states has no OS known to be in place: provision takes it to ready.
_BEFORE_READY = (DISCOVERED, PROVISIONING)


def not_yet_ready(store: Store, cluster: str) -> list[str]:
    """Nodes that have not been ready since their provisioning began: discovered,
    provisioning (a run that stopped), or failed while being provisioned. A node that
    failed in a deploy or while leaving has its OS, and is not one of them."""
    failed_from = store.failed_from(cluster)
    return [
        n.name
        for n in store.list_nodes(cluster)
        if n.state in _BEFORE_READY
        or (n.state == FAILED and failed_from.get(n.name) in _BEFORE_READY)
    ]


def can_transition(current: str, wanted: str) -> bool:
    return wanted in TRANSITIONS.get(current, frozenset())


def transition(
    store: Store,
    cluster: str,
    names: list[str],
    to: str,
    reason: str,
    *,
    error: str | None = None,
    actor: str = "metalctl",
) -> None:
    """Move ``names`` to state ``to`` in one transaction; all or none."""
    with store.transaction() as db:
        for name in names:
            row = db.execute(
                "SELECT state FROM nodes WHERE cluster = ? AND name = ?", (cluster, name)
            ).fetchone()
            if row is None:
                raise NotFoundError(f"cluster '{cluster}' has no node named '{name}'")
            current = row["state"]
            if current == to:
                continue
            if not can_transition(current, to):
                raise InvalidTransitionError(name, current, to)
            db.execute(
                "UPDATE nodes SET state = ?, last_error = ?, updated_at = ? "
                "WHERE cluster = ? AND name = ?",
                (to, error if to == FAILED else None, time.time(), cluster, name),
            )
            add_event(
                db,
                cluster,
                "state",
                reason,
                node=name,
                from_state=current,
                to_state=to,
                actor=actor,
            )


def register_cluster(
    store: Store, spec: ClusterSpec, *, initial_state: str, reason: str, replace: bool = False
) -> None:
    """Record a validated cluster spec and its nodes in one transaction.

    New nodes enter at ``initial_state``; nodes already known keep their state
    (a re-registration must not undo a deploy). ``replace=False`` refuses an
    existing cluster of another provisioner so that two specs cannot fight over a name;
    ``replace=True`` makes this spec the cluster's: nodes it does not list are forgotten.
    """
    now = time.time()
    with store.transaction() as db:
        row = db.execute("SELECT provisioner FROM clusters WHERE name = ?", (spec.name,)).fetchone()
        if row is not None and not replace and row["provisioner"] != spec.spec.provisioner:
            raise ConflictError(
                f"cluster '{spec.name}' already exists with provisioner '{row['provisioner']}'",
                hint="pick another metadata.name, or remove the old cluster first",
            )
        db.execute(
            "INSERT INTO clusters (name, provisioner, spec_yaml, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
            "provisioner = excluded.provisioner, spec_yaml = excluded.spec_yaml, "
            "updated_at = excluded.updated_at",
            (spec.name, spec.spec.provisioner, spec.to_yaml(), now, now),
        )
        for node in spec.nodes:
            existing = db.execute(
                "SELECT state FROM nodes WHERE cluster = ? AND name = ?", (spec.name, node.name)
            ).fetchone()
            db.execute(
                "INSERT INTO nodes (cluster, name, address, role, state, labels_json, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(cluster, name) DO UPDATE SET "
                "address = excluded.address, role = excluded.role, "
                "labels_json = excluded.labels_json, updated_at = excluded.updated_at",
                (
                    spec.name,
                    node.name,
                    node.address,
                    spec.role_of(node.name),
                    initial_state,
                    json.dumps(node.labels),
                    now,
                ),
            )
            if existing is None:
                add_event(db, spec.name, "state", reason, node=node.name, to_state=initial_state)
        if replace:
            _forget_unlisted(db, spec, reason)


def _forget_unlisted(db: sqlite3.Connection, spec: ClusterSpec, reason: str) -> None:
    listed = {n.name for n in spec.nodes}
    rows = db.execute("SELECT name, state FROM nodes WHERE cluster = ?", (spec.name,)).fetchall()
    for row in rows:
        if row["name"] in listed:
            continue
        db.execute("DELETE FROM facts WHERE cluster = ? AND node = ?", (spec.name, row["name"]))
        db.execute("DELETE FROM nodes WHERE cluster = ? AND name = ?", (spec.name, row["name"]))
        add_event(
            db,
            spec.name,
            "forgotten",
            f"{reason}: not in the new spec",
            node=row["name"],
            from_state=row["state"],
        )


def forget_cluster(store: Store, name: str, reason: str) -> None:
    with store.transaction() as db:
        db.execute("DELETE FROM facts WHERE cluster = ?", (name,))
        db.execute("DELETE FROM nodes WHERE cluster = ?", (name,))
        db.execute("DELETE FROM clusters WHERE name = ?", (name,))
        add_event(db, name, "cluster", reason)
