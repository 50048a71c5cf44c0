"""The host-wide cache of built and imported images.

    $METALCTL_CACHE (default /var/cache/metalctl)/
      discovery/RECIPE/vmlinuz, initrd.img, recipe.json   discovery image per recipe hash
      images/SHA256.json                                   an OS image's record
      images/SHA256.raw[.zst]                              its bytes (as served)
      images/names/NAME                                    text file: the SHA256 a name points at
      downloads/                                           fetched .debs and other inputs

Everything here can be rebuilt: a recipe hash names what went in, so a changed recipe
builds anew and an unchanged one is reused (CI machines build once).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

DEFAULT_CACHE = Path("/var/cache/metalctl")


def cache_root() -> Path:
    env = os.environ.get("METALCTL_CACHE")
    return Path(env).expanduser().resolve() if env else DEFAULT_CACHE


def recipe_hash(parts: Iterable[str | bytes]) -> str:
    """A short, stable hash of everything that goes into a build (16 hex digits)."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()[:16]


def write_json_atomic(path: Path, data: object) -> None:
    """Write JSON so that a reader (or a crash) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
