"""apt-cacher-ng as a child process of the boot service: Debian's archive for nodes
without internet.

The provisioning network has no route out, so nodes installed over PXE get their Debian
packages through the admin host: apt on the node uses ``http://ADDRESS:PORT`` as its HTTP
proxy (cloud-init ``apt: {proxy: ...}``; see ``proxy_url``). apt-cacher-ng fetches from
Debian's archive once and serves later requests from its cache.

metalctl owns the process as it owns dnsmasq (``dnsmasq_process``): its own config
directory (``apt-cacher-ng -c STATE/apt-cacher-ng/conf``: /etc/apt-cacher-ng and the
system cache are never read or written), ``ForeGround: 1``, a session of its own, a pid
file for a leftover of a killed metalctl, SIGTERM then SIGKILL at stop.

It is not a general proxy: ``ForceManaged`` refuses (403, before any name lookup or
connection) every URL that no ``Remap-`` line covers, and the only Remap lines are Debian's
archive (``deb.debian.org/debian``, ``deb.debian.org/debian-security``,
``security.debian.org/debian-security``); CONNECT tunnels are refused (``PassThroughPattern``
matches nothing), only port 80 upstream, no redirects followed, no report page, no local
directories, no UNIX socket. It listens on ADDRESS:PORT only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from types import TracebackType
from typing import IO

from metalctl.boot.dnsmasq_process import describe_status, end_process
from metalctl.errors import ConflictError, HostSetupError, UsageError

DEFAULT_PORT = 3142
# apt-cacher-ng 3.7.4 fails to bind a port above this ("Error resolving address for
# binding"): it is refused here with a clear message instead.
MAX_PORT = 32767
DIR_NAME = "apt-cacher-ng"
READY_SECONDS = 10.0
STOP_SECONDS = 5.0
# Debian's package creates this account; as root, the daemon runs as it (else as the caller).
USER = "apt-cacher-ng"
SUPPORT_DIR = Path("/usr/lib/apt-cacher-ng")
# The archive nodes may reach through the cache: (repository name, URL prefixes a client may
# ask for, upstream URLs). Everything else is refused by ForceManaged.
REPOSITORIES = (
    ("debrep", ("deb.debian.org/debian",), ("http://deb.debian.org/debian/",)),
    (
        "secdeb",
        ("deb.debian.org/debian-security", "security.debian.org/debian-security"),
        ("http://deb.debian.org/debian-security/", "http://security.debian.org/debian-security/"),
    ),
)
_ERR_LOG = "apt-cacher.err"  # apt-cacher-ng's own error log in LogDir
_OUT_LOG = "apt-cacher-ng.out"  # the child's stdout and stderr
_POLL = 0.05
_CONNECT_SECONDS = 0.5
_ROTATE_BYTES = 16 << 20
_TAIL_BYTES = 64 << 10


def package_cache_binary() -> str:
    found = shutil.which("apt-cacher-ng") or shutil.which("apt-cacher-ng", path="/usr/sbin:/sbin")
    if found is None:
        raise HostSetupError(
            "apt-cacher-ng not found (needed by --package-cache)",
            hint="install Debian's package apt-cacher-ng "
            "(apt-get install --no-install-recommends apt-cacher-ng)",
        )
    return found


def proxy_url(address: IPv4Address, port: int = DEFAULT_PORT) -> str:
    """What a node's apt uses as its HTTP proxy: ``http://10.10.0.1:3142``."""
    return f"http://{address}:{port}"


@dataclass(frozen=True)
class CacheLayout:
    """STATE_DIR/apt-cacher-ng/: conf/acng.conf, cache/, log/, apt-cacher-ng.pid.

    ``shared_cache``: the packages live there instead of under cache/ (container labs
    share one host-wide cache, ``metalctl cache fill`` fills it). One apt-cacher-ng at a
    time uses a cache directory: CACHE.lock beside it is held by the running daemon.
    """

    root: Path
    shared_cache: Path | None = None

    @classmethod
    def under(cls, state_dir: Path, shared_cache: Path | None = None) -> CacheLayout:
        shared = shared_cache.absolute() if shared_cache else None
        return cls(state_dir.absolute() / DIR_NAME, shared)

    @property
    def conf_dir(self) -> Path:
        return self.root / "conf"

    @property
    def config_path(self) -> Path:
        return self.conf_dir / "acng.conf"

    @property
    def cache_dir(self) -> Path:
        return self.shared_cache or self.root / "cache"

    @property
    def lock_path(self) -> Path:
        return lock_path(self.cache_dir)

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def transfer_log(self) -> Path:
        """One line per transfer: ``time|I|bytes|client|path`` for data fetched from
        upstream into the cache, ``O`` for data sent to a client."""
        return self.log_dir / "apt-cacher.log"

    @property
    def error_log(self) -> Path:
        return self.log_dir / _ERR_LOG

    @property
    def out_log(self) -> Path:
        return self.log_dir / _OUT_LOG

    @property
    def pid_path(self) -> Path:
        return self.root / "apt-cacher-ng.pid"


def render_config(layout: CacheLayout, address: IPv4Address, port: int) -> str:
    lines = [
        "# Written by metalctl at every start of its package cache: edits are lost.",
        f"CacheDir: {layout.cache_dir}",
        f"LogDir: {layout.log_dir}",
        f"SupportDir: {SUPPORT_DIR}",
        f"Port: {port}",
        f"BindAddress: {address}",
        "SocketPath:",  # no UNIX socket (the system's default is /run/apt-cacher-ng/socket)
        "ForeGround: 1",
        "UnbufferLogs: 1",
        "VerboseLog: 1",
        "# Debian's archive only: a URL that no Remap line covers is refused (403).",
        "ForceManaged: 1",
        "# No CONNECT tunnels: the pattern matches no host:port.",
        "PassThroughPattern: ^$",
        "AllowUserPorts: 80",
        "RedirMax: 0",
    ]
    for name, prefixes, targets in REPOSITORIES:
        lines.append(f"Remap-{name}: {' '.join(prefixes)} ; {' '.join(targets)}")
    return "\n".join(lines) + "\n"


class PackageCache:
    """apt-cacher-ng on ``address``:``port`` with its state in STATE_DIR/apt-cacher-ng."""

    def __init__(
        self,
        state_dir: Path,
        address: IPv4Address,
        port: int = DEFAULT_PORT,
        *,
        shared_cache: Path | None = None,
        owner: str = "metalctl boot serve",
    ) -> None:
        if not 1 <= port <= MAX_PORT:
            raise UsageError(
                f"package cache port {port} is out of range: apt-cacher-ng listens on "
                f"1-{MAX_PORT} only"
            )
        self.layout = CacheLayout.under(state_dir, shared_cache)
        self.owner = owner  # said to whoever finds the cache directory in use
        self.address = address
        self.port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_starts: dict[Path, int] = {}

    @property
    def url(self) -> str:
        return proxy_url(self.address, self.port)

    @property
    def log_path(self) -> Path:
        return self.layout.log_dir

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def exit_status(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def start(self, ready_seconds: float = READY_SECONDS) -> PackageCache:
        binary = package_cache_binary()
        self._refuse_leftover()
        if _answers(self.address, self.port):
            raise HostSetupError(
                f"port {self.port} on {self.address} is taken: the package cache cannot listen there",
                hint="stop what listens there (a system apt-cacher-ng?) or choose "
                "--package-cache-port",
            )
        account = _account()
        self._prepare_dirs(account)
        for path in (self.layout.error_log, self.layout.out_log, self.layout.transfer_log):
            _rotate(path)
            self._log_starts[path] = _size(path)
        lock_fd = _take_lock(self.layout.lock_path, self.owner)
        try:
            with self.layout.out_log.open("ab") as out:
                # The daemon inherits the lock: it is held exactly as long as the daemon runs.
                self._proc = _spawn(binary, self.layout.conf_dir, out, account, lock_fd)
        finally:
            os.close(lock_fd)
        self.layout.pid_path.write_text(f"{self._proc.pid}\n")
        try:
            self._wait_ready(ready_seconds)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, seconds: float = STOP_SECONDS) -> None:
        """SIGTERM, then SIGKILL after ``seconds``; reaps the child and drops the pid file."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        end_process(proc, seconds)
        self.layout.pid_path.unlink(missing_ok=True)

    def detach(self) -> int:
        """Leave the daemon running after this process exits (a container lab's cache
        outlives 'lab up'); ``stop_detached`` ends it. Returns its pid."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            raise HostSetupError("apt-cacher-ng is not running: nothing to leave running")
        return proc.pid

    def log_tail(self, lines: int = 8) -> str:
        """The last lines this run wrote to its error log and its stdout/stderr."""
        text = ""
        for path in (self.layout.error_log, self.layout.out_log):
            try:
                with path.open("rb") as fh:
                    start = self._log_starts.get(path, 0)
                    fh.seek(max(start, fh.seek(0, os.SEEK_END) - _TAIL_BYTES))
                    text += fh.read().decode("utf-8", "replace") + "\n"
            except OSError:
                continue
        kept = [line for line in text.splitlines() if line.strip()]
        return "\n".join(kept[-lines:])

    def _prepare_dirs(self, account: pwd.struct_passwd | None) -> None:
        layout = self.layout
        for directory in (layout.root, layout.conf_dir):
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o755)
        layout.config_path.write_text(render_config(layout, self.address, self.port))
        layout.config_path.chmod(0o644)
        for directory in (layout.cache_dir, layout.log_dir):
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o750)
            if account is not None and directory.stat().st_uid != account.pw_uid:
                # The daemon writes here only: it owns what is below too (a cache filled by
                # an earlier run as another user would be unwritable otherwise).
                for path in (directory, *directory.rglob("*")):
                    os.chown(path, account.pw_uid, account.pw_gid, follow_symlinks=False)
        if account is not None:
            for directory in {layout.root, layout.cache_dir}:
                _check_enterable(directory, account)

    def _wait_ready(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not self.alive():
                raise HostSetupError(
                    f"apt-cacher-ng stopped at start ({describe_status(self.exit_status())}):\n"
                    f"{self.log_tail()}",
                    hint=f"its logs: {self.layout.log_dir}",
                )
            if _answers(self.address, self.port) and self.alive():
                return
            time.sleep(_POLL)
        raise HostSetupError(
            f"apt-cacher-ng did not answer on {self.address}:{self.port} within {seconds:g} s:\n"
            f"{self.log_tail()}",
            hint=f"its logs: {self.layout.log_dir}",
        )

    def _refuse_leftover(self) -> None:
        pid = running_pid(self.layout)
        if pid is not None:
            raise ConflictError(
                f"an apt-cacher-ng started by an earlier 'metalctl boot serve' still runs "
                f"(pid {pid}, config {self.layout.conf_dir})",
                hint=f"stop it (kill {pid}) or the boot service that runs it, then start again",
            )
        self.layout.pid_path.unlink(missing_ok=True)

    def __enter__(self) -> PackageCache:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def running_pid(layout: CacheLayout) -> int | None:
    """The pid of the apt-cacher-ng running with this layout's config, if one runs."""
    try:
        pid = int(layout.pid_path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _is_our_cache(pid, layout.conf_dir) else None


def stop_detached(layout: CacheLayout, seconds: float = STOP_SECONDS) -> bool:
    """End a detached daemon (SIGTERM, then SIGKILL after ``seconds``); True if one ran.
    It is not our child: its end is seen in /proc (a zombie has no command line)."""
    pid = running_pid(layout)
    if pid is not None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and _is_our_cache(pid, layout.conf_dir):
                time.sleep(_POLL)
            if not _is_our_cache(pid, layout.conf_dir):
                break
    layout.pid_path.unlink(missing_ok=True)
    return pid is not None


def lock_path(cache_dir: Path) -> Path:
    """Held (flock) by the daemon for as long as it runs, so that two daemons never write
    one cache directory; its text says who holds it."""
    return cache_dir.with_name(cache_dir.name + ".lock")


def refuse_if_in_use(cache_dir: Path) -> None:
    """ConflictError naming the holder when a daemon uses ``cache_dir``: a check before
    anything is made (the start takes the lock for real)."""
    if lock_path(cache_dir).exists():
        os.close(_take_lock(lock_path(cache_dir), owner=None))


def _take_lock(path: Path, owner: str | None) -> int:
    """Lock ``path`` (flock, not blocking) and write ``owner`` into it; returns the fd."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
        os.close(fd)
        raise ConflictError(
            f"the package cache {path.with_suffix('')} is in use by {holder}",
            hint="one apt-cacher-ng at a time uses a cache directory: stop that one first "
            "(for a lab: 'metalctl lab down --name LAB')",
        ) from None
    if owner is None:
        return fd
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{owner} (pid {os.getpid()} started it)\n".encode(), 0)
    return fd


def _account() -> pwd.struct_passwd | None:
    """The account to run as: apt-cacher-ng's own when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        raise HostSetupError(
            f"no account {USER!r} for apt-cacher-ng to run as",
            hint="install Debian's package apt-cacher-ng, which creates it",
        ) from None


def _spawn(
    binary: str,
    conf_dir: Path,
    out: IO[bytes],
    account: pwd.struct_passwd | None,
    lock_fd: int,
) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            [binary, "-c", str(conf_dir)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            pass_fds=(lock_fd,),
            cwd="/",
            user=account.pw_uid if account else None,
            group=account.pw_gid if account else None,
            extra_groups=[] if account else None,
        )
    except OSError as exc:
        raise HostSetupError(f"cannot start apt-cacher-ng: {exc.strerror or exc}") from exc


def _answers(address: IPv4Address, port: int) -> bool:
    try:
        with socket.create_connection((str(address), port), timeout=_CONNECT_SECONDS):
            return True
    except OSError:
        return False


def _is_our_cache(pid: int, conf_dir: Path) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return (
        bool(argv)
        and os.path.basename(argv[0]) == b"apt-cacher-ng"
        and str(conf_dir).encode() in argv
    )


def _check_enterable(root: Path, account: pwd.struct_passwd) -> None:
    """The daemon runs as ``account``: refuse now if a directory above its state is closed
    to it (root's home is 0700), rather than let it die on its cache directory."""
    gids = set(os.getgrouplist(account.pw_name, account.pw_gid))
    for directory in [root, *root.parents]:
        st = directory.stat()
        if st.st_uid == account.pw_uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid in gids:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            raise HostSetupError(
                f"apt-cacher-ng (running as {account.pw_name}) cannot reach {root}: "
                f"{directory} is mode {stat.S_IMODE(st.st_mode):04o}",
                hint="use a --state-dir that others may enter, e.g. /var/lib/metalctl/boot",
            )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _rotate(log_path: Path) -> None:
    try:
        if log_path.stat().st_size > _ROTATE_BYTES:
            log_path.replace(log_path.with_name(log_path.name + ".1"))
    except FileNotFoundError:
        pass


@dataclass(frozen=True)
class Transfers:
    """What a transfer log says since some offset: fetched from the archive (I) and sent to
    clients (O); ``fetched_debs`` counts the packages that were not in the cache yet."""

    fetched_files: int = 0
    fetched_bytes: int = 0
    fetched_debs: int = 0
    served_files: int = 0
    served_bytes: int = 0


def read_transfers(log: Path, start: int = 0) -> Transfers:
    """Totals of the transfer log's ``time|I|bytes|client|path`` lines from byte ``start``."""
    try:
        with log.open("rb") as fh:
            fh.seek(start)
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return Transfers()
    counts = {"I": [0, 0, 0], "O": [0, 0, 0]}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 5 or fields[1] not in counts or not fields[2].isdigit():
            continue
        tally = counts[fields[1]]
        tally[0] += 1
        tally[1] += int(fields[2])
        tally[2] += fields[-1].endswith(".deb")
    fetched, served = counts["I"], counts["O"]
    return Transfers(fetched[0], fetched[1], fetched[2], served[0], served[1])


def log_size(path: Path) -> int:
    """Where a transfer log ends now: read_transfers(path, log_size(path)) later = what came since."""
    return _size(path)
