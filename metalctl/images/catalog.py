"""The OS images in the cache: their records, lookup by name or SHA-256, and where the bytes are.

    images/SHA256.json        the record (``ImageRecord``; docs/pxe-provisioning.md)
    images/SHA256.raw[.zst]   the bytes as served
    images/names/NAME         text file: the SHA256 a name points at

Writers (``debian.build_debian12``, ``importer.import_image``) go through ``store_image``:
the bytes first, then the record, then the name, each by an atomic rename, so that a reader
never finds a name without its record or a record without its bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from metalctl.errors import NotFoundError, StoreError, UsageError
from metalctl.images.cache import cache_root, write_json_atomic

IMAGE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
BUILD_HINT = "run metalctl image build debian-12"


@dataclass(frozen=True)
class ImageRecord:
    name: str
    sha256: str  # of the RAW bytes
    size: int  # RAW bytes
    file: str  # the stored file's name in images/
    compression: str  # "zstd" | "none"
    stored_size: int
    source: str  # "built:debian-12" | "imported:URL"
    recipe: str  # recipe hash (built) or "" (imported)
    created_at: str  # UTC, ISO 8601

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, object], where: Path) -> ImageRecord:
        names = {f.name for f in fields(cls)}
        try:
            values = {k: data[k] for k in names}
            record = cls(**values)  # type: ignore[arg-type]
        except (KeyError, TypeError) as exc:
            raise StoreError(
                f"image record {where} is malformed ({exc})",
                hint="delete it and build or import the image again",
            ) from exc
        if not SHA256_HEX.fullmatch(str(record.sha256)) or "/" in str(record.file):
            raise StoreError(f"image record {where} is malformed (sha256 or file)")
        return record


def images_dir() -> Path:
    return cache_root() / "images"


def names_dir() -> Path:
    return images_dir() / "names"


def image_path(record: ImageRecord) -> Path:
    """The stored bytes of ``record`` (raw, or zstd when ``record.compression`` says so)."""
    return images_dir() / record.file


def check_name(name: str) -> str:
    if not IMAGE_NAME.fullmatch(name):
        raise UsageError(
            f"{name!r} is not a valid image name",
            hint="lowercase letters, digits, '.', '_' and '-', starting with a letter or digit",
        )
    return name


def _read_record(path: Path) -> ImageRecord:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read image record {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise StoreError(f"image record {path} is not a JSON object")
    return ImageRecord.from_json(data, path)


def _record_for_sha(sha: str) -> ImageRecord | None:
    path = images_dir() / f"{sha}.json"
    if not path.is_file():
        return None
    record = _read_record(path)
    return record if image_path(record).is_file() else None


def lookup(name: str) -> ImageRecord | None:
    """The record NAME points at, or None (no name, or its record or bytes are gone)."""
    try:
        sha = (names_dir() / name).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise StoreError(f"cannot read image name {name}: {exc}") from exc
    if not SHA256_HEX.fullmatch(sha):
        return None
    return _record_for_sha(sha)


def resolve(name_or_sha: str) -> ImageRecord:
    """An image by name (``debian-12``) or by the SHA-256 of its raw bytes (64 hex digits)."""
    wanted = name_or_sha.strip().lower()
    record = None
    if SHA256_HEX.fullmatch(wanted):
        record = _record_for_sha(wanted)
    elif IMAGE_NAME.fullmatch(wanted):
        record = lookup(wanted)
    if record is None:
        raise NotFoundError(
            f"no OS image {name_or_sha!r} in {images_dir()}",
            hint=f"{BUILD_HINT}, or metalctl image import SOURCE --sha256 H --name N",
        )
    return record


def list_images() -> list[ImageRecord]:
    """Every stored image whose bytes are present; a record names the name it was stored
    under (``names/`` says which image a name points at now)."""
    folder = images_dir()
    if not folder.is_dir():
        return []
    records = []
    for path in sorted(folder.glob("*.json")):
        if not SHA256_HEX.fullmatch(path.stem):
            continue
        record = _read_record(path)
        if image_path(record).is_file():
            records.append(record)
    return sorted(records, key=lambda r: (r.name, r.created_at))


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def store_image(
    stored: Path,
    *,
    name: str,
    sha256: str,
    size: int,
    compression: str,
    source: str,
    recipe: str,
) -> ImageRecord:
    """Move ``stored`` (a file in images/ or on the same filesystem) into place as
    SHA256.raw[.zst], then write its record and point NAME at it."""
    check_name(name)
    suffix = ".raw.zst" if compression == "zstd" else ".raw"
    target = images_dir() / f"{sha256}{suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(stored, 0o644)
    os.replace(stored, target)
    record = ImageRecord(
        name=name,
        sha256=sha256,
        size=size,
        file=target.name,
        compression=compression,
        stored_size=target.stat().st_size,
        source=source,
        recipe=recipe,
        created_at=utc_now(),
    )
    write_json_atomic(images_dir() / f"{sha256}.json", record.to_json())
    point_name(name, sha256)
    return record


def point_name(name: str, sha256: str) -> None:
    path = names_dir() / check_name(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
    tmp.write_text(sha256 + "\n")
    os.replace(tmp, path)


def forget_if_unnamed(record: ImageRecord) -> bool:
    """Delete ``record`` and its bytes when no name points at it any more (a rebuild
    superseded it). A reader that has the file open keeps reading it (unlink semantics)."""
    folder = names_dir()
    if folder.is_dir():
        for path in folder.iterdir():
            with contextlib.suppress(OSError):
                if path.read_text().strip() == record.sha256:
                    return False
    # The .raw beside a .raw.zst is the copy the pxe provisioner sends (decompressed once).
    raw_copy = images_dir() / f"{record.sha256}.raw"
    for path in (image_path(record), raw_copy, images_dir() / f"{record.sha256}.json"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return True
