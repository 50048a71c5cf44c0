"""The deploy API's steps, free of HTTP plumbing (docs/pxe-provisioning.md):

    GET  /v1/deploy                  the job, KEY=VALUE lines the agent's shell reads
    GET  /v1/deploy/image            the image bytes (the HTTP layer streams them)
    GET  /v1/deploy/seed/NAME        a cloud-init NoCloud file
    POST /v1/deploy/progress         phase=NAME
    POST /v1/deploy/result           status=ok|failed, sha256, readback_sha256, bytes, ...

Every call carries the deploy token that the iPXE script of this boot put on the kernel
command line; only its hash is stored, on the machine's deployment.
"""

from __future__ import annotations

import re
import time

from metalctl import deployments
from metalctl.boot import tokens
from metalctl.boot.refused import Refused
from metalctl.deployments import Deployment, ImageRef
from metalctl.store import MACHINE_PROVISIONING, Store

SEED_FILES = ("meta-data", "user-data", "network-config")
MAX_REPORT_BYTES = 4096
# What the agent's shell may read without quoting: the job's values are checked against
# this before they are sent, so a value can never become shell syntax on the machine.
_SAFE_VALUE = re.compile(r"[A-Za-z0-9._:/+=@-]*")
_PHASE = re.compile(r"[a-z][a-z0-9-]{0,31}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def authorize(store: Store, token: str, now: float | None = None) -> Deployment:
    """The unfinished deployment this deploy token belongs to, or a 403 saying why not."""
    at = time.time() if now is None else now
    found = None
    if tokens.looks_like_token(token):
        found = deployments.by_token(store, tokens.token_hash(token))
    if found is None:
        raise Refused(
            403,
            "deploy token not recognised: it belongs to no deployment under way (a later "
            "PXE boot of the machine replaced it, or the deployment ended)",
        )
    if found.token_expires_at is None or found.token_expires_at <= at:
        raise Refused(403, "deploy token expired; power-cycle the machine for a new one")
    machine = store.find_machine(found.machine_id)
    if machine is None or machine.state != MACHINE_PROVISIONING:
        state = "gone" if machine is None else machine.state
        raise Refused(403, f"machine {found.machine_id} is {state}, not provisioning")
    return found


def image_of(deployment: Deployment) -> ImageRef:
    if deployment.job.image is None:
        raise Refused(403, "this machine installs by kickstart; it has no image job")
    return deployment.job.image


def job_text(deployment: Deployment, base_url: str) -> str:
    job = deployment.job
    image = image_of(deployment)
    values = {
        "METALCTL_MACHINE": deployment.machine_id,
        "METALCTL_NODE": job.node,
        "METALCTL_DISK": job.disk,
        "METALCTL_DISK_SIZE": str(job.disk_size),
        "METALCTL_DISK_SERIAL": job.disk_serial,
        "METALCTL_IMAGE_URL": f"{base_url}/v1/deploy/image",
        "METALCTL_IMAGE_SHA256": image.sha256,
        "METALCTL_IMAGE_SIZE": str(image.size),
        "METALCTL_IMAGE_COMPRESSION": image.compression,
        "METALCTL_SEED_URL": f"{base_url}/v1/deploy/seed",
    }
    for key, value in values.items():
        if not _SAFE_VALUE.fullmatch(value):
            # Provision checked these; a value that slipped through is a bug, not input.
            raise ValueError(f"{key} has characters the agent cannot take: {value!r}")
    return "".join(f"{key}={value}\n" for key, value in values.items())


def kickstart_for(store: Store, mac: str, base_url: str) -> str:
    """The kickstart of the provisioning machine with NIC ``mac``. The installer cannot
    send a header, so the MAC names the machine (like /boot.ipxe); every fetch issues a new
    deploy token, which the kickstart's %post reports the result with."""
    from metalctl.boot.kickstart import KickstartParams, render_kickstart

    found = deployments.by_machine_mac(store, mac)
    job = None if found is None else found.job.kickstart
    machine = store.find_machine(mac)
    if found is None or job is None or found.finished or machine is None:
        raise Refused(404, f"no kickstart install under way for {mac}")
    if machine.state != MACHINE_PROVISIONING:
        raise Refused(403, f"machine {machine.id} is {machine.state}, not provisioning")
    token = tokens.new_token()
    deployments.set_token(store, found.machine_id, tokens.token_hash(token), time.time() + 3600)
    deployments.record_progress(store, found.machine_id, phase="installing")
    return render_kickstart(
        KickstartParams(
            hostname=found.node,
            ssh_public_key=job.ssh_public_key,
            mirror_url=job.mirror,
            mac=job.mac,
            token=token,
            base_url=base_url,
            flavour=job.flavour,  # type: ignore[arg-type]  # checked by KickstartParams
            address=job.address,
            prefix=job.prefix,
            root_device=job.root_device,
        )
    )


def seed_file(deployment: Deployment, name: str) -> bytes:
    if name not in SEED_FILES:
        raise Refused(404, f"no seed file {name[:40]!r}; there are {', '.join(SEED_FILES)}")
    return deployment.job.seed.get(name, "").encode()


def parse_report(body: bytes) -> dict[str, str]:
    """key=value lines (the agent's reports), strictly: unknown shapes are refused."""
    if len(body) > MAX_REPORT_BYTES:
        raise Refused(413, f"a report is at most {MAX_REPORT_BYTES} bytes")
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise Refused(400, "a report must be UTF-8 text") from None
    report: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", key):
            raise Refused(400, f"report line {line[:60]!r} is not key=value")
        report[key] = "".join(c if c.isprintable() else "?" for c in value.strip())[:500]
    return report


def phase_of(report: dict[str, str]) -> str:
    phase = report.get("phase", "")
    if not _PHASE.fullmatch(phase):
        raise Refused(422, f"phase {phase[:40]!r} must be a word like writing or verifying")
    return phase


def finish(store: Store, deployment: Deployment, report: dict[str, str]) -> Deployment:
    """Record the agent's result. ``ok`` counts only if the bytes written and read back
    hash to the image's sha256 (the service checks too, rather than trust a claim)."""
    status = report.get("status")
    if status not in ("ok", "failed"):
        raise Refused(422, "status must be ok or failed")
    want = deployment.job.image
    keys = ("sha256", "readback_sha256", "bytes", "seconds")
    result: dict[str, object] = {k: report[k] for k in keys if k in report}
    message = report.get("message") or None
    ok = status == "ok"
    # A kickstart install reports only its status (the installer checked its packages).
    if ok and want is not None:
        problem = _check_claim(report, want.sha256, want.size)
        if problem:
            ok, message = False, problem
    elif not message:
        message = "the agent reported a failure without a message; see the machine's console"
    return deployments.finish(store, deployment.machine_id, ok=ok, message=message, result=result)


def _check_claim(report: dict[str, str], sha256: str, size: int) -> str | None:
    for key in ("sha256", "readback_sha256"):
        got = report.get(key, "")
        if not _HEX64.fullmatch(got):
            return f"the agent's report lacks {key}"
        if got != sha256:
            return f"{key} mismatch: disk has {got}, image is {sha256}"
    if report.get("bytes") != str(size):
        return f"wrote {report.get('bytes')} bytes, the image has {size}"
    return None
