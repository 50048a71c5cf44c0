"""A minimal QMP client (QEMU's JSON machine protocol over a unix socket) and power control.

QEMU serves one QMP client at a time: each call here connects, negotiates
(greeting, ``qmp_capabilities``), runs its commands and disconnects. Asynchronous events
(``{"event": ...}``) arriving between a command and its answer are skipped.

The VMs run with ``-no-shutdown``: a guest ``poweroff`` leaves QEMU alive in state
``shutdown``. ``on`` is status ``running``; anything else (``paused``, ``shutdown``,
``prelaunch``, ``internal-error``, ...) is ``off``. Powering off holds the machine in reset
(``stop`` + ``system_reset``: status ``prelaunch``); powering on is a fresh QEMU process
(``vmlab.power`` says why).
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from metalctl.errors import ProvisionError, WaitTimeout

PowerState = Literal["on", "off"]
PowerAction = Literal["on", "off", "cycle"]

COMMAND_SECONDS = 10.0
STATE_SECONDS = 10.0
_POLL = 0.05
_MAX_LINE = 1 << 20


class QmpClient:
    """``with QmpClient(path, vm="node1") as qmp: qmp.execute("query-status")``."""

    def __init__(
        self, path: Path | str, *, vm: str | None = None, timeout: float = COMMAND_SECONDS
    ):
        self.path = Path(path)
        self.vm = vm or self.path.parent.name
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._next_id = 0

    def __enter__(self) -> QmpClient:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _error(self, what: str) -> ProvisionError:
        return ProvisionError(
            f"VM {self.vm}: {what} (QMP socket {self.path})",
            hint="is QEMU still running? its console log is beside the socket",
        )

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except OSError as exc:
            sock.close()
            raise self._error(f"cannot connect: {exc.strerror or exc}") from exc
        self._sock = sock
        deadline = time.monotonic() + self.timeout
        greeting = self._read(deadline)
        if "QMP" not in greeting:
            self.close()
            raise self._error(f"not a QMP greeting: {greeting!r:.200}")
        self.execute("qmp_capabilities")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buffer = b""

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run ``command``; its ``return`` value, or a ProvisionError with QEMU's ``error``.
        Bounded by the client's timeout."""
        if self._sock is None:
            raise self._error("not connected")
        self._next_id += 1
        request: dict[str, Any] = {"execute": command, "id": self._next_id}
        if arguments:
            request["arguments"] = arguments
        deadline = time.monotonic() + self.timeout
        try:
            self._sock.sendall(json.dumps(request).encode() + b"\n")
        except OSError as exc:
            raise self._error(f"'{command}' not sent: {exc.strerror or exc}") from exc
        while True:
            message = self._read(deadline)
            if "event" in message or message.get("id") != self._next_id:
                continue
            if "error" in message:
                err = message["error"]
                raise self._error(f"'{command}' refused: {err.get('desc', err)}")
            if "return" in message:
                return message["return"]

    def _read(self, deadline: float) -> dict[str, Any]:
        assert self._sock is not None
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._error(f"no answer in {self.timeout:g} s")
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError as exc:
                raise self._error(f"no answer in {self.timeout:g} s") from exc
            except OSError as exc:
                raise self._error(f"connection lost: {exc.strerror or exc}") from exc
            if not chunk:
                raise self._error("QEMU closed the connection (did it exit?)")
            self._buffer += chunk
            if len(self._buffer) > _MAX_LINE:
                raise self._error("an answer longer than 1 MiB")
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
        except ValueError as exc:
            raise self._error(f"not JSON: {line[:200]!r}") from exc
        if not isinstance(message, dict):
            raise self._error(f"not a QMP message: {line[:200]!r}")
        return message

    def status(self) -> str:
        """QEMU's run state: ``running``, ``paused``, ``shutdown``, ``prelaunch``, ..."""
        return str(self.execute("query-status")["status"])

    def wait_status(self, wanted: set[str], seconds: float = STATE_SECONDS) -> str:
        deadline = time.monotonic() + seconds
        while True:
            status = self.status()
            if status in wanted:
                return status
            if time.monotonic() >= deadline:
                raise WaitTimeout(
                    f"VM {self.vm}: still '{status}' after {seconds:g} s "
                    f"(waited for {' or '.join(sorted(wanted))})"
                )
            time.sleep(_POLL)


def _state_of(status: str) -> PowerState:
    return "on" if status == "running" else "off"


def power_state(sock: Path | str, *, vm: str | None = None) -> PowerState:
    """``on`` when the VM runs, else ``off``."""
    with QmpClient(sock, vm=vm) as qmp:
        return _state_of(qmp.status())


def hold_in_reset(sock: Path | str, *, vm: str | None = None) -> None:
    """Power off: the machine stops and is held in reset (status ``prelaunch``)."""
    with QmpClient(sock, vm=vm) as qmp:
        qmp.execute("stop")
        qmp.execute("system_reset")
        # The reset is carried out by QEMU's main loop, after the command returns.
        qmp.wait_status({"prelaunch"})
