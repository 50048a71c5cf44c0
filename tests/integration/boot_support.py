"""Helpers for the boot service tests: sample facts, a running service on 127.0.0.1 and a
plain HTTP client (http.client: no proxy from the environment, nothing but loopback)."""

from __future__ import annotations

import http.client
import json
import logging
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metalctl.boot import BootConfig, BootService

MAC_A = "52:54:00:00:00:0a"
MAC_A2 = "52:54:00:00:01:0a"
MAC_B = "52:54:00:00:00:0b"
UUID_A = "6c9e3c4e-1f0a-4b7e-9d51-0a1b2c3d4e5f"


def facts(
    *macs: str, uuid: str | None = UUID_A, memory: int = 8 << 30, **changes: Any
) -> dict[str, Any]:
    """A valid facts document for a machine with NICs ``macs`` (default MAC_A)."""
    doc: dict[str, Any] = {
        "nics": [
            {"mac": m, "name": f"eth{i}", "link": i == 0, "speed_mbps": 1000}
            for i, m in enumerate(macs or (MAC_A,))
        ],
        "cpu": {"count": 4, "model": "QEMU Virtual CPU"},
        "memory_bytes": memory,
        "disks": [{"name": "vda", "size_bytes": 20 << 30, "rotational": False}],
        "dmi": {"vendor": "QEMU", "product": "Standard PC", "serial": "S1", "uuid": uuid},
        "boot_mode": "bios",
    }
    doc.update(changes)
    return doc


def token_in(script: str) -> str:
    found = re.search(r"metalctl\.token=(\S+)", script)
    assert found, script
    return found.group(1)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@dataclass
class Running:
    service: BootService
    store_path: Path
    files_dir: Path
    log: ListHandler

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.service.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return Reply(resp.status, dict(resp.getheaders()), resp.read())
        finally:
            conn.close()

    def boot_script(self, mac: str, platform: str | None = None) -> str:
        query = f"mac={mac}" + (f"&platform={platform}" if platform else "")
        reply = self.request("GET", f"/boot.ipxe?{query}")
        assert reply.status == 200, reply
        return reply.body.decode()

    def token_for(self, mac: str) -> str:
        return token_in(self.boot_script(mac))

    def post_facts(self, token: str | None, doc: Any, **headers: str) -> Reply:
        body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        sent = {"Content-Type": "application/json", **headers}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        return self.request("POST", "/v1/discovery", body, sent)

    def snapshot(self) -> tuple[list[tuple[Any, ...]], ...]:
        """Everything the discovery path writes (machines, their MACs, events, tokens)."""
        with sqlite3.connect(self.store_path) as db:
            return tuple(
                db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
                for table in ("machines", "machine_macs", "events", "boot_tokens")
            )

    def written_since(self, before: tuple[list[tuple[Any, ...]], ...]) -> bool:
        """Whether anything but newly issued (unused) tokens changed since ``before``."""
        now = self.snapshot()
        old_tokens = {row[0]: row for row in before[3]}
        tokens_changed = any(old_tokens.get(row[0], (*row[:4], None)) != row for row in now[3])
        return now[:3] != before[:3] or tokens_changed


@contextmanager
def running(tmp_path: Path, config: BootConfig | None = None) -> Iterator[Running]:
    files_dir = tmp_path / "files"
    (files_dir / "discovery").mkdir(parents=True)
    (files_dir / "discovery" / "vmlinuz").write_bytes(b"kernel image\n" * 100)
    (files_dir / "discovery" / "initrd.img").write_bytes(b"initramfs\n")
    logger = logging.getLogger(f"test.boot.{id(tmp_path)}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = ListHandler()
    logger.addHandler(handler)
    store_path = tmp_path / "metalctl.db"
    service = BootService(store_path, files_dir=files_dir, config=config, logger=logger)
    with service:
        yield Running(service, store_path, files_dir, handler)
    logger.removeHandler(handler)
