"""The boot service's HTTP side, on the standard library's ThreadingHTTPServer.

    GET  /healthz                          {"status": "ok"}
    GET  /boot.ipxe?mac=M[&platform=P]     the iPXE script for M (see ipxe.py)
    POST /v1/discovery                     facts + per-boot Bearer token
                                           -> 201 {"id", "state", "primary_mac"}
    GET  /files/PATH                       a file under the files directory
    GET  /v1/deploy[/image|/seed/NAME]     a provisioning machine's job, image, seed
    POST /v1/deploy/{progress,result}      its agent's reports (deploy_api.py)

Every refusal is a 4xx with {"error": reason}. One log line per request (method, path
without its query, status, client) goes to the caller's logger; tokens travel only in the
Authorization header and in script bodies, and neither is ever logged.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import socketserver
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs

from metalctl import deployments
from metalctl.boot import deploy_api, discovery, files, ipxe, tokens
from metalctl.boot.config import BootConfig
from metalctl.boot.facts import decode_facts
from metalctl.boot.installer import El9InstallerScript, render_el9_installer
from metalctl.boot.kickstart import Flavour
from metalctl.boot.refused import Refused
from metalctl.errors import ConflictError, MetalctlError, NotFoundError
from metalctl.store import MachineRecord, Store

_ALLOWED: dict[str, tuple[str, ...]] = {
    "/healthz": ("GET",),
    "/boot.ipxe": ("GET",),
    "/v1/discovery": ("POST",),
    "/files/": ("GET",),
    "/v1/deploy": ("GET",),
    "/v1/deploy/image": ("GET",),
    "/v1/deploy/seed/": ("GET",),
    "/v1/deploy/progress": ("POST",),
    "/v1/deploy/result": ("POST",),
    "/v1/deploy/kickstart": ("GET",),
}
# How often the bytes sent of an image are written to the store (progress).
_PROGRESS_EVERY_BYTES = 64 << 20
_PREFIXES = ("/files/", "/v1/deploy/seed/")
_MAC_CHARS = frozenset("0123456789abcdef")
# After a response the server reads and drops what the client still sends (the body of a
# request refused before its body was read) before closing: closing a socket with unread
# input makes the kernel send a reset, which can destroy the response before the client
# reads it. Bounded in bytes and time: a client that keeps sending only loses the socket.
_DRAIN_BYTES = 1 << 20
_DRAIN_SECONDS = 2.0
_LOGGED_PATH_CHARS = 200


@dataclass(frozen=True)
class BootApp:
    store_path: Path
    files_dir: Path | None
    config: BootConfig
    logger: logging.Logger


class BootHTTPServer(ThreadingHTTPServer):
    # stop() waits for requests in flight, each bounded by config.request_timeout.
    daemon_threads = False
    block_on_close = True

    def __init__(self, address: tuple[str, int], app: BootApp) -> None:
        self.app = app
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks getfqdn() for a name we never use: a DNS query for
        # nothing (and network traffic a test must not make).
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr; a library logs instead.
        self.app.logger.exception("boot service: error serving %s", client_address[0])

    def shutdown_request(self, request: Any) -> None:
        with suppress(OSError):
            request.shutdown(socket.SHUT_WR)
            _drain(request)
        self.close_request(request)


def _drain(sock: socket.socket) -> None:
    deadline = time.monotonic() + _DRAIN_SECONDS
    dropped = 0
    while dropped < _DRAIN_BYTES:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            return
        dropped += len(chunk)


class _Handler(BaseHTTPRequestHandler):
    server_version = "metalctl-boot"
    # One request per connection: the unread body of a refused request can never be
    # taken for the next request.
    protocol_version = "HTTP/1.0"
    _responded = False

    def version_string(self) -> str:
        return self.server_version

    @property
    def _app(self) -> BootApp:
        return cast(BootHTTPServer, self.server).app

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self._app.config.request_timeout)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server answers a method with no do_X with 501; for us that is a method this
        # path does not allow (405), or a path that does not exist (404).
        if code == HTTPStatus.NOT_IMPLEMENTED:
            self._handle()
            return
        self._refuse(code, message or HTTPStatus(code).phrase)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        raw = getattr(self, "path", None) or "-"
        path = _printable(raw.split("?", 1)[0])[:_LOGGED_PATH_CHARS]
        method = _printable(self.command or "-")[:20]
        status = int(code) if isinstance(code, int) else code
        self._app.logger.info("%s %s %s %s", method, path, status, self.client_address[0])

    def log_message(self, format: str, *args: Any) -> None:
        # http.server's own messages may quote a raw request line; log_request writes the
        # one line per request, so these are dropped.
        return

    # routing ------------------------------------------------------------------------
    def _handle(self) -> None:
        try:
            self._route()
        except Refused as exc:
            self._refuse(exc.status, exc.message, exc.problems)
        except (ConflictError, NotFoundError) as exc:
            status = 409 if isinstance(exc, ConflictError) else 404
            self._refuse(status, exc.message, hint=exc.hint)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True  # the client went away mid-answer
        except MetalctlError as exc:  # the store is locked or unusable: worth a retry later
            self._app.logger.error("boot service: %s", exc)
            self._fail(503, exc.message)
        except Exception:
            self._app.logger.exception("boot service: unexpected error")
            self._fail(500, "internal error in the boot service; its log has the details")

    def _route(self) -> None:
        path, _, query = self.path.partition("?")
        query = query.partition("#")[0]
        if not path.startswith("/"):
            raise Refused(400, "the request target must be a path such as /boot.ipxe")
        key = next((p for p in _PREFIXES if path.startswith(p)), path)
        allowed = _ALLOWED.get(key)
        if allowed is None:
            raise Refused(404, f"no such endpoint: {path[:100]}")
        if self.command not in allowed:
            self._refuse(
                405,
                f"{_printable(self.command or '')[:20]} is not allowed on {key}; "
                f"use {', '.join(allowed)}",
                headers={"Allow": ", ".join(allowed)},
            )
            return
        handlers: dict[str, Callable[[str, str], None]] = {
            "/healthz": self._healthz,
            "/boot.ipxe": self._boot_script,
            "/v1/discovery": self._discover,
            "/files/": self._file,
            "/v1/deploy": self._deploy_job,
            "/v1/deploy/image": self._deploy_image,
            "/v1/deploy/seed/": self._deploy_seed,
            "/v1/deploy/progress": self._deploy_progress,
            "/v1/deploy/result": self._deploy_result,
            "/v1/deploy/kickstart": self._deploy_kickstart,
        }
        handlers[key](path, query)

    # endpoints ----------------------------------------------------------------------
    def _healthz(self, path: str, query: str) -> None:
        self._send_json(200, {"status": "ok"})

    def _boot_script(self, path: str, query: str) -> None:
        mac, platform = _boot_query(query)
        config = self._app.config
        with self._store() as store:
            machine = store.find_machine(mac)
            action = "discovery" if machine is None else ipxe.boot_action(machine)
            if machine is not None and action == "local":
                script = ipxe.render_local(mac, machine, ipxe.firmware(machine, platform))
            elif machine is not None and action == "deploy":
                script = self._deploy_script(store, mac, machine)
            elif machine is not None and action == "wait":
                script = ipxe.render_wait(mac, machine, self._base_url(), config)
            else:
                issued = tokens.issue(store, mac, ttl=config.token_ttl)
                script = ipxe.render_discovery(
                    ipxe.DiscoveryScript(
                        mac, issued.token, issued.expires_at, self._base_url(), machine
                    ),
                    config,
                )
        self._send(200, script.encode(), "text/plain; charset=utf-8")

    def _deploy_script(self, store: Store, mac: str, machine: MachineRecord) -> str:
        config = self._app.config
        token = tokens.new_token()
        expires = time.time() + config.deploy_token_ttl
        found = deployments.get(store, machine.id)
        if found is not None and found.job.kickstart is not None and not found.finished:
            # EL9: the installer from the mirror; its kickstart brings the token later.
            job = found.job.kickstart
            flavour = cast(Flavour, job.flavour)  # a spec Literal when it was recorded
            installer = El9InstallerScript(mac, job.mirror, self._base_url(), flavour, machine.id)
            return render_el9_installer(installer)
        if not deployments.set_token(store, machine.id, tokens.token_hash(token), expires):
            return ipxe.render_wait(mac, machine, self._base_url(), config)
        script = ipxe.DiscoveryScript(mac, token, expires, self._base_url(), machine, "deploy")
        return ipxe.render_discovery(script, config)

    def _deploy_kickstart(self, path: str, query: str) -> None:
        mac, _ = _boot_query(query)
        with self._store() as store:
            text = deploy_api.kickstart_for(store, mac, self._base_url())
        self._send(200, text.encode(), "text/plain; charset=utf-8")

    def _deployment(self, store: Store) -> deployments.Deployment:
        token = discovery.bearer_token(self.headers.get("Authorization"))
        return deploy_api.authorize(store, token)

    def _deploy_job(self, path: str, query: str) -> None:
        with self._store() as store:
            found = self._deployment(store)
            deployments.record_progress(store, found.machine_id, phase="job-fetched")
        text = deploy_api.job_text(found, self._base_url())
        self._send(200, text.encode(), "text/plain; charset=utf-8")

    def _deploy_seed(self, path: str, query: str) -> None:
        with self._store() as store:
            found = self._deployment(store)
        body = deploy_api.seed_file(found, path[len("/v1/deploy/seed/") :])
        self._send(200, body, "text/plain; charset=utf-8")

    def _deploy_progress(self, path: str, query: str) -> None:
        with self._store() as store:
            found = self._deployment(store)
            report = deploy_api.parse_report(self._read_report())
            deployments.record_progress(store, found.machine_id, phase=deploy_api.phase_of(report))
        self._send_json(200, {"phase": report["phase"]})

    def _deploy_result(self, path: str, query: str) -> None:
        with self._store() as store:
            found = self._deployment(store)
            report = deploy_api.parse_report(self._read_report())
            done = deploy_api.finish(store, found, report)
        self._send_json(200, {"state": "provisioned" if done.status == "ok" else "failed"})

    def _read_report(self) -> bytes:
        length = discovery.body_length(
            self.headers.get_all("Content-Length") or [],
            self.headers.get("Transfer-Encoding"),
            limit=deploy_api.MAX_REPORT_BYTES,
        )
        return self._read_body(length)

    def _deploy_image(self, path: str, query: str) -> None:
        with self._store() as store:
            found = self._deployment(store)
            deployments.record_progress(store, found.machine_id, phase="streaming", bytes_sent=0)
        try:
            handle = open(deploy_api.image_of(found).path, "rb")  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise Refused(404, f"the image file is not readable: {exc.strerror}") from None
        with handle:
            size = os.fstat(handle.fileno()).st_size
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self._responded = True
            self._stream(handle, found.machine_id)

    def _stream(self, handle: Any, machine_id: str) -> None:
        sent, reported = 0, 0
        # The image may take minutes at the client's pace: the per-read timeout stays,
        # the total has no limit of its own (the agent's side bounds it).
        while chunk := handle.read(1 << 20):
            self.wfile.write(chunk)
            sent += len(chunk)
            if sent - reported >= _PROGRESS_EVERY_BYTES:
                with self._store() as store:
                    deployments.record_progress(store, machine_id, bytes_sent=sent)
                reported = sent
        with self._store() as store:
            deployments.record_progress(store, machine_id, bytes_sent=sent)

    def _discover(self, path: str, query: str) -> None:
        token = discovery.bearer_token(self.headers.get("Authorization"))
        with self._store() as store:
            discovery.precheck(store, token)
            length = discovery.body_length(
                self.headers.get_all("Content-Length") or [],
                self.headers.get("Transfer-Encoding"),
            )
            facts = decode_facts(self._read_body(length))
            machine = discovery.redeem(store, token, facts)
        self._send_json(
            201, {"id": machine.id, "state": machine.state, "primary_mac": machine.primary_mac}
        )

    def _file(self, path: str, query: str) -> None:
        target = files.resolve(self._app.files_dir, path[len("/files/") :])
        try:
            handle = target.open("rb")
        except OSError as exc:
            raise Refused(404, f"cannot read {path}: {exc.strerror}") from None
        with handle:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(os.fstat(handle.fileno()).st_size))
            self.end_headers()
            self._responded = True
            shutil.copyfileobj(handle, self.wfile, 1 << 20)

    # helpers ------------------------------------------------------------------------
    @contextmanager
    def _store(self) -> Iterator[Store]:
        # One connection per request: a sqlite3 connection belongs to its thread, and
        # every request has its own thread.
        store = Store(self._app.store_path)
        try:
            yield store
        finally:
            store.close()

    def _read_body(self, length: int) -> bytes:
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            raise Refused(
                408, f"the body did not arrive within {self._app.config.request_timeout:g} s"
            ) from None
        if len(body) < length:
            raise Refused(400, f"body ended after {len(body)} of {length} bytes (Content-Length)")
        return body

    def _base_url(self) -> str:
        configured = self._app.config.base_url
        if configured:
            return configured.rstrip("/")
        # The address this request arrived on is one the machine can reach.
        host, port = self.connection.getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}"

    def _refuse(
        self,
        status: int,
        message: str,
        problems: Sequence[tuple[str, str]] = (),
        *,
        hint: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        body: dict[str, Any] = {"error": message}
        if hint:
            body["hint"] = hint
        if problems:
            body["problems"] = [{"field": f, "message": m} for f, m in problems]
        self._send_json(status, body, headers)

    def _fail(self, status: int, message: str) -> None:
        if not self._responded:
            self._send_json(status, {"error": message})
        self.close_connection = True

    def _send_json(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        self._send(status, json.dumps(body).encode(), "application/json", headers)

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        # Scripts carry single-use tokens: no cache may keep or replay them.
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self._responded = True
        if self.command != "HEAD":
            self.wfile.write(body)


def _boot_query(query: str) -> tuple[str, str | None]:
    try:
        params = parse_qs(query, max_num_fields=8)
    except ValueError:
        raise Refused(400, "too many query parameters: use ?mac=MAC[&platform=P]") from None
    macs, platforms = params.get("mac", []), params.get("platform", [])
    if len(macs) != 1:
        raise Refused(400, "give the booting NIC's MAC once: /boot.ipxe?mac=${net0/mac}")
    mac = _normal_mac(macs[0])
    if mac is None:
        raise Refused(400, f"mac {macs[0][:40]!r} is not a MAC address like 52:54:00:12:34:56")
    return mac, platforms[0] if platforms else None


def _normal_mac(text: str) -> str | None:
    """Lowercase colon form of aa:bb:cc:dd:ee:ff or AA-BB-CC-DD-EE-FF; None if not a MAC."""
    key = text.strip().lower().replace("-", ":")
    parts = key.split(":")
    ok = len(parts) == 6 and all(len(p) == 2 and set(p) <= _MAC_CHARS for p in parts)
    return key if ok else None


def _printable(text: str) -> str:
    # A request line can hold control characters; a log line must not (log injection).
    return "".join(c if c.isprintable() else "?" for c in text)
