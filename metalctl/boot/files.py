"""Which file a /files/... URL names, if any: only regular files under the files directory."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

from metalctl.boot.refused import Refused


def resolve(root: Path | None, url_path: str) -> Path:
    """The file under ``root`` for ``url_path`` (the part after /files/), or Refused(404).

    Percent-escapes are decoded first, so %2e%2e is '..'. Segments that start with a dot
    ('..', '.', hidden files such as partial downloads) are refused outright, and the
    resolved path (symlinks followed) must still lie under ``root``.
    """
    if root is None:
        raise Refused(404, "this boot service serves no files (no files directory set)")
    try:
        relative = unquote(url_path, errors="strict")
    except UnicodeDecodeError:
        raise Refused(404, "not a servable file path: escapes that are not UTF-8") from None
    segments = [s for s in relative.split("/") if s]
    if not segments or "\x00" in relative or any(s.startswith(".") for s in segments):
        raise Refused(404, "not a servable file path: empty, or with '.', '..' or hidden names")
    base = root.resolve()
    try:
        candidate = base.joinpath(*segments).resolve()
        servable = candidate.is_relative_to(base) and candidate.is_file()
    except (OSError, RuntimeError, ValueError):  # a name too long, a symlink loop
        servable = False
    if not servable:
        raise Refused(404, f"no file /files/{'/'.join(segments)}")
    return candidate
