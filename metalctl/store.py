"""SQLite inventory: clusters, nodes, facts, lifecycle state and an event log.

WAL mode, one transaction per change: a crash leaves either the old or the new
state, never half of one. Node states change only through ``metalctl.lifecycle``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metalctl.errors import NotFoundError
from metalctl.paths import metalctl_home

SCHEMA = """
CREATE TABLE IF NOT EXISTS clusters (
    name        TEXT PRIMARY KEY,
    provisioner TEXT NOT NULL,
    spec_yaml   TEXT NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
    cluster     TEXT NOT NULL REFERENCES clusters(name) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    address     TEXT NOT NULL,
    role        TEXT NOT NULL,
    state       TEXT NOT NULL,
    labels_json TEXT NOT NULL DEFAULT '{}',
    last_error  TEXT,
    updated_at  REAL NOT NULL,
    PRIMARY KEY (cluster, name)
);
CREATE TABLE IF NOT EXISTS facts (
    cluster     TEXT NOT NULL,
    node        TEXT NOT NULL,
    key         TEXT NOT NULL,
    value_json  TEXT NOT NULL,
    PRIMARY KEY (cluster, node, key),
    FOREIGN KEY (cluster, node) REFERENCES nodes(cluster, name) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    ts          REAL NOT NULL,
    cluster     TEXT NOT NULL,
    node        TEXT,
    kind        TEXT NOT NULL,
    from_state  TEXT,
    to_state    TEXT,
    reason      TEXT NOT NULL,
    actor       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_cluster ON events(cluster, id);
"""


@dataclass(frozen=True)
class NodeRecord:
    cluster: str
    name: str
    address: str
    role: str
    state: str
    labels: dict[str, str]
    last_error: str | None
    updated_at: float
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterRecord:
    name: str
    provisioner: str
    spec_yaml: str
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class EventRecord:
    id: int
    ts: float
    cluster: str
    node: str | None
    kind: str
    from_state: str | None
    to_state: str | None
    reason: str
    actor: str


class Store:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or metalctl_home() / "metalctl.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; rolled back whole on any exception."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # clusters -----------------------------------------------------------------
    def get_cluster(self, name: str) -> ClusterRecord:
        row = self._db.execute("SELECT * FROM clusters WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(
                f"no cluster named '{name}'",
                hint="'metalctl lab up --name NAME' creates one, or pass -f cluster.yaml",
            )
        return ClusterRecord(**dict(row))

    def list_clusters(self) -> list[ClusterRecord]:
        rows = self._db.execute("SELECT * FROM clusters ORDER BY name").fetchall()
        return [ClusterRecord(**dict(r)) for r in rows]

    # nodes --------------------------------------------------------------------
    def list_nodes(self, cluster: str | None = None) -> list[NodeRecord]:
        if cluster is None:
            rows = self._db.execute("SELECT * FROM nodes ORDER BY cluster, name").fetchall()
        else:
            rows = self._db.execute(
                "SELECT * FROM nodes WHERE cluster = ? ORDER BY name", (cluster,)
            ).fetchall()
        return [self._node(r) for r in rows]

    def find_nodes(self, name: str, cluster: str | None = None) -> list[NodeRecord]:
        sql, args = "SELECT * FROM nodes WHERE name = ?", [name]
        if cluster is not None:
            sql += " AND cluster = ?"
            args.append(cluster)
        return [self._node(r) for r in self._db.execute(sql, args).fetchall()]

    def get_node(self, cluster: str, name: str) -> NodeRecord:
        row = self._db.execute(
            "SELECT * FROM nodes WHERE cluster = ? AND name = ?", (cluster, name)
        ).fetchone()
        if row is None:
            raise NotFoundError(
                f"cluster '{cluster}' has no node named '{name}'",
                hint=f"'metalctl nodes list --cluster {cluster}' lists them",
            )
        return self._node(row)

    def _node(self, row: sqlite3.Row) -> NodeRecord:
        facts = {
            r["key"]: json.loads(r["value_json"])
            for r in self._db.execute(
                "SELECT key, value_json FROM facts WHERE cluster = ? AND node = ? ORDER BY key",
                (row["cluster"], row["name"]),
            )
        }
        return NodeRecord(
            cluster=row["cluster"],
            name=row["name"],
            address=row["address"],
            role=row["role"],
            state=row["state"],
            labels=json.loads(row["labels_json"]),
            last_error=row["last_error"],
            updated_at=row["updated_at"],
            facts=facts,
        )

    def set_facts(self, cluster: str, node: str, facts: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO facts (cluster, node, key, value_json) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (cluster, node, key) DO UPDATE SET value_json = excluded.value_json",
                [(cluster, node, k, json.dumps(v)) for k, v in facts.items()],
            )

    # events -------------------------------------------------------------------
    def list_events(self, cluster: str, limit: int = 200) -> list[EventRecord]:
        rows = self._db.execute(
            "SELECT * FROM (SELECT * FROM events WHERE cluster = ? ORDER BY id DESC LIMIT ?) "
            "ORDER BY id",
            (cluster, limit),
        ).fetchall()
        return [EventRecord(**dict(r)) for r in rows]


def add_event(
    db: sqlite3.Connection,
    cluster: str,
    kind: str,
    reason: str,
    *,
    node: str | None = None,
    from_state: str | None = None,
    to_state: str | None = None,
    actor: str = "metalctl",
) -> None:
    """Append an event inside the caller's transaction."""
    db.execute(
        "INSERT INTO events (ts, cluster, node, kind, from_state, to_state, reason, actor) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (time.time(), cluster, node, kind, from_state, to_state, reason, actor),
    )
