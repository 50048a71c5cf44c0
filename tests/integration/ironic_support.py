"""A real standalone Ironic on loopback for tests and benchmarks, and sushy-tools' Redfish
BMC emulator (fake driver: the one stand-in here, for real BMCs).

Ironic runs all-in-one (`ironic --config-file F`: API + conductor in one process) with
noauth, no RPC bus, SQLite, no DHCP, noop networking and the fake-hardware and redfish
hardware types; its venv is the one scripts/setup-ironic.sh caches (make setup). The
database schema is created once per venv (cached next to it) and copied per start.
Readiness is the API answering AND the log not showing a crashed worker (its master
re-forks a crashing worker forever instead of exiting).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests
import yaml

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "scripts" / "ironic-requirements.txt"
CACHE = Path(os.environ.get("METALCTL_IRONIC_CACHE", "/var/cache/metalctl/ironic"))
START_TIMEOUT = 60.0
# A request line of Ironic's API log: "127.0.0.1 - GET /v1/nodes/x - 200 (12.3ms)".
API_LINE = re.compile(r"ironic\.api .* - (GET|POST|PUT|PATCH|DELETE) (\S+) - (\d{3}) ")


def venv() -> Path:
    """The cached Ironic venv for scripts/ironic-requirements.txt (same key as
    scripts/setup-ironic.sh); a clear failure when `make setup` has not made it."""
    pyver = f"py{sys.version_info[0]}.{sys.version_info[1]}\n"
    key = hashlib.sha256(REQUIREMENTS.read_bytes() + pyver.encode()).hexdigest()[:16]
    path = CACHE / key / "venv"
    if not (path.parent / ".complete").exists():
        raise RuntimeError(f"no Ironic venv at {path}: run 'make setup' (scripts/setup-ironic.sh)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(port: int, folder: Path, db: Path) -> str:
    return f"""\
[DEFAULT]
auth_strategy = noauth
rpc_transport = none
host = metalctl-test
enabled_hardware_types = fake-hardware,redfish
enabled_boot_interfaces = fake,redfish-virtual-media
enabled_deploy_interfaces = fake,direct,ramdisk
enabled_management_interfaces = fake,redfish
enabled_power_interfaces = fake,redfish
enabled_inspect_interfaces = fake,no-inspect,redfish
enabled_network_interfaces = noop
default_network_interface = noop
enabled_console_interfaces = fake,no-console
enabled_raid_interfaces = fake,no-raid
enabled_vendor_interfaces = fake,no-vendor
enabled_bios_interfaces = fake,no-bios
enabled_firmware_interfaces = fake,no-firmware
log_file = {folder / "ironic.log"}
use_stderr = false
debug = false
[api]
host_ip = 127.0.0.1
port = {port}
[database]
connection = sqlite:///{db}
[dhcp]
dhcp_provider = none
[conductor]
# Cleaning with fake interfaces is a no-op; the 'direct' and 'ramdisk' nodes of the
# failure tests would need a ramdisk agent to clean. Undeploy is still exercised.
automated_clean = false
[redfish]
connection_attempts = 1
connection_retry_interval = 1
"""


def schema_db() -> Path:
    """An empty Ironic database with the schema, made once per venv (ironic-dbsync
    create_schema: `upgrade` fails on SQLite) and copied by every start."""
    path = venv().parent / "schema.sqlite"
    with open(path.parent / ".schema.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            with tempfile.TemporaryDirectory() as tmp:
                db = Path(tmp) / "ironic.sqlite"
                conf = Path(tmp) / "ironic.conf"
                conf.write_text(_config(free_port(), Path(tmp), db))
                subprocess.run(
                    [str(venv() / "bin" / "ironic-dbsync"), "--config-file", str(conf),
                     "create_schema"],
                    check=True, capture_output=True, timeout=120,
                )  # fmt: skip
                shutil.copy(db, path.with_suffix(".tmp"))
                os.replace(path.with_suffix(".tmp"), path)
    return path


@dataclass
class IronicServer:
    folder: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.folder / "ironic.log"

    @property
    def db(self) -> Path:
        return self.folder / "ironic.sqlite"

    def start(self) -> None:
        """Start (or restart: same port, same database) and wait until it serves."""
        conf = self.folder / "ironic.conf"
        conf.write_text(_config(self.port, self.folder, self.db))
        out = open(self.folder / "stdout.log", "ab")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(
            [str(venv() / "bin" / "ironic"), "--config-file", str(conf)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        out.close()
        offset = self.log.stat().st_size if self.log.exists() else 0
        self._wait_ready(offset)

    def _wait_ready(self, offset: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            crashed = self._log_since(offset).find("exited with status")
            if self.proc.poll() is not None or crashed >= 0:
                self.stop()
                raise RuntimeError(f"Ironic failed to start; log {self.log}:\n{self.tail()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/v1/nodes", timeout=2).status_code == 200:
                    return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"Ironic did not answer within {START_TIMEOUT:.0f}s:\n{self.tail()}")

    def _log_since(self, offset: int) -> str:
        if not self.log.exists():
            return ""
        with open(self.log, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self._log_since(0).splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the master and its workers (its process group); SIGKILL after 15 s."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
        # Workers left in the group after the master's exit.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by Ironic's processes (its process group:
        the master and its worker, which runs the API and the conductor)."""
        if self.proc is None:
            return 0.0
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == self.proc.pid:  # pgrp
                    total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / os.sysconf("SC_CLK_TCK")

    def api_calls(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every API request so far, from Ironic's own log."""
        return [
            (m.group(1), m.group(2), int(m.group(3)))
            for m in map(API_LINE.search, self._log_since(0).splitlines())
            if m
        ]


@contextlib.contextmanager
def standalone_ironic(folder: Path | None = None) -> Iterator[IronicServer]:
    """A fresh Ironic (empty database) on a free loopback port; stopped afterwards, also
    when the test fails."""
    with contextlib.ExitStack() as stack:
        if folder is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ironic-")))
        folder.mkdir(parents=True, exist_ok=True)
        server = IronicServer(folder, free_port())
        shutil.copy(schema_db(), server.db)
        stack.callback(server.stop)
        server.start()
        yield server


# -- sushy-tools: a Redfish BMC emulator (fake driver: no real machine behind it) ---------


@dataclass(frozen=True)
class FakeSystem:
    uuid: str
    name: str
    mac: str


@contextlib.contextmanager
def redfish_emulator(
    folder: Path, systems: list[FakeSystem], username: str, password: str
) -> Iterator[str]:
    """sushy-emulator with the fake driver on a free loopback port, HTTP basic auth with
    one user; yields its URL. A stand-in for real BMCs: it keeps a power state and
    applies a change 1-11 s later (on purpose), no machine behind it."""
    folder.mkdir(parents=True, exist_ok=True)
    htpasswd = folder / "htpasswd"
    digest = subprocess.run(  # bcrypt: the only digest sushy-tools takes (in its venv)
        [str(venv() / "bin" / "python"), "-c",
         "import bcrypt, sys; print(bcrypt.hashpw(sys.stdin.read().encode(), "
         "bcrypt.gensalt(rounds=4)).decode())"],
        input=password, capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    htpasswd.write_text(f"{username}:{digest}\n")
    port = free_port()
    conf = folder / "sushy.conf"
    fake = [
        {"uuid": s.uuid, "name": s.name, "power_state": "Off", "nics": [{"mac": s.mac}]}
        for s in systems
    ]
    conf.write_text(
        f"SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n"
        f"SUSHY_EMULATOR_LISTEN_PORT = {port}\n"
        f"SUSHY_EMULATOR_FAKE_DRIVER = True\n"
        f"SUSHY_EMULATOR_FAKE_SYSTEMS = {fake!r}\n"
        f"SUSHY_EMULATOR_AUTH_FILE = {str(htpasswd)!r}\n"
        f"SUSHY_EMULATOR_STATE_DIR = {str(folder / 'state')!r}\n"
    )
    log = open(folder / "sushy.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(venv() / "bin" / "sushy-emulator"), "--config", str(conf)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"sushy-emulator exited: {(folder / 'sushy.log').read_text()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{url}/redfish/v1/", timeout=2).status_code in (200, 401):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("sushy-emulator did not answer within 30 s")
            time.sleep(0.2)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


# -- specs -------------------------------------------------------------------------------

# Never fetched: the fake deploy does not read the image ('direct' deploys do, and fail).
IMAGE = {"url": "http://127.0.0.1:9/debian-12.raw", "sha256": "ab" * 32}


def fake_node(i: int, address: str, ssh_port: int, **extra: object) -> dict[str, object]:
    """A fake-hardware node n<i> with one MAC."""
    return {
        "name": f"n{i:02d}",
        "address": address,
        "ssh": {"port": ssh_port},
        "macs": [f"52:54:00:1e:{i // 256:02x}:{i % 256:02x}"],
        "bmc": {"driver": "fake-hardware"},
        **extra,
    }


def ironic_spec(name: str, endpoint: str, nodes: list[dict[str, object]]) -> str:
    first = str(nodes[0]["name"])
    return yaml.safe_dump(
        {
            "apiVersion": "metalctl/v1alpha1",
            "kind": "Cluster",
            "metadata": {"name": name},
            "spec": {
                "provisioner": "ironic",
                "ironic": {"endpoint": endpoint, "auth": "none"},
                "image": IMAGE,
                "nodes": nodes,
                "swarm": {"master": first, "managers": [first]},
                "consul": {"servers": [first]},
            },
        },
        sort_keys=False,
    )
