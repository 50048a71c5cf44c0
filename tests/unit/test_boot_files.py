"""/files/...: regular files under the files directory, nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from metalctl.boot.files import resolve
from metalctl.boot.refused import Refused


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "files" / "discovery").mkdir(parents=True)
    (tmp_path / "files" / "discovery" / "vmlinuz").write_text("k")
    (tmp_path / "files" / "discovery" / "inside").symlink_to("vmlinuz")
    (tmp_path / "files" / "discovery" / "outside").symlink_to(tmp_path / "secret")
    (tmp_path / "files" / "loop").symlink_to("loop")
    (tmp_path / "secret").write_text("s")
    return tmp_path / "files"


def test_files_under_the_root_resolve(root: Path) -> None:
    assert resolve(root, "discovery/vmlinuz") == root.resolve() / "discovery" / "vmlinuz"
    assert resolve(root, "discovery//vmlinuz").name == "vmlinuz"
    assert resolve(root, "discovery/inside").name == "vmlinuz"  # a link that stays inside


@pytest.mark.parametrize(
    "path",
    [
        "",
        "discovery",
        "missing",
        "../secret",
        "discovery/../../secret",
        "%2e%2e/secret",
        "discovery%2f..%2f..%2fsecret",
        "discovery/outside",
        "loop",
        "discovery/vmlinuz%00",
        "%ff",
        ".hidden",
        "x" * 5000,
    ],
)
def test_anything_else_is_404(root: Path, path: str) -> None:
    with pytest.raises(Refused) as err:
        resolve(root, path)
    assert err.value.status == 404


def test_no_files_directory_serves_nothing() -> None:
    with pytest.raises(Refused, match="no files directory"):
        resolve(None, "discovery/vmlinuz")
