"""The ironic provisioner's pure parts: BMC passwords, the config drive, option plumbing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metalctl.errors import ProvisionError
from metalctl.provisioners.ironic import bmc_password, config_drive
from metalctl.spec import Bmc, Node
from tests.cli import metalctl
from tests.conftest import GOOD_SPEC


def _bmc(**fields: str) -> Bmc:
    return Bmc.model_validate(
        {"driver": "redfish", "address": "https://bmc", "username": "admin", **fields}
    )


def _file(tmp_path: Path, mode: int, text: str = "pw\n") -> Path:
    path = tmp_path / "pw"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_password_from_a_0600_file(tmp_path: Path) -> None:
    path = _file(tmp_path, 0o600, "hunter2\n")
    assert bmc_password("n1", _bmc(passwordFile=str(path))) == "hunter2"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_password_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = _file(tmp_path, mode)
    with pytest.raises(ProvisionError) as err:
        bmc_password("n1", _bmc(passwordFile=str(path)))
    assert "node n1" in err.value.message and f"{mode:04o}" in err.value.message
    assert err.value.hint == f"chmod 600 {path}"


def test_password_file_symlink_and_empty_and_missing_are_refused(tmp_path: Path) -> None:
    real = _file(tmp_path, 0o600)
    link = tmp_path / "link"
    link.symlink_to(real)
    empty = tmp_path / "empty"
    empty.touch(mode=0o600)
    for path, words in (
        (link, "cannot read"),
        (empty, "is empty"),
        (tmp_path / "x", "cannot read"),
    ):
        with pytest.raises(ProvisionError) as err:
            bmc_password("n1", _bmc(passwordFile=str(path)))
        assert words in err.value.message


def test_password_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BMC_PW", "from-env")
    assert bmc_password("n1", _bmc(passwordEnv="BMC_PW")) == "from-env"
    monkeypatch.delenv("BMC_PW")
    with pytest.raises(ProvisionError, match="BMC_PW is not set"):
        bmc_password("n1", _bmc(passwordEnv="BMC_PW"))


def test_config_drive_carries_hostname_key_and_a_login_for_the_ssh_user() -> None:
    node = Node.model_validate({"name": "r1-n1", "address": "192.0.2.21", "ssh": {"user": "ops"}})
    drive = config_drive(node, "uuid-1", "ssh-ed25519 AAAA metalctl\n")
    assert drive["meta_data"] == {
        "uuid": "uuid-1",
        "name": "r1-n1",
        "hostname": "r1-n1",
        "public_keys": {"metalctl": "ssh-ed25519 AAAA metalctl"},
    }
    assert drive["user_data"].startswith("#cloud-config\nhostname: r1-n1\n")
    assert "  - name: ops\n" in drive["user_data"]
    assert drive["user_data"].count("ssh-ed25519 AAAA metalctl") == 2


def test_parallel_is_refused_for_a_provisioner_that_does_not_take_it(tmp_path: Path) -> None:
    spec = tmp_path / "c.yaml"
    spec.write_text(GOOD_SPEC)
    proc = metalctl("provision", "-f", str(spec), "--parallel", "4", home=tmp_path / "home")
    assert proc.returncode == 2, proc.stderr
    assert "--parallel: provisioner 'static'" in proc.stderr
    listed = metalctl("nodes", "list", "-o", "json", home=tmp_path / "home")
    assert {n["state"] for n in json.loads(listed.stdout)} == {"ready"}  # nothing was started
