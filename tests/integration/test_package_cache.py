"""The package cache (apt-cacher-ng as metalctl's child) on 127.0.0.1 with a free port.

Traffic: loopback, and through the cache to Debian's archive (deb.debian.org, a package
registry) only. The requests that must be refused name hosts under ``.invalid`` or paths
and ports outside the archive; apt-cacher-ng refuses them itself (ForceManaged, checked in
the rendered config first) before any name lookup or connection.

Needs apt-cacher-ng (make setup); the fetch tests need Debian's archive.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from metalctl.boot.package_cache import (
    MAX_PORT,
    CacheLayout,
    PackageCache,
    Transfers,
    read_transfers,
    render_config,
    running_pid,
    stop_detached,
)
from metalctl.errors import ConflictError, HostSetupError, UsageError

LOOPBACK = IPv4Address("127.0.0.1")
RELEASE = "http://deb.debian.org/debian/dists/bookworm/Release"
# A small package file (53 KB): static, so a second fetch is served from the cache alone.
DEB = "http://deb.debian.org/debian/pool/main/h/hello/hello_2.10-3_amd64.deb"
FETCH_SECONDS = 60.0
LOG_SECONDS = 5.0

pytestmark = pytest.mark.skipif(
    shutil.which("apt-cacher-ng", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None,
    reason="needs apt-cacher-ng (make setup)",
)


def _free_port() -> int:
    """A free port below 32768 (apt-cacher-ng cannot bind higher ones; the kernel's own
    pick of a free port lies above): random tries, bounded."""
    for _ in range(50):
        port = 20000 + int.from_bytes(os.urandom(2), "big") % (MAX_PORT - 20000)
        with socket.socket() as s:
            try:
                s.bind((str(LOOPBACK), port))
            except OSError:
                continue
            return port
    pytest.fail("no free port in 20000-32767")


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """Under /tmp, not pytest's tmp_path: as root the daemon runs as apt-cacher-ng, and
    pytest's base directory is 0700."""
    path = Path(tempfile.mkdtemp(prefix="mtl-acng-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path / "state"
    finally:
        _kill_leftover(path / "state")
        shutil.rmtree(path, ignore_errors=True)


def _kill_leftover(state: Path) -> None:
    """An apt-cacher-ng of this test that outlived it (only when a test failed badly)."""
    try:
        pid = int(CacheLayout.under(state).pid_path.read_text())
        if str(state).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


@pytest.fixture
def cache(state_dir: Path) -> Iterator[PackageCache]:
    running = PackageCache(state_dir, LOOPBACK, _free_port())
    with running:
        yield running


def via(cache: PackageCache, url: str) -> tuple[int, bytes]:
    """GET ``url`` with the cache as HTTP proxy (and no other proxy from the environment)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": cache.url}))
    try:
        with opener.open(url, timeout=FETCH_SECONDS) as reply:
            return int(reply.status), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def raw(cache: PackageCache, request: bytes) -> bytes:
    """One raw request to the cache; its reply's first line."""
    with socket.create_connection((str(cache.address), cache.port), timeout=10) as conn:
        conn.sendall(request)
        reply = b""
        while b"\r\n" not in reply:
            chunk = conn.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply.split(b"\r\n", 1)[0]


def transfers(cache: PackageCache, path: str, kind: str) -> int:
    """Lines of the transfer log for ``path`` (I: fetched upstream, O: sent to a client)."""
    try:
        lines = cache.layout.transfer_log.read_text(errors="replace").splitlines()
    except OSError:
        return 0
    return sum(1 for line in lines if line.split("|")[1:2] == [kind] and line.endswith(path))


def wait_transfers(cache: PackageCache, path: str, kind: str, count: int) -> int:
    deadline = time.monotonic() + LOG_SECONDS
    while (seen := transfers(cache, path, kind)) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return seen


def listeners(port: int) -> list[str]:
    """Local addresses of LISTEN sockets on ``port`` (/proc/net/tcp and tcp6, hex)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, _, hex_port = local.rpartition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.append(address)
    return found


# --- the config: what makes the refusals happen inside apt-cacher-ng --------------------


def test_config_allows_debians_archive_only(tmp_path: Path) -> None:
    layout = CacheLayout.under(tmp_path)
    text = render_config(layout, IPv4Address("10.10.0.1"), 3142)
    settings = [line for line in text.splitlines() if line and not line.startswith("#")]
    keys = {
        line.split(":", 1)[0].strip().lower(): line.split(":", 1)[1].strip() for line in settings
    }
    assert keys["forcemanaged"] == "1"  # no URL outside the Remap lines
    assert keys["passthroughpattern"] == "^$"  # no CONNECT (its default allows two hosts)
    assert keys["allowuserports"] == "80"
    assert keys["redirmax"] == "0"
    assert keys["bindaddress"] == "10.10.0.1" and keys["port"] == "3142"
    assert keys["socketpath"] == ""
    assert keys["cachedir"] == str(layout.cache_dir) and keys["logdir"] == str(layout.log_dir)
    assert keys["foreground"] == "1"
    assert "reportpage" not in keys and "localdirs" not in keys
    remaps = [line for line in settings if line.lower().startswith("remap-")]
    hosts = {
        word.removeprefix("http://").split("/")[0]
        for line in remaps
        for word in line.split(":", 1)[1].replace(";", " ").split()
    }
    assert hosts == {"deb.debian.org", "security.debian.org"}
    assert not any("/etc/apt-cacher-ng" in line or "/var/cache" in line for line in settings)


def test_missing_binary_says_what_to_install(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("metalctl.boot.package_cache.shutil.which", lambda *a, **k: None)
    with pytest.raises(HostSetupError) as caught:
        PackageCache(state_dir, LOOPBACK, _free_port()).start()
    assert "apt-cacher-ng" in caught.value.message
    assert "apt-get install" in (caught.value.hint or "")
    assert not state_dir.exists()  # refused before anything was written


def test_a_port_apt_cacher_ng_cannot_bind_is_refused(state_dir: Path) -> None:
    with pytest.raises(UsageError, match="1-32767"):
        PackageCache(state_dir, LOOPBACK, MAX_PORT + 1)


# --- the running cache ------------------------------------------------------------------


def test_listens_on_the_given_address_only_and_stop_leaves_nothing(state_dir: Path) -> None:
    port = _free_port()
    cache = PackageCache(state_dir, LOOPBACK, port).start()
    try:
        pid = cache.pid
        assert pid is not None and cache.alive()
        assert cache.url == f"http://127.0.0.1:{port}"
        assert listeners(port) == ["0100007F"]  # 127.0.0.1 only: not 0.0.0.0, not ::
        with pytest.raises(OSError):  # another loopback address: nothing listens there
            socket.create_connection(("127.0.0.2", port), timeout=2).close()
        assert int(cache.layout.pid_path.read_text()) == pid
        if os.geteuid() == 0:  # runs as apt-cacher-ng's account, not root
            assert Path(f"/proc/{pid}").stat().st_uid != 0
    finally:
        cache.stop()
    assert not Path(f"/proc/{pid}").exists()
    assert not cache.layout.pid_path.exists()
    assert listeners(port) == []
    cache.stop()  # twice: nothing to do


def test_start_failure_shows_its_log(state_dir: Path) -> None:
    port = _free_port()
    with socket.socket() as holder:  # bound, not listening: the pre-check passes, bind fails
        holder.bind((str(LOOPBACK), port))
        with pytest.raises(HostSetupError) as caught:
            PackageCache(state_dir, LOOPBACK, port).start(ready_seconds=10)
    assert "stopped at start" in caught.value.message
    assert "bind" in caught.value.message.lower() or "busy" in caught.value.message.lower()
    assert not CacheLayout.under(state_dir).pid_path.exists()


def test_a_taken_port_is_refused_before_the_start(state_dir: Path) -> None:
    with socket.socket() as holder:
        holder.bind((str(LOOPBACK), _free_port()))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(HostSetupError, match=f"port {port} on 127.0.0.1 is taken"):
            PackageCache(state_dir, LOOPBACK, port).start()


def test_refuses_what_is_not_debians_archive(cache: PackageCache) -> None:
    for url in (
        "http://example.invalid/debian/dists/bookworm/Release",  # another host
        "http://example.invalid/pool/main/h/hello/hello_2.10-3_amd64.deb",
        "http://deb.debian.org/ubuntu/dists/jammy/Release",  # the host, not the archive
        "http://deb.debian.org:8080/debian/dists/bookworm/Release",  # another port
        "http://HTTPS///example.invalid/debian/dists/bookworm/Release",  # its https trick
        f"http://127.0.0.1:{cache.port}/acng-report.html",  # no admin page
    ):
        status, _ = via(cache, url)
        # 403 is apt-cacher-ng's own refusal; a failed lookup or connection would be 5xx.
        assert status == 403, url
    for target in (b"example.invalid:443", b"deb.debian.org:443", b"bugs.debian.org:443"):
        line = raw(cache, b"CONNECT " + target + b" HTTP/1.1\r\nHost: " + target + b"\r\n\r\n")
        assert line.split()[1:2] == [b"403"], (target, line)
    assert transfers(cache, "example.invalid", "I") == 0
    assert cache.alive()


def test_fetches_from_debians_archive_and_serves_again_from_the_cache(
    cache: PackageCache,
) -> None:
    status, body = via(cache, RELEASE)
    assert status == 200
    assert b"\nCodename: bookworm\n" in body and b"\nSHA256:\n" in body
    stored = cache.layout.cache_dir / "debrep/dists/bookworm/Release"
    assert stored.read_bytes() == body

    status, first = via(cache, DEB)
    assert status == 200 and first.startswith(b"!<arch>\ndebian-binary")
    path = "debrep/pool/main/h/hello/hello_2.10-3_amd64.deb"
    assert (cache.layout.cache_dir / path).read_bytes() == first
    assert wait_transfers(cache, path, "I", 1) == 1  # fetched from the archive once

    status, second = via(cache, DEB)
    assert status == 200 and second == first
    assert wait_transfers(cache, path, "O", 2) == 2  # sent twice
    assert transfers(cache, path, "I") == 1  # ... but fetched once: the second was a hit


# --- one host-wide cache directory, shared by container labs -----------------------------


def test_one_daemon_at_a_time_uses_a_shared_cache_directory(state_dir: Path) -> None:
    """Two labs' caches on one package directory would corrupt it: the second is refused,
    naming the first, until the first stops."""
    shared = state_dir.parent / "packages"
    first = PackageCache(
        state_dir / "a", LOOPBACK, _free_port(), shared_cache=shared, owner="lab a"
    )
    second = PackageCache(
        state_dir / "b", LOOPBACK, _free_port(), shared_cache=shared, owner="lab b"
    )
    with first:
        assert first.layout.cache_dir == shared.absolute()
        with pytest.raises(ConflictError) as caught:
            second.start()
        assert "in use by lab a" in caught.value.message
        assert not second.alive()
    with second:  # the lock went with the first daemon
        assert second.alive()


def test_a_detached_cache_outlives_its_starter_and_stops_by_its_pid_file(state_dir: Path) -> None:
    port = _free_port()
    started = PackageCache(state_dir, LOOPBACK, port, shared_cache=state_dir.parent / "pk")
    started.start()
    pid = started.detach()
    layout = started.layout
    try:
        started.stop()  # no longer this object's: does nothing
        assert running_pid(layout) == pid
        assert listeners(port) == ["0100007F"]
    finally:
        assert stop_detached(layout) is True
    assert running_pid(layout) is None
    assert listeners(port) == []
    assert not layout.pid_path.exists()
    assert stop_detached(layout) is False  # nothing left to stop
    # And the lock went with it: a new daemon may use the directory.
    with PackageCache(state_dir, LOOPBACK, _free_port(), shared_cache=state_dir.parent / "pk"):
        pass


def test_transfer_totals_count_fetched_packages_apart(tmp_path: Path) -> None:
    log = tmp_path / "apt-cacher.log"
    log.write_text(
        "1700000000|I|1000|10.0.0.5|debrep/dists/bookworm/InRelease\n"
        "1700000001|I|5000|10.0.0.5|debrep/pool/main/t/tzdata/tzdata_2024a_all.deb\n"
        "1700000001|O|5000|10.0.0.5|debrep/pool/main/t/tzdata/tzdata_2024a_all.deb\n"
        "1700000002|O|7|10.0.0.6|debrep/pool/main/t/tzdata/tzdata_2024a_all.deb\n"
        "garbage line\n"
    )
    assert read_transfers(log) == Transfers(2, 6000, 1, 2, 5007)
    offset = len(log.read_bytes())
    with log.open("a") as fh:
        fh.write("1700000003|O|9|10.0.0.7|debrep/dists/bookworm/InRelease\n")
    assert read_transfers(log, offset) == Transfers(0, 0, 0, 1, 9)
    assert read_transfers(tmp_path / "missing.log") == Transfers()
