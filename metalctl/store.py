"""SQLite inventory: clusters, nodes, facts, lifecycle state and an event log.

WAL mode, one transaction per change: a crash leaves either the old or the new
state, never half of one. Node states change only through ``metalctl.lifecycle``.

Every sqlite3 error leaves this module as a StoreError (or StoreLockedError) naming the
file, so a corrupt, locked or unreachable inventory is a clear message, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metalctl.errors import NotFoundError, StoreError, StoreLockedError, UsageError
from metalctl.paths import metalctl_home

# How long a write waits for another process's transaction before giving up. Deploys
# hold transactions for milliseconds, so 30 s means something is stuck.
DEFAULT_BUSY_TIMEOUT = 30.0
BUSY_TIMEOUT_ENV = "METALCTL_DB_TIMEOUT"

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


def busy_timeout_from_env() -> float:
    """$METALCTL_DB_TIMEOUT in seconds, else DEFAULT_BUSY_TIMEOUT."""
    raw = os.environ.get(BUSY_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_BUSY_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise UsageError(
            f"{BUSY_TIMEOUT_ENV}={raw!r} is not a number of seconds >= 0",
            hint=f"unset it for the default ({DEFAULT_BUSY_TIMEOUT:g} s)",
        )
    return seconds


def _ensure_directory(folder: Path) -> None:
    """Create the inventory's folder, or say why $METALCTL_HOME cannot hold it."""
    hint = "set METALCTL_HOME to a writable directory (or unset it for ~/.local/share/metalctl)"
    if folder.exists() and not folder.is_dir():
        raise StoreError(
            f"{folder} is a file, not a directory: the inventory cannot go there", hint=hint
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {folder}: {exc.strerror or exc}", hint=hint) from exc


def _store_error(path: Path, exc: sqlite3.Error, timeout: float) -> StoreError:
    """The StoreError for one sqlite3 error: what is wrong with which file, and what to do."""
    code = getattr(exc, "sqlite_errorcode", None)
    # Extended codes carry the primary code in their low byte.
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreLockedError(
            f"the inventory {path} is locked: another process kept it busy for more than "
            f"{timeout:g}s ({exc})",
            hint="another metalctl (a deploy, 'swarm reconcile', 'nodes add') is writing; "
            f"retry when it is done, or raise {BUSY_TIMEOUT_ENV} (seconds)",
        )
    if primary in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
        return StoreError(
            f"the inventory {path} is corrupt or not a SQLite database ({exc})",
            hint=f"move it aside (mv {shlex.quote(str(path))} {shlex.quote(f'{path}.broken')}) "
            "and register the clusters again "
            "('metalctl lab up', or -f cluster.yaml); their files under clusters/ are kept",
        )
    if primary in (
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
    ):
        return StoreError(
            f"cannot use the inventory {path}: {exc}",
            hint="check that it is a writable file on a disk with free space, and that "
            "METALCTL_HOME is a writable directory",
        )
    # Anything else (a statement SQLite refuses) is more likely a metalctl bug than a
    # broken host; still a message, not a traceback.
    return StoreError(
        f"the inventory {path} refused a request: {exc}",
        hint="if the file is intact this is a metalctl bug: please report it with this message",
    )


class Store:
    def __init__(self, path: Path | None = None, *, busy_timeout: float | None = None) -> None:
        """Open (creating if need be) the inventory at ``path`` (default
        $METALCTL_HOME/metalctl.db). ``busy_timeout``: seconds a write waits for another
        process's transaction (default $METALCTL_DB_TIMEOUT or 30)."""
        self.path = path or metalctl_home() / "metalctl.db"
        self.busy_timeout = busy_timeout if busy_timeout is not None else busy_timeout_from_env()
        _ensure_directory(self.path.parent)
        with self._sqlite_errors():
            self._db = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            with self._sqlite_errors():
                self._db.row_factory = sqlite3.Row
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA foreign_keys=ON")
                self._db.executescript(SCHEMA)
        except StoreError:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _sqlite_errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise _store_error(self.path, exc, self.busy_timeout) from exc

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._sqlite_errors():
            rows: list[sqlite3.Row] = self._db.execute(sql, args).fetchall()
        return rows

    def _row(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Row | None:
        rows = self._rows(sql, args)
        return rows[0] if rows else None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; rolled back whole on any exception.

        sqlite3 errors raised by the caller's statements leave as StoreError too.
        """
        with self._sqlite_errors():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._rollback()
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error:
                self._rollback()
                raise

    def _rollback(self) -> None:
        # SQLite rolls some failures back by itself (a full disk, an I/O error); a
        # second ROLLBACK would then fail and hide the error that matters.
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    # clusters -----------------------------------------------------------------
    def get_cluster(self, name: str) -> ClusterRecord:
        row = self._row("SELECT * FROM clusters WHERE name = ?", (name,))
        if row is None:
            raise NotFoundError(
                f"no cluster named '{name}'",
                hint="'metalctl lab up --name NAME' creates one, or pass -f cluster.yaml",
            )
        return ClusterRecord(**dict(row))

    def list_clusters(self) -> list[ClusterRecord]:
        rows = self._rows("SELECT * FROM clusters ORDER BY name")
        return [ClusterRecord(**dict(r)) for r in rows]

    # nodes --------------------------------------------------------------------
    def list_nodes(self, cluster: str | None = None) -> list[NodeRecord]:
        if cluster is None:
            rows = self._rows("SELECT * FROM nodes ORDER BY cluster, name")
        else:
            rows = self._rows("SELECT * FROM nodes WHERE cluster = ? ORDER BY name", (cluster,))
        return [self._node(r) for r in rows]

    def find_nodes(self, name: str, cluster: str | None = None) -> list[NodeRecord]:
        sql, args = "SELECT * FROM nodes WHERE name = ?", [name]
        if cluster is not None:
            sql += " AND cluster = ?"
            args.append(cluster)
        return [self._node(r) for r in self._rows(sql, args)]

    def get_node(self, cluster: str, name: str) -> NodeRecord:
        row = self._row("SELECT * FROM nodes WHERE cluster = ? AND name = ?", (cluster, name))
        if row is None:
            raise NotFoundError(
                f"cluster '{cluster}' has no node named '{name}'",
                hint=f"'metalctl nodes list --cluster {cluster}' lists them",
            )
        return self._node(row)

    def _node(self, row: sqlite3.Row) -> NodeRecord:
        facts = {
            r["key"]: json.loads(r["value_json"])
            for r in self._rows(
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
        rows = self._rows(
            "SELECT * FROM (SELECT * FROM events WHERE cluster = ? ORDER BY id DESC LIMIT ?) "
            "ORDER BY id",
            (cluster, limit),
        )
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
