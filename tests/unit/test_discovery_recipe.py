"""The discovery image's recipe: any input changes it, nothing else does; and what the
build says when the host lacks something."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from metalctl.errors import HostSetupError
from metalctl.images import discovery
from metalctl.images.discovery import _Inputs, _installed_version

BASE = _Inputs(
    kernel_package="linux-image-6.1.0-56-amd64",
    kernel_version="6.1.192-2",
    busybox_version="1:1.35.0-4+deb12u1+b1",
    zstd_version="1.5.4+dfsg2-5",
    coreutils_version="9.1-1",
    agent={"init": b"#!/bin/sh\n", "agent.sh": b"log() { :; }\n", "udhcpc.script": b"exit 0\n"},
)


def test_same_inputs_same_recipe() -> None:
    again = dataclasses.replace(BASE, agent=dict(BASE.agent))
    assert again.recipe() == BASE.recipe()
    assert len(BASE.recipe()) == 16


@pytest.mark.parametrize(
    "change",
    [
        {"kernel_package": "linux-image-6.1.0-57-amd64"},
        {"kernel_version": "6.1.192-3"},
        {"busybox_version": "1:1.36.1-1"},
        {"zstd_version": "1.5.5"},
        {"coreutils_version": "9.4-1"},
        {"agent": {**BASE.agent, "agent.sh": b"log() { echo; }\n"}},
        {"agent": {**BASE.agent, "udhcpc.script": b"exit 1\n"}},
    ],
)
def test_any_input_changes_the_recipe(change: dict[str, object]) -> None:
    assert dataclasses.replace(BASE, **change).recipe() != BASE.recipe()  # type: ignore[arg-type]


def test_the_module_list_is_part_of_the_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    before = BASE.recipe()
    monkeypatch.setattr(discovery, "MODULES", (*discovery.MODULES, "vfat"))
    assert BASE.recipe() != before


def test_the_shipped_agent_files_are_found() -> None:
    files = discovery._agent_files()
    assert set(files) == set(discovery.AGENT_FILES)
    assert files["init"].startswith(b"#!/bin/sh")


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs dpkg-query (Debian)")
def test_a_missing_package_names_itself_and_the_fix() -> None:
    with pytest.raises(HostSetupError) as caught:
        _installed_version("metalctl-no-such-package")
    assert "metalctl-no-such-package" in str(caught.value)
    assert caught.value.hint == "apt-get install metalctl-no-such-package"
