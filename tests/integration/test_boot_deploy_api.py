"""The deploy API over real HTTP on 127.0.0.1: a provisioning machine's PXE boot gets a
deploy script, its agent the job, the image, the seed; the result decides provisioned or
failed, and what the machine boots next."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from metalctl import deployments
from metalctl.deployments import DeploymentJob, ImageRef
from metalctl.store import Store
from tests.integration.boot_support import MAC_A, MAC_B, Running, facts, running, token_in

IMAGE = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB, not a multiple of anything


@pytest.fixture
def boot(tmp_path: Path) -> Iterator[Running]:
    with running(tmp_path) as r:
        yield r


def _provisioning(boot: Running, tmp_path: Path, mac: str = MAC_A) -> str:
    """A discovered machine with a deployment of IMAGE; returns its id."""
    image = tmp_path / f"image-{mac[-2:]}.raw"
    image.write_bytes(IMAGE)
    store = Store(boot.store_path)
    machine = store.upsert_discovered(facts(mac, uuid=None), boot_mac=mac)
    job = DeploymentJob(
        node=f"node-{mac[-2:]}",
        disk="vda",
        disk_size=20 << 30,
        disk_serial="",
        image=ImageRef(
            name="test",
            sha256=hashlib.sha256(IMAGE).hexdigest(),
            size=len(IMAGE),
            path=str(image),
            compression="none",
            stored_size=len(IMAGE),
        ),
        seed={"meta-data": "instance-id: x\n", "user-data": "#cloud-config\n"},
    )
    deployments.start(store, machine.id, "c1", job, "provision test")
    return machine.id


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _report(boot: Running, token: str, path: str, text: str) -> tuple[int, dict[str, str]]:
    reply = boot.request("POST", path, text.encode(), _auth(token))
    return reply.status, reply.json()


def _ok_report(image: bytes = IMAGE) -> str:
    digest = hashlib.sha256(image).hexdigest()
    return f"status=ok\nsha256={digest}\nreadback_sha256={digest}\nbytes={len(image)}\nseconds=3\n"


def test_deploy_job_image_seed_then_local_boot(boot: Running, tmp_path: Path) -> None:
    machine_id = _provisioning(boot, tmp_path)
    script = boot.boot_script(MAC_A)
    assert "metalctl.mode=deploy" in script
    token = token_in(script)

    job = boot.request("GET", "/v1/deploy", headers=_auth(token))
    assert job.status == 200
    lines = dict(line.split("=", 1) for line in job.body.decode().splitlines())
    assert lines["METALCTL_DISK"] == "vda" and lines["METALCTL_NODE"] == "node-0a"
    assert lines["METALCTL_IMAGE_SHA256"] == hashlib.sha256(IMAGE).hexdigest()
    assert lines["METALCTL_IMAGE_URL"].endswith("/v1/deploy/image")

    image = boot.request("GET", "/v1/deploy/image", headers=_auth(token))
    assert image.status == 200 and image.body == IMAGE
    seed = boot.request("GET", "/v1/deploy/seed/user-data", headers=_auth(token))
    assert seed.body == b"#cloud-config\n"
    assert _report(boot, token, "/v1/deploy/progress", "phase=verifying\n")[0] == 200

    store = Store(boot.store_path)
    found = deployments.get(store, machine_id)
    assert found is not None and found.bytes_sent == len(IMAGE) and found.phase == "verifying"

    status, answer = _report(boot, token, "/v1/deploy/result", _ok_report())
    assert (status, answer) == (200, {"state": "provisioned"})
    assert store.get_machine(machine_id).state == "provisioned"
    # The token is spent; the machine now boots its disk, never the agent again.
    assert boot.request("GET", "/v1/deploy", headers=_auth(token)).status == 403
    assert "sanboot" in boot.boot_script(MAC_A)


def test_checksum_mismatch_fails_the_machine_and_it_is_not_booted(
    boot: Running, tmp_path: Path
) -> None:
    machine_id = _provisioning(boot, tmp_path)
    token = token_in(boot.boot_script(MAC_A))
    flipped = bytearray(IMAGE)
    flipped[1000] ^= 0x01
    # An agent that claims ok with the wrong digest is not believed.
    status, answer = _report(boot, token, "/v1/deploy/result", _ok_report(bytes(flipped)))
    assert (status, answer) == (200, {"state": "failed"})
    store = Store(boot.store_path)
    assert store.get_machine(machine_id).state == "failed"
    found = deployments.get(store, machine_id)
    assert found is not None and "sha256 mismatch" in (found.message or "")
    # A failed machine waits; it is neither booted from its disk nor rediscovered.
    script = boot.boot_script(MAC_A)
    assert "sanboot" not in script and "metalctl.token" not in script and "sleep" in script


def test_agent_failure_is_recorded_with_its_message(boot: Running, tmp_path: Path) -> None:
    machine_id = _provisioning(boot, tmp_path)
    token = token_in(boot.boot_script(MAC_A))
    body = "status=failed\nmessage=disk vda is 1 GiB, the job says 20 GiB\n"
    assert _report(boot, token, "/v1/deploy/result", body) == (200, {"state": "failed"})
    found = deployments.get(Store(boot.store_path), machine_id)
    assert found is not None and found.message == "disk vda is 1 GiB, the job says 20 GiB"


def test_deploy_tokens_are_per_boot_and_per_machine(boot: Running, tmp_path: Path) -> None:
    _provisioning(boot, tmp_path, MAC_A)
    _provisioning(boot, tmp_path, MAC_B)
    first = token_in(boot.boot_script(MAC_A))
    second = token_in(boot.boot_script(MAC_A))  # the machine PXE-booted again
    assert boot.request("GET", "/v1/deploy", headers=_auth(first)).status == 403
    job = boot.request("GET", "/v1/deploy", headers=_auth(second))
    assert b"METALCTL_NODE=node-0a" in job.body
    other = token_in(boot.boot_script(MAC_B))
    job_b = boot.request("GET", "/v1/deploy", headers=_auth(other))
    assert b"METALCTL_NODE=node-0b" in job_b.body
    # A discovery token is no deploy token, and no token at all is 401.
    assert boot.request("GET", "/v1/deploy").status == 401
    discovery = token_in(boot.boot_script("52:54:00:00:00:99"))
    assert boot.request("GET", "/v1/deploy/image", headers=_auth(discovery)).status == 403


@pytest.mark.parametrize(
    "body",
    [b"status=maybe\n", b"not a report", b"\xff\xfe", b"x" * 5000, b"phase=\n"],
)
def test_malformed_reports_are_refused_and_change_nothing(
    boot: Running, tmp_path: Path, body: bytes
) -> None:
    machine_id = _provisioning(boot, tmp_path)
    token = token_in(boot.boot_script(MAC_A))
    path = "/v1/deploy/progress" if body.startswith(b"phase") else "/v1/deploy/result"
    reply = boot.request("POST", path, body, _auth(token))
    assert 400 <= reply.status < 500 and "error" in reply.json()
    assert Store(boot.store_path).get_machine(machine_id).state == "provisioning"


def test_unknown_seed_file_is_404(boot: Running, tmp_path: Path) -> None:
    _provisioning(boot, tmp_path)
    token = token_in(boot.boot_script(MAC_A))
    reply = boot.request("GET", "/v1/deploy/seed/../../etc/passwd", headers=_auth(token))
    assert reply.status == 404
