"""The boot service over real HTTP on 127.0.0.1: discovery, every refusal, scripts, files."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from metalctl.boot import BootConfig
from metalctl.store import Store
from tests.integration.boot_support import (
    MAC_A,
    MAC_A2,
    MAC_B,
    UUID_A,
    Running,
    facts,
    running,
    token_in,
)


@pytest.fixture
def boot(tmp_path: Path) -> Iterator[Running]:
    with running(tmp_path) as r:
        yield r


def _store(boot: Running) -> Store:
    return Store(boot.store_path)


def test_healthz(boot: Running) -> None:
    reply = boot.request("GET", "/healthz")
    assert (reply.status, reply.json()) == (200, {"status": "ok"})


def test_discovery_then_second_boot_is_the_same_machine(boot: Running) -> None:
    script = boot.boot_script(MAC_A)
    base = f"http://127.0.0.1:{boot.service.port}"
    assert f"kernel {base}/files/discovery/vmlinuz " in script
    assert f"metalctl.url={base} " in script and f"metalctl.mac={MAC_A}" in script
    assert f"initrd --name initrd.img {base}/files/discovery/initrd.img" in script

    first = boot.post_facts(token_in(script), facts(MAC_A))
    assert first.status == 201, first.body
    made = first.json()
    assert made["state"] == "discovered" and made["primary_mac"] == MAC_A

    # The same machine boots again, this time with a second NIC and more memory.
    time.sleep(0.01)
    second = boot.post_facts(boot.token_for(MAC_A), facts(MAC_A, MAC_A2, memory=16 << 30))
    assert second.status == 201, second.body
    assert second.json()["id"] == made["id"]

    store = _store(boot)
    [machine] = store.list_machines()
    assert machine.id == made["id"] and machine.state == "discovered"
    assert machine.macs == (MAC_A, MAC_A2) and machine.smbios_uuid == UUID_A
    assert machine.facts["memory_bytes"] == 16 << 30
    assert machine.last_seen > machine.first_seen
    assert store.get_machine(MAC_A2).id == machine.id
    events = [e for e in store.list_events("") if e.kind == "machine"]
    assert len(events) == 2 and all(machine.id in e.reason for e in events)


def test_machine_found_by_smbios_uuid_when_its_nics_changed(boot: Running) -> None:
    assert boot.post_facts(boot.token_for(MAC_A), facts(MAC_A)).status == 201
    reply = boot.post_facts(boot.token_for(MAC_B), facts(MAC_B))  # same UUID, new NIC
    assert reply.status == 201
    [machine] = _store(boot).list_machines()
    assert machine.macs == (MAC_B,) and machine.primary_mac == MAC_B


def test_facts_that_match_two_machines_conflict(boot: Running) -> None:
    assert boot.post_facts(boot.token_for(MAC_A), facts(MAC_A, uuid=None)).status == 201
    assert boot.post_facts(boot.token_for(MAC_B), facts(MAC_B, uuid=None)).status == 201
    before = boot.snapshot()
    reply = boot.post_facts(boot.token_for(MAC_A), facts(MAC_A, MAC_B, uuid=None))
    assert reply.status == 409
    assert "several known machines" in reply.json()["error"]
    assert not boot.written_since(before)


def test_no_token_is_401(boot: Running) -> None:
    before = boot.snapshot()
    reply = boot.post_facts(None, facts(MAC_A))
    assert reply.status == 401 and "Bearer" in reply.json()["error"]
    reply = boot.post_facts(None, facts(MAC_A), Authorization="Basic dXNlcjpwdw==")
    assert reply.status == 401 and "Bearer" in reply.json()["error"]
    assert not boot.written_since(before)


@pytest.mark.parametrize("token", ["not-a-token", "A" * 43])
def test_wrong_token_is_403(boot: Running, token: str) -> None:
    boot.token_for(MAC_A)
    before = boot.snapshot()
    reply = boot.post_facts(token, facts(MAC_A))
    assert reply.status == 403 and "not recognised" in reply.json()["error"]
    assert not boot.written_since(before)


def test_token_of_another_mac_is_403(boot: Running) -> None:
    token_b = boot.token_for(MAC_B)
    before = boot.snapshot()
    reply = boot.post_facts(token_b, facts(MAC_A))
    assert reply.status == 403
    assert f"issued to MAC {MAC_B}, which is not among the NICs" in reply.json()["error"]
    assert not boot.written_since(before)
    assert _store(boot).list_machines() == []


def test_expired_token_is_403(tmp_path: Path) -> None:
    with running(tmp_path, BootConfig(token_ttl=0.2)) as boot:
        token = boot.token_for(MAC_A)
        time.sleep(0.4)
        before = boot.snapshot()
        reply = boot.post_facts(token, facts(MAC_A))
        assert reply.status == 403 and "expired" in reply.json()["error"]
        assert not boot.written_since(before)


def test_replay_after_success_is_403(boot: Running) -> None:
    token = boot.token_for(MAC_A)
    assert boot.post_facts(token, facts(MAC_A)).status == 201
    before = boot.snapshot()
    reply = boot.post_facts(token, facts(MAC_A, memory=1))
    assert reply.status == 403 and "already used" in reply.json()["error"]
    assert not boot.written_since(before)
    assert _store(boot).get_machine(MAC_A).facts["memory_bytes"] == 8 << 30


def test_token_refused_once_the_machine_is_provisioned(boot: Running) -> None:
    assert boot.post_facts(boot.token_for(MAC_A), facts(MAC_A)).status == 201
    late = boot.token_for(MAC_A)  # issued while still discovered
    _store(boot).set_machine_state(MAC_A, "provisioned", "test: image written")
    before = boot.snapshot()
    reply = boot.post_facts(late, facts(MAC_A, memory=1))
    assert reply.status == 403 and "is provisioned" in reply.json()["error"]
    assert not boot.written_since(before)
    # ... and its next PXE boot goes to the local disk, with no token issued.
    script = boot.boot_script(MAC_A)
    assert "sanboot --no-describe --drive 0x80" in script and "metalctl.token" not in script
    assert boot.snapshot()[3] == before[3]


def test_provisioned_uefi_machine_exits_to_firmware(boot: Running) -> None:
    assert boot.post_facts(boot.token_for(MAC_A), facts(MAC_A, boot_mode="uefi")).status == 201
    _store(boot).set_machine_state(MAC_A, "provisioned", "test")
    script = boot.boot_script(MAC_A)
    assert "\nexit\n" in script and "sanboot" not in script and "kernel" not in script
    # iPXE's ${platform} of this boot wins over the reported boot mode.
    assert "sanboot --no-describe" in boot.boot_script(MAC_A, platform="pcbios")


def test_same_token_twice_at_once_discovers_once(boot: Running) -> None:
    token = boot.token_for(MAC_A)
    statuses: list[int] = []

    def post() -> None:
        statuses.append(boot.post_facts(token, facts(MAC_A)).status)

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(statuses) == [201, 403, 403, 403]
    assert len(_store(boot).list_machines()) == 1


def test_oversized_body_is_413(boot: Running) -> None:
    token = boot.token_for(MAC_A)
    before = boot.snapshot()
    doc = facts(MAC_A, dmi={"vendor": "x" * 70_000})
    reply = boot.post_facts(token, doc)
    assert reply.status == 413 and "65536-byte limit" in reply.json()["error"]
    assert not boot.written_since(before)
    # Refused before the body was read, so the token is still good.
    assert boot.post_facts(token, facts(MAC_A)).status == 201


def _raw(boot: Running, head: str, body: bytes = b"", wait: float = 10) -> tuple[int, str]:
    """Send a hand-made request (headers http.client would fix up) and read the answer."""
    with socket.create_connection(("127.0.0.1", boot.service.port), timeout=wait) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.decode().partition("\r\n")
    return int(status_line.split()[1]), rest.partition("\r\n\r\n")[2]


@pytest.mark.parametrize(
    ("length_header", "status", "says"),
    [
        ("", 411, "Content-Length is required"),
        ("Content-Length: ten\n", 400, "not a number"),
        ("Content-Length: -5\n", 400, "not a number"),
        ("Content-Length: 12\nContent-Length: 13\n", 400, "conflicting"),
        ("Content-Length: " + "9" * 5000 + "\n", 413, "limit"),
        ("Transfer-Encoding: chunked\n", 411, "not a Transfer-Encoding"),
    ],
)
def test_missing_or_invalid_content_length_refused(
    boot: Running, length_header: str, status: int, says: str
) -> None:
    token = boot.token_for(MAC_A)
    before = boot.snapshot()
    head = f"POST /v1/discovery HTTP/1.1\nHost: x\nAuthorization: Bearer {token}\n{length_header}"
    got, body = _raw(boot, head, b'{"nics": []}')
    assert got == status and says in body
    assert not boot.written_since(before)


def test_body_shorter_than_its_length_times_out_with_408(tmp_path: Path) -> None:
    with running(tmp_path, BootConfig(request_timeout=0.5)) as boot:
        token = boot.token_for(MAC_A)
        head = f"POST /v1/discovery HTTP/1.1\nHost: x\nAuthorization: Bearer {token}\nContent-Length: 500\n"
        with socket.create_connection(("127.0.0.1", boot.service.port), timeout=10) as sock:
            sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + b'{"nics": ')
            data = b""  # until the server closes: headers and body may come in two reads
            while chunk := sock.recv(65536):
                data += chunk
        reply = data.decode()
        assert reply.startswith("HTTP/1.0 408") and "did not arrive" in reply


@pytest.mark.parametrize(
    "body", [b"{not json", b"", b'{"nics": NaN}', b"\xff\xfe{}", b"[" * 50_000]
)
def test_malformed_json_is_400(boot: Running, body: bytes) -> None:
    token = boot.token_for(MAC_A)
    before = boot.snapshot()
    reply = boot.post_facts(token, body)
    assert reply.status == 400 and reply.json()["error"].startswith("body is not")
    assert not boot.written_since(before)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"memory_bytes": "8G"}, "memory_bytes"),
        ({"cpu": {"count": "4", "model": "x"}}, "cpu.count"),
        ({"boot_mode": "legacy"}, "boot_mode"),
        ({"nics": [{"mac": "52-54-00-00-00-0a", "name": "e", "link": True}]}, "nics.0.mac"),
        ({"nics": [{"mac": MAC_A, "name": "e", "link": 1}]}, "nics.0.link"),
        ({"disks": [{"name": "d", "size_bytes": -1}]}, "disks.0.size_bytes"),
        ({"flavour": "vanilla"}, "flavour"),
    ],
)
def test_wrong_types_are_422_naming_the_field(
    boot: Running, change: dict[str, object], field: str
) -> None:
    token = boot.token_for(MAC_A)
    before = boot.snapshot()
    reply = boot.post_facts(token, {**facts(MAC_A), **change})
    assert reply.status == 422
    assert f"{field}: " in reply.json()["error"]
    assert field in [p["field"] for p in reply.json()["problems"]]
    assert not boot.written_since(before)


def test_unknown_path_404_and_wrong_method_405(boot: Running) -> None:
    reply = boot.request("GET", "/v2/nothing")
    assert reply.status == 404 and "no such endpoint" in reply.json()["error"]
    reply = boot.request("GET", "/v1/discovery")
    assert reply.status == 405 and reply.headers["Allow"] == "POST"
    reply = boot.request("DELETE", "/boot.ipxe?mac=" + MAC_A)
    assert reply.status == 405 and reply.headers["Allow"] == "GET"
    assert "not allowed" in reply.json()["error"]


@pytest.mark.parametrize("query", ["", "mac=zz:54:00:00:00:0a", "mac=1&mac=2", "mac=52:54:00"])
def test_boot_script_needs_one_valid_mac(boot: Running, query: str) -> None:
    reply = boot.request("GET", f"/boot.ipxe?{query}")
    assert reply.status == 400 and "MAC" in reply.json()["error"]
    assert boot.snapshot()[3] == []  # no token issued


def test_files_are_served_and_nothing_outside(boot: Running, tmp_path: Path) -> None:
    reply = boot.request("GET", "/files/discovery/vmlinuz")
    assert reply.status == 200 and reply.body == b"kernel image\n" * 100
    (tmp_path / "secret").write_text("no")
    (boot.files_dir / "discovery" / "escape").symlink_to(tmp_path / "secret")
    (boot.files_dir / ".hidden").write_text("partial")
    for path in [
        "/files/../metalctl.db",
        "/files/discovery/../../secret",
        "/files/%2e%2e/secret",
        "/files/discovery/%2E%2E%2F..%2Fsecret",
        "/files/discovery/escape",
        "/files/.hidden",
        "/files/discovery",
        "/files/discovery/%00",
        "/files/%ff",
    ]:
        reply = boot.request("GET", path)
        assert reply.status == 404, path
        assert reply.json()["error"], path


def test_one_log_line_per_request_and_never_a_token(boot: Running) -> None:
    script = boot.boot_script(MAC_A)
    token = token_in(script)
    boot.post_facts(token, facts(MAC_A))
    boot.post_facts(token, facts(MAC_A))
    boot.request("GET", f"/healthz?token={token}")
    assert boot.log.lines == [
        "GET /boot.ipxe 200 127.0.0.1",
        "POST /v1/discovery 201 127.0.0.1",
        "POST /v1/discovery 403 127.0.0.1",
        "GET /healthz 200 127.0.0.1",
    ]
    assert not any(token in line for line in boot.log.lines)
