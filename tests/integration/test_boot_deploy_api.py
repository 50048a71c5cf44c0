"""The deploy API over real HTTP on 127.0.0.1: a provisioning machine's PXE boot gets a
deploy script, its agent the job, the image, the seed; the result decides provisioned or
failed, and what the machine boots next."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from metalctl import deployments
from metalctl.deployments import DeploymentJob, ImageRef
from metalctl.provisioners import pxe_plan
from metalctl.spec import parse_spec
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


def test_el9_by_kickstart_installer_script_kickstart_and_result(
    boot: Running, tmp_path: Path
) -> None:
    """EL9: the installer boots from the spec's mirror; the kickstart the boot service
    renders for the machine passes ksvalidator (RHEL9) and carries a deploy token that its
    %post reports with. (No EL9 mirror is reachable here: the install itself is not run.)"""
    store = Store(boot.store_path)
    machine = store.upsert_discovered(facts(MAC_A, uuid=None), boot_mac=MAC_A)
    spec = parse_spec(KS_SPEC)
    job = pxe_plan.kickstart_job(
        spec, spec.node("el1"), MAC_A, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOq3 m"
    )
    deployments.start(store, machine.id, "c1", job, "kickstart test")

    script = boot.boot_script(MAC_A)
    tree = "http://mirror.test/rocky/9/BaseOS/x86_64/os"
    assert f"kernel {tree}/images/pxeboot/vmlinuz" in script and f"inst.repo={tree}" in script
    assert f"/v1/deploy/kickstart?mac={MAC_A}" in script

    reply = boot.request("GET", f"/v1/deploy/kickstart?mac={MAC_A}")
    assert reply.status == 200
    ks = tmp_path / "el1.ks"
    ks.write_bytes(reply.body)
    check = subprocess.run(
        [str(Path(sys.executable).parent / "ksvalidator"), "-v", "RHEL9", str(ks)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    text = reply.body.decode()
    assert "--hostname=el1" in text and "10.9.0.21" in text and "serial:" not in text
    token = re.search(r"Bearer ([A-Za-z0-9_-]{43})", text)
    assert token is not None
    status, answer = _report(boot, token.group(1), "/v1/deploy/result", "status=ok")
    assert (status, answer) == (200, {"state": "provisioned"})
    assert boot.request("GET", f"/v1/deploy/kickstart?mac={MAC_A}").status == 404


KS_SPEC = """
apiVersion: metalctl/v1alpha1
kind: Cluster
metadata: {name: c1}
spec:
  provisioner: pxe
  pxe:
    network: 10.9.0.0/24
    installer: {flavour: rocky, mirror: 'http://mirror.test/rocky/9'}
  nodes:
    - {name: el1, address: 10.9.0.21, mac: '52:54:00:00:00:0a'}
  swarm: {master: el1, managers: [el1]}
  consul: {servers: [el1]}
"""
