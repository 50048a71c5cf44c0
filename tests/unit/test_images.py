"""The image catalog and importer on a temporary METALCTL_CACHE (small files, no root)."""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
from click.testing import CliRunner

from metalctl.errors import NotFoundError, UsageError
from metalctl.images import catalog
from metalctl.images.importer import import_image
from tests.cli import metalctl

needs_zstd = pytest.mark.skipif(shutil.which("zstd") is None, reason="needs zstd")
needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-utils")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("METALCTL_CACHE", str(root))
    return root


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    """A 3 MiB 'disk': a pattern, a hole and a tail, so that sparse handling shows."""
    path = tmp_path / "disk.raw"
    with path.open("wb") as fh:
        fh.write(bytes(range(256)) * 4096)  # 1 MiB
        fh.seek(2 << 20)
        fh.write(b"metalctl-tail" * 1000)
        fh.truncate(3 << 20)
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stored_files(cache: Path) -> list[str]:
    images = cache / "images"
    if not images.exists():
        return []
    return sorted(str(p.relative_to(images)) for p in images.rglob("*") if p.is_file())


@needs_zstd
def test_import_raw_stores_zstd_record_and_name(cache: Path, raw: Path) -> None:
    said: list[str] = []
    record = import_image(str(raw), sha(raw), "tiny", said.append)
    assert record.sha256 == sha(raw)
    assert record.size == raw.stat().st_size
    assert record.compression == "zstd"
    assert record.file == f"{record.sha256}.raw.zst"
    assert record.source == f"imported:{raw}"
    path = catalog.image_path(record)
    assert path == cache / "images" / record.file
    assert record.stored_size == path.stat().st_size
    unpacked = subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
    assert unpacked == raw.read_bytes()
    assert (cache / "images" / "names" / "tiny").read_text().strip() == record.sha256
    on_disk = json.loads((cache / "images" / f"{record.sha256}.json").read_text())
    assert on_disk == record.to_json()
    assert catalog.resolve("tiny") == record
    assert catalog.resolve(record.sha256) == record
    assert catalog.list_images() == [record]
    assert said, "progress lines"
    # no temporary leftovers
    assert stored_files(cache) == sorted([record.file, f"{record.sha256}.json", "names/tiny"]), (
        stored_files(cache)
    )


@needs_zstd
@needs_qemu_img
def test_import_qcow2_gives_the_same_raw_sha(cache: Path, raw: Path, tmp_path: Path) -> None:
    qcow = tmp_path / "disk.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow)], check=True
    )
    assert qcow.read_bytes()[:4] == b"QFI\xfb"
    from_raw = import_image(str(raw), sha(raw), "as-raw", lambda _s: None)
    from_qcow = import_image(f"file://{qcow}", sha(qcow), "as-qcow2", lambda _s: None)
    assert from_qcow.sha256 == from_raw.sha256 == sha(raw)
    assert from_qcow.size == raw.stat().st_size
    assert from_qcow.source == f"imported:file://{qcow}"
    assert catalog.resolve("as-qcow2").sha256 == from_raw.sha256


@needs_zstd
def test_wrong_sha256_is_refused_and_nothing_stored(cache: Path, raw: Path) -> None:
    with pytest.raises(UsageError, match="sha256 mismatch"):
        import_image(str(raw), "0" * 64, "tiny", lambda _s: None)
    assert stored_files(cache) == []
    with pytest.raises(NotFoundError):
        catalog.resolve("tiny")


def test_bad_inputs(cache: Path, raw: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not 64 hex"):
        import_image(str(raw), "abc", "tiny", lambda _s: None)
    with pytest.raises(UsageError, match="not a valid image name"):
        import_image(str(raw), sha(raw), "../etc", lambda _s: None)
    with pytest.raises(NotFoundError):
        import_image(str(tmp_path / "missing.raw"), "0" * 64, "tiny", lambda _s: None)
    with pytest.raises(UsageError, match="cannot import"):
        import_image("ftp://example.invalid/x.raw", "0" * 64, "tiny", lambda _s: None)
    assert stored_files(cache) == []


def test_resolve_missing_hints_at_the_build(cache: Path) -> None:
    with pytest.raises(NotFoundError) as caught:
        catalog.resolve("debian-12")
    assert "metalctl image build debian-12" in str(caught.value)
    assert catalog.list_images() == []


@needs_zstd
def test_cli_import_and_list_json(cache: Path, raw: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    cache_env = str(cache)
    bad = metalctl(
        "image",
        "import",
        str(raw),
        "--sha256",
        "1" * 64,
        "--name",
        "tiny",
        home=home,
        METALCTL_CACHE=cache_env,
    )
    assert bad.returncode == 2, bad.stderr
    assert "sha256 mismatch" in bad.stderr
    ok = metalctl(
        "image",
        "import",
        str(raw),
        "--sha256",
        sha(raw),
        "--name",
        "tiny",
        home=home,
        METALCTL_CACHE=cache_env,
    )
    assert ok.returncode == 0, ok.stderr
    listed = metalctl("image", "list", "-o", "json", home=home, METALCTL_CACHE=cache_env)
    assert listed.returncode == 0, listed.stderr
    (entry,) = json.loads(listed.stdout)
    assert entry["name"] == "tiny"
    assert entry["sha256"] == sha(raw)
    assert entry["size"] == 3 << 20
    assert entry["compression"] == "zstd"
    assert set(entry) == {
        "name",
        "sha256",
        "size",
        "file",
        "compression",
        "stored_size",
        "source",
        "recipe",
        "created_at",
    }
    table = metalctl("image", "list", home=home, METALCTL_CACHE=cache_env)
    assert table.returncode == 0 and "tiny" in table.stdout
    empty = metalctl("image", "list", "-o", "json", home=home, METALCTL_CACHE=str(tmp_path / "e"))
    assert json.loads(empty.stdout) == []


def test_debian_recipe_is_stable_and_covers_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    from metalctl.images import debian

    first = debian.recipe()
    assert first == debian.recipe()
    monkeypatch.setattr(debian, "PACKAGES", (*debian.PACKAGES, "htop"))
    assert debian.recipe() != first
    monkeypatch.undo()
    files = dict(debian.CONFIG_FILES)
    files["etc/hostname"] = "other\n"
    monkeypatch.setattr(debian, "CONFIG_FILES", files)
    assert debian.recipe() != first


@contextmanager
def http_server(folder: Path) -> Iterator[str]:
    """A static file server on 127.0.0.1 (an ephemeral port), stopped afterwards."""
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@needs_zstd
def test_import_over_http_and_refusals(
    cache: Path, raw: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)  # 127.0.0.1 directly, never through a proxy
    with http_server(raw.parent) as base:
        url = f"{base}/{raw.name}"
        with pytest.raises(UsageError, match="sha256 mismatch"):
            import_image(url, "2" * 64, "web", lambda _s: None)
        assert stored_files(cache) == []
        with pytest.raises(NotFoundError, match="HTTP 404"):
            import_image(f"{base}/missing.raw", sha(raw), "web", lambda _s: None)
        assert stored_files(cache) == []
        record = import_image(url, sha(raw).upper(), "web", lambda _s: None)
    assert record.sha256 == sha(raw)
    assert record.source == f"imported:{url}"
    assert catalog.resolve("web") == record


def test_cli_build_discovery_calls_the_discovery_builder(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`image build discovery` hands over to metalctl.images.discovery.build_discovery."""
    calls: list[bool] = []

    def build_discovery(say: Callable[[str], None], *, force: bool = False) -> object:
        calls.append(force)
        say("built")
        return SimpleNamespace(recipe="abc123", kernel=Path("/k/vmlinuz"), initrd=Path("/k/i"))

    fake = ModuleType("metalctl.images.discovery")
    fake.build_discovery = build_discovery  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "metalctl.images.discovery", fake)
    from metalctl.cli import cli

    result = CliRunner().invoke(cli, ["image", "build", "discovery", "--force"])
    assert result.exit_code == 0, result.output
    assert calls == [True]
    assert "discovery abc123: kernel /k/vmlinuz, initrd /k/i" in result.output
    unknown = CliRunner().invoke(cli, ["image", "build", "windows"])
    assert unknown.exit_code == 2
