"""dnsmasq as a child process of the boot service: checked, started, watched, stopped.

dnsmasq runs in the foreground (``keep-in-foreground`` in its config) in a session of its
own, so a Ctrl-C in the terminal reaches metalctl only and metalctl stops dnsmasq in
order. Its log (stderr: ``log-facility=-``) goes to a file in the state directory. The
child's pid is kept in a file too: a dnsmasq left behind by a metalctl that was killed
(SIGKILL leaves no time to stop it) is named at the next start instead of a bind error.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from metalctl.errors import ConflictError, HostSetupError, UsageError

LOG_NAME = "dnsmasq.log"
PID_NAME = "dnsmasq.pid"
READY_SECONDS = 10.0
STOP_SECONDS = 5.0
_TEST_SECONDS = 10.0
_READY_LINE = "started, version"  # logged once its sockets are bound and root is dropped
_POLL = 0.05
_ROTATE_BYTES = 16 << 20
_TAIL_BYTES = 64 << 10  # log-dhcp is verbose; keep one old log at most


def dnsmasq_binary() -> str:
    found = shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin:/sbin")
    if found is None:
        raise HostSetupError(
            "dnsmasq not found",
            hint="install Debian's package dnsmasq-base (apt-get install dnsmasq-base)",
        )
    return found


def check_config(config_path: Path) -> None:
    """``dnsmasq --test``: a bad file is refused here, with dnsmasq's own words."""
    try:
        done = subprocess.run(
            [dnsmasq_binary(), "--test", "-C", str(config_path)],
            capture_output=True,
            text=True,
            timeout=_TEST_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise HostSetupError(f"'dnsmasq --test' did not finish in {_TEST_SECONDS:g} s") from exc
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip()
        raise UsageError(
            f"dnsmasq refuses the configuration {config_path}: {said}",
            hint="this is a metalctl bug unless the settings hold something odd; please report it",
        )


class DnsmasqProcess:
    def __init__(self, config_path: Path, state_dir: Path) -> None:
        self.config_path = config_path
        self.log_path = state_dir / LOG_NAME
        self.pid_path = state_dir / PID_NAME
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_start = 0

    def start(self, ready_seconds: float = READY_SECONDS) -> DnsmasqProcess:
        self._refuse_leftover()
        _rotate(self.log_path)
        with self.log_path.open("ab") as log:
            self._log_start = log.tell()
            self._proc = _spawn(self.config_path, log)
        self.pid_path.write_text(f"{self._proc.pid}\n")
        try:
            self._wait_ready(ready_seconds)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def exit_status(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def stop(self, seconds: float = STOP_SECONDS) -> None:
        """SIGTERM, then SIGKILL after ``seconds``; reaps the child and drops the pid file."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        end_process(proc, seconds)
        self.pid_path.unlink(missing_ok=True)

    def log_tail(self, lines: int = 8) -> str:
        """The last lines this run wrote to its log (why it stopped, usually)."""
        try:
            with self.log_path.open("rb") as fh:
                # From this run's start, but no more than the last 64 KiB of a long log.
                fh.seek(max(self._log_start, fh.seek(0, os.SEEK_END) - _TAIL_BYTES))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def _wait_ready(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not self.alive():
                raise HostSetupError(
                    f"dnsmasq stopped at start ({describe_status(self.exit_status())}):\n{self.log_tail()}",
                    hint=f"its log: {self.log_path}; another DHCP or TFTP server on this host "
                    "may hold ports 67/69 on the interface",
                )
            if _READY_LINE in self.log_tail(lines=50):
                return
            time.sleep(_POLL)
        raise HostSetupError(
            f"dnsmasq did not report ready within {seconds:g} s",
            hint=f"its log: {self.log_path}",
        )

    def _refuse_leftover(self) -> None:
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return
        if _is_our_dnsmasq(pid, self.config_path):
            raise ConflictError(
                f"a dnsmasq started by an earlier 'metalctl boot serve' still runs (pid {pid}, "
                f"config {self.config_path})",
                hint=f"stop it (kill {pid}) or the boot service that runs it, then start again",
            )
        self.pid_path.unlink(missing_ok=True)  # stale: that process is gone

    def __enter__(self) -> DnsmasqProcess:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def end_process(proc: subprocess.Popen[bytes], seconds: float = STOP_SECONDS) -> None:
    """SIGTERM, then SIGKILL after ``seconds``; reaps the child."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(seconds)


def _spawn(config_path: Path, log: IO[bytes]) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            [dnsmasq_binary(), "-C", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        raise HostSetupError(f"cannot start dnsmasq: {exc.strerror or exc}") from exc


def _is_our_dnsmasq(pid: int, config_path: Path) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return (
        bool(argv) and os.path.basename(argv[0]) == b"dnsmasq" and str(config_path).encode() in argv
    )


def _rotate(log_path: Path) -> None:
    try:
        if log_path.stat().st_size > _ROTATE_BYTES:
            log_path.replace(log_path.with_name(log_path.name + ".1"))
    except FileNotFoundError:
        pass


def describe_status(status: int | None) -> str:
    """'exit 2' or 'killed by SIGKILL': how the child ended, for messages."""
    if status is None:
        return "running"
    if status < 0:
        return f"killed by {signal.Signals(-status).name}"
    return f"exit {status}"
