"""Deployments: an OS image written to a machine's disk by its agent (issue 9).

The provisioner records a deployment (the job: which image, which disk, the cloud-init
seed) and marks the machine ``provisioning``; the boot service hands the job to the agent
that the machine PXE-boots, with a deploy token whose hash is kept here, counts the image
bytes it sends, and records the agent's result, which makes the machine ``provisioned``
or ``failed``. One row per machine (the latest deployment); every change is one
transaction, state changes with an event.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from metalctl.errors import NotFoundError
from metalctl.store import (
    MACHINE_EVENT,
    MACHINE_FAILED,
    MACHINE_PROVISIONED,
    MACHINE_PROVISIONING,
    Store,
    add_event,
)

PENDING, RUNNING, OK, FAILED = "pending", "running", "ok", "failed"
FINAL = frozenset({OK, FAILED})


@dataclass(frozen=True)
class ImageRef:
    name: str
    sha256: str  # of the raw bytes
    size: int  # raw bytes
    path: str  # the stored file the boot service sends
    compression: str  # "zstd" or "none"
    stored_size: int


@dataclass(frozen=True)
class KickstartJob:
    """EL9 by kickstart: the installer boots from the mirror; the boot service renders the
    kickstart (with the deploy token its %post reports with) when the installer asks."""

    flavour: str
    mirror: str
    mac: str
    ssh_public_key: str
    address: str
    prefix: int
    root_device: str | None


@dataclass(frozen=True)
class DeploymentJob:
    node: str
    disk: str  # kernel name (/sys/block/NAME)
    disk_size: int
    disk_serial: str
    image: ImageRef | None  # None: installed by kickstart
    seed: dict[str, str]  # NoCloud files: meta-data, user-data, network-config
    kickstart: KickstartJob | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DeploymentJob:
        data = json.loads(text)
        data["image"] = ImageRef(**data["image"]) if data.get("image") else None
        data["kickstart"] = KickstartJob(**data["kickstart"]) if data.get("kickstart") else None
        return cls(**data)


@dataclass(frozen=True)
class Deployment:
    machine_id: str
    cluster: str
    node: str
    job: DeploymentJob
    status: str
    phase: str
    bytes_sent: int
    message: str | None
    result: dict[str, Any]
    token_expires_at: float | None
    created_at: float
    updated_at: float
    finished_at: float | None

    @property
    def finished(self) -> bool:
        return self.status in FINAL


def start(store: Store, machine_id: str, cluster: str, job: DeploymentJob, reason: str) -> None:
    """Record a new deployment for the machine (replacing an earlier one) and mark the
    machine ``provisioning`` for ``cluster``/``job.node``: its next PXE boot gets the job."""
    now = time.time()
    with store.transaction() as db:
        row = db.execute("SELECT state FROM machines WHERE id = ?", (machine_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no machine with id '{machine_id}'")
        db.execute("DELETE FROM deployments WHERE machine_id = ?", (machine_id,))
        db.execute(
            "INSERT INTO deployments (machine_id, cluster, node, job_json, status, phase, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                machine_id,
                cluster,
                job.node,
                job.to_json(),
                PENDING,
                "waiting for PXE boot",
                now,
                now,
            ),
        )
        db.execute(
            "UPDATE machines SET state = ?, cluster = ?, node = ? WHERE id = ?",
            (MACHINE_PROVISIONING, cluster, job.node, machine_id),
        )
        add_event(
            db,
            cluster,
            MACHINE_EVENT,
            f"machine {machine_id}: {reason}",
            node=job.node,
            from_state=row["state"],
            to_state=MACHINE_PROVISIONING,
        )


def get(store: Store, machine_id: str) -> Deployment | None:
    with store.transaction() as db:
        row = db.execute("SELECT * FROM deployments WHERE machine_id = ?", (machine_id,)).fetchone()
    return None if row is None else _deployment(row)


def by_machine_mac(store: Store, mac: str) -> Deployment | None:
    machine = store.find_machine(mac)
    return None if machine is None else get(store, machine.id)


def by_token(store: Store, token_hash: str) -> Deployment | None:
    with store.transaction() as db:
        row = db.execute("SELECT * FROM deployments WHERE token_hash = ?", (token_hash,)).fetchone()
    return None if row is None else _deployment(row)


def set_token(store: Store, machine_id: str, token_hash: str, expires_at: float) -> bool:
    """Give the deployment a new token (a new PXE boot of the machine); the previous
    boot's token stops working. False when there is no unfinished deployment."""
    with store.transaction() as db:
        changed = db.execute(
            "UPDATE deployments SET token_hash = ?, token_expires_at = ?, updated_at = ? "
            "WHERE machine_id = ? AND status IN (?, ?)",
            (token_hash, expires_at, time.time(), machine_id, PENDING, RUNNING),
        ).rowcount
    return bool(changed)


def record_progress(
    store: Store, machine_id: str, *, phase: str | None = None, bytes_sent: int | None = None
) -> None:
    with store.transaction() as db:
        db.execute(
            "UPDATE deployments SET status = ?, phase = COALESCE(?, phase), "
            "bytes_sent = COALESCE(?, bytes_sent), updated_at = ? "
            "WHERE machine_id = ? AND status IN (?, ?)",
            (RUNNING, phase, bytes_sent, time.time(), machine_id, PENDING, RUNNING),
        )


def finish(
    store: Store, machine_id: str, *, ok: bool, message: str | None, result: dict[str, Any]
) -> Deployment:
    """The agent's result: the machine becomes provisioned (ok) or failed; the token is
    spent. A deployment that already finished is left as it was."""
    now = time.time()
    status, state = (OK, MACHINE_PROVISIONED) if ok else (FAILED, MACHINE_FAILED)
    with store.transaction() as db:
        row = db.execute("SELECT * FROM deployments WHERE machine_id = ?", (machine_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"machine {machine_id} has no deployment")
        if row["status"] in FINAL:
            return _deployment(row)
        db.execute(
            "UPDATE deployments SET status = ?, phase = ?, message = ?, result_json = ?, "
            "token_hash = NULL, token_expires_at = NULL, updated_at = ?, finished_at = ? "
            "WHERE machine_id = ?",
            (status, status, message, json.dumps(result), now, now, machine_id),
        )
        db.execute("UPDATE machines SET state = ? WHERE id = ?", (state, machine_id))
        what = "image written and verified" if ok else f"deployment failed: {message}"
        add_event(
            db,
            row["cluster"],
            MACHINE_EVENT,
            f"machine {machine_id}: {what}",
            node=row["node"],
            from_state=MACHINE_PROVISIONING,
            to_state=state,
            actor="boot",
        )
        done = db.execute("SELECT * FROM deployments WHERE machine_id = ?", (machine_id,))
        return _deployment(done.fetchone())


def _deployment(row: Any) -> Deployment:
    return Deployment(
        machine_id=row["machine_id"],
        cluster=row["cluster"],
        node=row["node"],
        job=DeploymentJob.from_json(row["job_json"]),
        status=row["status"],
        phase=row["phase"],
        bytes_sent=row["bytes_sent"],
        message=row["message"],
        result=json.loads(row["result_json"]) if row["result_json"] else {},
        token_expires_at=row["token_expires_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
    )
