"""Import an OS image someone else built: a local file, file:// or http(s):// URL.

The given SHA-256 is of the file as fetched (what a vendor publishes); a mismatch is
refused and nothing is stored. A qcow2 file (found by its magic) is converted to raw once
with ``qemu-img``; the image is stored as ``SHA256.raw.zst`` like a built one, where
SHA256 is of the RAW bytes (what the deploy agent writes and checks).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from metalctl.errors import HostSetupError, NotFoundError, UsageError
from metalctl.images.catalog import ImageRecord, check_name, images_dir, store_image

Say = Callable[[str], None]

QCOW2_MAGIC = b"QFI\xfb"
DOWNLOAD_TIMEOUT = 30.0  # seconds per socket operation (connect, each read)
DOWNLOAD_DEADLINE = 4 * 3600.0  # seconds for the whole download (a trickle ends too)
CHUNK = 4 << 20
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def import_image(url_or_path: str, sha256: str, name: str, say: Say) -> ImageRecord:
    """Fetch, verify, convert (qcow2) and store an image under ``name``."""
    check_name(name)
    if not _SHA256.fullmatch(sha256.strip()):
        raise UsageError(f"--sha256 {sha256!r} is not 64 hex digits")
    expected = sha256.strip().lower()
    for tool, package in (("zstd", "zstd"),):
        if shutil.which(tool) is None:
            raise HostSetupError(
                f"importing images needs {tool}", hint=f"apt-get install -y {package}"
            )
    folder = images_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".import-{name}-", dir=folder) as tmp_name:
        tmp = Path(tmp_name)
        source, got = _fetch(url_or_path, tmp, say)
        if got != expected:
            raise UsageError(
                f"sha256 mismatch for {url_or_path}: got {got}, expected {expected}; "
                "nothing was stored",
                hint="check the checksum the image's publisher gives (of the file as downloaded)",
            )
        say(f"{name}: sha256 verified ({got[:12]})")
        raw = source
        if _is_qcow2(source):
            if shutil.which("qemu-img") is None:
                raise HostSetupError(
                    "converting a qcow2 image needs qemu-img", hint="apt-get install -y qemu-utils"
                )
            say(f"{name}: converting qcow2 to raw")
            raw = tmp / "image.raw"
            _run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(source), str(raw)])
        raw_sha, size = _hash_file(raw)
        say(f"{name}: compressing {size >> 20} MiB raw (zstd -3)")
        packed = tmp / "image.raw.zst"
        _run(["zstd", "-q", "-3", "-T0", str(raw), "-o", str(packed)])
        record = store_image(
            packed,
            name=name,
            sha256=raw_sha,
            size=size,
            compression="zstd",
            source=f"imported:{_display(url_or_path)}",
            recipe="",
        )
    say(f"{name}: stored {record.file} ({record.stored_size >> 20} MiB)")
    return record


def _fetch(url_or_path: str, tmp: Path, say: Say) -> tuple[Path, str]:
    """The file to import (local: in place; remote: downloaded into tmp) and its sha256."""
    parsed = urllib.parse.urlparse(url_or_path)
    if parsed.scheme in ("http", "https"):
        return _download(url_or_path, tmp, say)
    if parsed.scheme == "file":
        path = Path(urllib.request.url2pathname(parsed.path))
    elif parsed.scheme == "":
        path = Path(url_or_path).expanduser()
    else:
        raise UsageError(
            f"cannot import from {url_or_path!r}",
            hint="give a local path, a file:// URL or an http(s):// URL",
        )
    if not path.is_file():
        raise NotFoundError(f"no image file {path}")
    say(f"hashing {path}")
    sha, _size = _hash_file(path)
    return path, sha


def _download(url: str, tmp: Path, say: Say) -> tuple[Path, str]:
    target = tmp / "download"
    digest = hashlib.sha256()
    say(f"downloading {_display(url)}")
    request = urllib.request.Request(url, headers={"User-Agent": "metalctl"})
    try:
        with (
            urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as reply,
            target.open("wb") as out,
        ):
            deadline = time.monotonic() + DOWNLOAD_DEADLINE
            while chunk := reply.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"not done after {DOWNLOAD_DEADLINE:.0f}s")
    except urllib.error.HTTPError as exc:
        raise NotFoundError(f"cannot download {_display(url)}: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise HostSetupError(f"cannot download {_display(url)}: {reason}") from exc
    return target, digest.hexdigest()


def _display(url: str) -> str:
    """The URL without credentials (user:password@) for records and messages."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme and "@" in parsed.netloc:
        return parsed._replace(netloc=parsed.netloc.rsplit("@", 1)[1]).geturl()
    if not parsed.scheme:
        return str(Path(url).expanduser().resolve())
    return url


def _is_qcow2(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(4) == QCOW2_MAGIC


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _run(args: list[str]) -> None:
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise HostSetupError(
            f"`{' '.join(args[:3])}` failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}"
        )
