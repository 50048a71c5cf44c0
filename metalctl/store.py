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
-- Machines seen by the boot service (PXE), tied to a cluster node only once enrolled.
CREATE TABLE IF NOT EXISTS machines (
    id          TEXT PRIMARY KEY,
    primary_mac TEXT NOT NULL UNIQUE,
    macs_json   TEXT NOT NULL,
    smbios_uuid TEXT UNIQUE,
    serial      TEXT,
    facts_json  TEXT NOT NULL,
    state       TEXT NOT NULL,
    cluster     TEXT,
    node        TEXT,
    first_seen  REAL NOT NULL,
    last_seen   REAL NOT NULL
);
-- Every MAC of every machine: a machine is found by any of its NICs, and no NIC can
-- belong to two machines.
CREATE TABLE IF NOT EXISTS machine_macs (
    mac         TEXT PRIMARY KEY,
    machine_id  TEXT NOT NULL REFERENCES machines(id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS machine_macs_by_machine ON machine_macs(machine_id);
-- Per-boot discovery tokens; only a token's SHA-256 is kept, never the token.
CREATE TABLE IF NOT EXISTS boot_tokens (
    hash        TEXT PRIMARY KEY,
    mac         TEXT NOT NULL,
    issued_at   REAL NOT NULL,
    expires_at  REAL NOT NULL,
    used_at     REAL
);
CREATE INDEX IF NOT EXISTS boot_tokens_by_expiry ON boot_tokens(expires_at);
-- One deployment (OS image to disk) per machine: the latest. metalctl.deployments.
CREATE TABLE IF NOT EXISTS deployments (
    machine_id   TEXT PRIMARY KEY REFERENCES machines(id) ON DELETE CASCADE,
    cluster      TEXT NOT NULL,
    node         TEXT NOT NULL,
    job_json     TEXT NOT NULL,
    token_hash   TEXT UNIQUE,
    token_expires_at REAL,
    status       TEXT NOT NULL,
    phase        TEXT NOT NULL,
    bytes_sent   INTEGER NOT NULL DEFAULT 0,
    message      TEXT,
    result_json  TEXT,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL,
    finished_at  REAL
);
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

    def failed_from(self, cluster: str) -> dict[str, str | None]:
        """{node: the state it failed from} for the cluster's nodes that are 'failed' now
        (from their last transition into 'failed')."""
        rows = self._rows(
            "SELECT e.node, e.from_state FROM events e JOIN nodes n "
            "ON n.cluster = e.cluster AND n.name = e.node "
            "WHERE e.cluster = ? AND n.state = 'failed' AND e.to_state = 'failed' "
            "ORDER BY e.id",
            (cluster,),
        )
        return {r["node"]: r["from_state"] for r in rows}

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

    # machines seen by the boot service ------------------------------------------
    def list_machines(self, state: str | None = None) -> list[MachineRecord]:
        sql, args = "SELECT * FROM machines", []
        if state is not None:
            sql += " WHERE state = ?"
            args.append(state)
        rows = self._db.execute(sql + " ORDER BY first_seen, id", args).fetchall()
        return [_machine(r) for r in rows]

    def find_machine(self, mac_or_id: str) -> MachineRecord | None:
        """The machine with this id, or with this MAC on any of its NICs (any case, : or -)."""
        key = _mac_or_id_key(mac_or_id)
        row = self._db.execute(
            "SELECT * FROM machines WHERE id = ? "
            "OR id = (SELECT machine_id FROM machine_macs WHERE mac = ?)",
            (key, key),
        ).fetchone()
        return None if row is None else _machine(row)

    def get_machine(self, mac_or_id: str) -> MachineRecord:
        machine = self.find_machine(mac_or_id)
        if machine is None:
            raise NotFoundError(
                f"no machine with id or MAC '{mac_or_id}'",
                hint="machines appear once they PXE-boot the discovery image",
            )
        return machine

    def upsert_discovered(
        self, facts: dict[str, Any], *, boot_mac: str | None = None
    ) -> MachineRecord:
        """Record a discovery report without a boot token (see ``discovery``)."""
        with self.discovery(facts, boot_mac=boot_mac) as attempt:
            pass
        assert attempt.result is not None  # set by discovery() once the body returned
        return attempt.result

    @contextmanager
    def discovery(
        self,
        facts: dict[str, Any],
        *,
        boot_mac: str | None = None,
        token_hash: str | None = None,
        now: float | None = None,
    ) -> Iterator[DiscoveryAttempt]:
        """One discovery report as one transaction.

        ``facts`` is a validated facts document (``nics[].mac``, ``dmi.uuid``,
        ``dmi.serial`` identify the machine). The machine it belongs to (any MAC or the
        SMBIOS UUID matches) and the boot token are read inside the transaction and
        yielded; the caller refuses by raising, which rolls everything back. Otherwise the
        token is marked used and the machine created or updated (facts, last_seen), with
        an event, and ``attempt.result`` holds it. Facts that match two machines, or a
        machine whose SMBIOS UUID differs, raise ConflictError: nothing is merged silently.
        The primary MAC is the one that booted (``boot_mac``, else the token's) when the
        machine is new, and stays while the machine still has that NIC.
        """
        identity = _identity(facts, boot_mac)
        at = time.time() if now is None else now
        with self.transaction() as db:
            existing = self._matching_machine(db, identity)
            token = None if token_hash is None else self._boot_token(db, token_hash)
            attempt = DiscoveryAttempt(identity.macs, existing, token, at)
            yield attempt
            if token_hash is not None:
                db.execute("UPDATE boot_tokens SET used_at = ? WHERE hash = ?", (at, token_hash))
            booted = identity.boot_mac or (None if token is None else token.mac)
            attempt.result = self._save_discovered(db, identity, facts, existing, at, booted)

    def set_machine_state(
        self,
        mac_or_id: str,
        state: str,
        reason: str,
        *,
        cluster: str | None = None,
        node: str | None = None,
        actor: str = "metalctl",
    ) -> MachineRecord:
        """Mark a machine enrolled/provisioned (or back to discovered), with an event."""
        if state not in MACHINE_STATES:
            raise ValueError(f"machine state must be one of {MACHINE_STATES}, not {state!r}")
        with self.transaction() as db:
            machine = self.get_machine(mac_or_id)  # read inside: no change slips in between
            db.execute(
                "UPDATE machines SET state = ?, cluster = ?, node = ? WHERE id = ?",
                (state, cluster, node, machine.id),
            )
            add_event(
                db,
                "",
                MACHINE_EVENT,
                f"machine {machine.id} ({machine.primary_mac}): {reason}",
                from_state=machine.state,
                to_state=state,
                actor=actor,
            )
        return self.get_machine(machine.id)

    def forget_machine(self, mac_or_id: str, reason: str, *, actor: str = "metalctl") -> None:
        """Drop a machine and its MACs (a NIC moved, a board replaced), with an event."""
        with self.transaction() as db:
            machine = self.get_machine(mac_or_id)
            db.execute("DELETE FROM machine_macs WHERE machine_id = ?", (machine.id,))
            db.execute("DELETE FROM machines WHERE id = ?", (machine.id,))
            add_event(
                db,
                "",
                MACHINE_EVENT,
                f"machine {machine.id} ({machine.primary_mac}) forgotten: {reason}",
                from_state=machine.state,
                actor=actor,
            )

    def _matching_machine(self, db: sqlite3.Connection, ident: _Identity) -> MachineRecord | None:
        marks = ",".join("?" * len(ident.macs))
        ids = sorted(
            r[0]
            for r in db.execute(
                f"SELECT machine_id FROM machine_macs WHERE mac IN ({marks}) "
                "UNION SELECT id FROM machines WHERE smbios_uuid = ?",
                [*ident.macs, ident.smbios_uuid],
            )
        )
        if not ids:
            return None
        row = db.execute("SELECT * FROM machines WHERE id = ?", (ids[0],)).fetchone()
        machine = _machine(row)
        clash = len(ids) > 1 or (
            machine.smbios_uuid is not None
            and ident.smbios_uuid is not None
            and machine.smbios_uuid != ident.smbios_uuid
        )
        if clash:
            raise _identity_conflict(ids, ident, machine)
        return machine

    def _save_discovered(
        self,
        db: sqlite3.Connection,
        ident: _Identity,
        facts: dict[str, Any],
        existing: MachineRecord | None,
        at: float,
        booted: str | None,
    ) -> MachineRecord:
        if existing is not None and existing.primary_mac in ident.macs:
            primary = existing.primary_mac
        elif booted is not None and booted in ident.macs:
            primary = booted
        else:
            primary = ident.macs[0]
        values = (primary, json.dumps(ident.macs), ident.smbios_uuid, ident.serial)
        if existing is None:
            # The id is drawn by SQLite (48 random bits) so that this module needs no
            # randomness of its own; the PRIMARY KEY refuses the (unlikely) repeat.
            machine_id = db.execute(
                "INSERT INTO machines (id, primary_mac, macs_json, smbios_uuid, serial, "
                "facts_json, state, first_seen, last_seen) "
                "VALUES ('m-' || lower(hex(randomblob(6))), ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (*values, json.dumps(facts), MACHINE_DISCOVERED, at, at),
            ).fetchall()[0][0]
            what = "discovered"
        else:
            machine_id = existing.id
            db.execute(
                "UPDATE machines SET primary_mac = ?, macs_json = ?, "
                "smbios_uuid = COALESCE(?, smbios_uuid), serial = ?, facts_json = ?, "
                "last_seen = ? WHERE id = ?",
                (*values, json.dumps(facts), at, machine_id),
            )
            what = "booted discovery again: facts updated"
        db.execute("DELETE FROM machine_macs WHERE machine_id = ?", (machine_id,))
        db.executemany(
            "INSERT INTO machine_macs (mac, machine_id) VALUES (?, ?)",
            [(mac, machine_id) for mac in ident.macs],
        )
        add_event(
            db,
            "",
            MACHINE_EVENT,
            f"machine {machine_id} ({primary}) {what}",
            from_state=None if existing is None else existing.state,
            to_state=MACHINE_DISCOVERED if existing is None else existing.state,
            actor="boot",
        )
        return _machine(db.execute("SELECT * FROM machines WHERE id = ?", (machine_id,)).fetchone())

    # boot tokens (their policy is metalctl.boot.tokens) ---------------------------
    def add_boot_token(
        self,
        token_hash: str,
        mac: str,
        *,
        issued_at: float,
        expires_at: float,
        forget_before: float,
    ) -> None:
        """Keep a new token's hash; tokens that expired before ``forget_before`` go, so
        the table stays as small as the boots of the last retention period."""
        with self.transaction() as db:
            db.execute("DELETE FROM boot_tokens WHERE expires_at < ?", (forget_before,))
            db.execute(
                "INSERT INTO boot_tokens (hash, mac, issued_at, expires_at) VALUES (?, ?, ?, ?)",
                (token_hash, mac.lower(), issued_at, expires_at),
            )

    def get_boot_token(self, token_hash: str) -> BootTokenRecord | None:
        return self._boot_token(self._db, token_hash)

    def _boot_token(self, db: sqlite3.Connection, token_hash: str) -> BootTokenRecord | None:
        row = db.execute("SELECT * FROM boot_tokens WHERE hash = ?", (token_hash,)).fetchone()
        return None if row is None else BootTokenRecord(**dict(row))


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


# Machines seen by the boot service -------------------------------------------------

MACHINE_DISCOVERED, MACHINE_ENROLLED, MACHINE_PROVISIONED = "discovered", "enrolled", "provisioned"
# provisioning: an OS image is being written (metalctl.deployments); failed: that went wrong.
MACHINE_PROVISIONING, MACHINE_FAILED = "provisioning", "failed"
MACHINE_STATES = (
    MACHINE_DISCOVERED,
    MACHINE_ENROLLED,
    MACHINE_PROVISIONING,
    MACHINE_PROVISIONED,
    MACHINE_FAILED,
)
# Machine events go to the events table under cluster "" (a machine has no cluster until
# enrolled) with this kind.
MACHINE_EVENT = "machine"

# SMBIOS UUIDs that firmware fills in when the vendor did not set one: shared by many
# machines, so they identify nothing and are ignored (else unrelated machines would merge).
_PLACEHOLDER_UUIDS = frozenset(
    {
        "00000000-0000-0000-0000-000000000000",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
        "03000200-0400-0500-0006-000700080009",
    }
)


@dataclass(frozen=True)
class MachineRecord:
    id: str
    primary_mac: str
    macs: tuple[str, ...]
    smbios_uuid: str | None
    serial: str | None
    facts: dict[str, Any]
    state: str
    cluster: str | None
    node: str | None
    first_seen: float
    last_seen: float


@dataclass(frozen=True)
class BootTokenRecord:
    hash: str
    mac: str
    issued_at: float
    expires_at: float
    used_at: float | None


@dataclass
class DiscoveryAttempt:
    """What a discovery report is about to change, seen inside its transaction."""

    macs: tuple[str, ...]
    machine: MachineRecord | None
    token: BootTokenRecord | None
    now: float
    result: MachineRecord | None = None


@dataclass(frozen=True)
class _Identity:
    macs: tuple[str, ...]
    boot_mac: str | None
    smbios_uuid: str | None
    serial: str | None


def _identity(facts: dict[str, Any], boot_mac: str | None) -> _Identity:
    macs = tuple(str(nic["mac"]).lower() for nic in facts.get("nics", []))
    if not macs:
        raise ValueError("discovery facts list no NIC: a machine is known by its MACs")
    boot = None if boot_mac is None else boot_mac.lower()
    if boot is not None and boot not in macs:
        raise ValueError(f"boot MAC {boot} is not among the facts' NICs {list(macs)}")
    dmi = facts.get("dmi") or {}
    uuid = str(dmi["uuid"]).strip().lower() if dmi.get("uuid") else None
    serial = str(dmi["serial"]) if dmi.get("serial") else None
    return _Identity(macs, boot, None if uuid in _PLACEHOLDER_UUIDS else uuid, serial)


def _identity_conflict(ids: list[str], ident: _Identity, machine: MachineRecord) -> Exception:
    # Imported here, not at the top, so that this slice's change to the module stays apart
    # from its import block (edited concurrently); hoist it when convenient.
    from metalctl.errors import ConflictError

    if len(ids) > 1:
        return ConflictError(
            f"these facts (MACs {', '.join(ident.macs)}, SMBIOS UUID {ident.smbios_uuid}) "
            f"match several known machines: {', '.join(ids)}",
            hint="a NIC moved between machines? forget the stale machine, then reboot this one",
        )
    return ConflictError(
        f"these facts share a MAC with machine {machine.id} but report SMBIOS UUID "
        f"{ident.smbios_uuid}, not its {machine.smbios_uuid}",
        hint="a NIC moved to another machine, or a board was replaced? forget "
        f"{machine.id}, then reboot this one",
    )


def _machine(row: sqlite3.Row) -> MachineRecord:
    data = dict(row)
    return MachineRecord(
        id=data["id"],
        primary_mac=data["primary_mac"],
        macs=tuple(json.loads(data["macs_json"])),
        smbios_uuid=data["smbios_uuid"],
        serial=data["serial"],
        facts=json.loads(data["facts_json"]),
        state=data["state"],
        cluster=data["cluster"],
        node=data["node"],
        first_seen=data["first_seen"],
        last_seen=data["last_seen"],
    )


def _mac_or_id_key(text: str) -> str:
    """MACs in lowercase colon form (``AA-BB-...`` too); anything else is an id, as given."""
    key = text.strip().lower()
    looks_like_mac = len(key) == 17 and all(key[i] in ":-" for i in range(2, 17, 3))
    return key.replace("-", ":") if looks_like_mac else text.strip()
