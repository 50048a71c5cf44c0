"""Library-level robustness: the store, workloads, waits and DeployError's exit code.

Each test is named after the defect it covers (A2, A3, C, D in the fix/cli brief).
"""

from __future__ import annotations

import math
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from metalctl import lifecycle
from metalctl.deploy.workload import list_workloads, load_workload
from metalctl.errors import (
    ConflictError,
    DeployError,
    HostSetupError,
    MetalctlError,
    NotFoundError,
    SpecError,
    StoreError,
    StoreLockedError,
    UsageError,
    WaitTimeout,
)
from metalctl.spec import parse_spec
from metalctl.store import Store
from metalctl.wait import wait_for
from tests.conftest import GOOD_SPEC

REPO = Path(__file__).resolve().parents[2]


def _good_db(path: Path) -> bytes:
    """The bytes of a real inventory holding one cluster."""
    store = Store(path)
    lifecycle.register_cluster(
        store, parse_spec(GOOD_SPEC), initial_state=lifecycle.READY, reason="test"
    )
    store.close()
    return path.read_bytes()


# A2: the store --------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["random bytes", "truncated"])
def test_a2_corrupt_db_is_store_error_naming_the_file(damage: str, tmp_path: Path) -> None:
    db = tmp_path / "metalctl.db"
    good = _good_db(db)
    db.write_bytes(os.urandom(8192) if damage == "random bytes" else good[:5000])
    with pytest.raises(StoreError) as err:
        store = Store(db)
        store.list_clusters()  # a truncated file may open and fail on the first read
    assert str(db) in err.value.message
    assert "corrupt" in err.value.message
    assert err.value.hint and "mv" in err.value.hint
    assert err.value.exit_code == 6


def test_a2_locked_db_is_store_locked_error_and_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "metalctl.db"
    _good_db(db)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        store = Store(db, busy_timeout=0.2)
        with pytest.raises(StoreLockedError) as err:
            lifecycle.transition(store, "rack1", ["n1"], lifecycle.FAILED, "test")
        assert "locked" in err.value.message and str(db) in err.value.message
        assert err.value.hint and "another metalctl" in err.value.hint
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert Store(db).get_node("rack1", "n1").state == lifecycle.READY


def test_a2_db_timeout_env_var_sets_the_wait_and_refuses_nonsense(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "metalctl.db"
    _good_db(db)
    for bad in ("soon", "nan", "-1", "inf"):
        monkeypatch.setenv("METALCTL_DB_TIMEOUT", bad)
        with pytest.raises(UsageError) as err:
            Store(db)
        assert "METALCTL_DB_TIMEOUT" in err.value.message
    monkeypatch.setenv("METALCTL_DB_TIMEOUT", "0.1")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreLockedError):
            Store(db).set_facts("rack1", "n1", {"k": 1})
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a2_home_that_is_a_regular_file_is_store_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.write_text("not a folder")
    monkeypatch.setenv("METALCTL_HOME", str(home))
    with pytest.raises(StoreError) as err:
        Store()
    assert str(home) in err.value.message and "not a directory" in err.value.message
    assert err.value.hint and "METALCTL_HOME" in err.value.hint
    assert home.read_text() == "not a folder"


def test_a2_home_below_a_regular_file_is_store_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Root ignores permission bits, so "unwritable" is a path no one can create.
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    monkeypatch.setenv("METALCTL_HOME", str(blocker / "sub"))
    with pytest.raises(StoreError) as err:
        Store()
    assert str(blocker / "sub") in err.value.message
    assert err.value.hint and "METALCTL_HOME" in err.value.hint


def test_a2_db_path_that_is_a_directory_is_store_error(tmp_path: Path) -> None:
    db = tmp_path / "metalctl.db"
    db.mkdir()
    with pytest.raises(StoreError) as err:
        Store(db)
    assert str(db) in err.value.message


def test_a2_sqlite_errors_inside_a_transaction_become_store_errors(tmp_path: Path) -> None:
    store = Store(tmp_path / "metalctl.db")
    with pytest.raises(StoreError), store.transaction() as db:
        db.execute("INSERT INTO no_such_table VALUES (1)")
    # The connection is usable afterwards: the failed transaction was rolled back.
    assert store.list_clusters() == []


# A3: workloads --------------------------------------------------------------------------


@pytest.fixture
def share(tmp_path: Path) -> Iterator[Path]:
    """A copy of the project's workloads/ and roles/ layout, small enough to break."""
    root = tmp_path / "share"
    (root / "workloads" / "swarm").mkdir(parents=True)
    (root / "workloads" / "swarm" / "workload.yaml").write_text(
        (REPO / "workloads" / "swarm" / "workload.yaml").read_text()
    )
    for role in ("ready_state", "docker", "consul", "swarm"):
        (root / "roles" / role).mkdir(parents=True)
    yield root


def test_a3_missing_workloads_folder_is_host_setup_error_naming_it(share: Path) -> None:
    (share / "workloads" / "swarm" / "workload.yaml").unlink()
    (share / "workloads" / "swarm").rmdir()
    (share / "workloads").rmdir()
    for call in (lambda: load_workload("swarm", share), lambda: list_workloads(share)):
        with pytest.raises(HostSetupError) as err:
            call()
        assert str(share / "workloads") in err.value.message
        assert err.value.hint and "reinstall" in err.value.hint


def test_a3_missing_roles_folder_is_host_setup_error_naming_it(share: Path) -> None:
    for role in (share / "roles").iterdir():
        role.rmdir()
    (share / "roles").rmdir()
    with pytest.raises(HostSetupError) as err:
        load_workload("swarm", share)
    assert str(share / "roles") in err.value.message
    assert err.value.hint and "reinstall" in err.value.hint


def test_a3_missing_role_of_a_workload_is_host_setup_error_naming_it(share: Path) -> None:
    (share / "roles" / "consul").rmdir()
    with pytest.raises(HostSetupError) as err:
        load_workload("swarm", share)
    assert str(share / "roles" / "consul") in err.value.message


@pytest.mark.parametrize(
    "text",
    ["name: swarm\nroles: [a, b\n", "- just\n- a list\n", "name: swarm\nroles: docker\n"],
    ids=["malformed yaml", "not a mapping", "roles not a list"],
)
def test_a3_malformed_workload_yaml_is_spec_error_naming_the_file(share: Path, text: str) -> None:
    path = share / "workloads" / "swarm" / "workload.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as err:
        load_workload("swarm", share)
    assert str(path) in err.value.message
    assert "cluster spec" not in err.value.message  # it is a workload, say so


def test_a3_unknown_workload_is_not_found_listing_known_ones(share: Path) -> None:
    with pytest.raises(NotFoundError) as err:
        load_workload("ghost", share)
    assert "ghost" in err.value.message and err.value.hint and "swarm" in err.value.hint


# E: the list of workloads ------------------------------------------------------------------


def test_e_list_workloads_names_and_describes_each(share: Path) -> None:
    other = share / "workloads" / "other"
    other.mkdir()
    (other / "workload.yaml").write_text("name: other\ndescription: a test\nroles: [docker]\n")
    (share / "workloads" / "not-a-workload").mkdir()  # no workload.yaml: skipped
    found = list_workloads(share)
    assert [w.name for w in found] == ["other", "swarm"]
    assert found[0].description == "a test"
    assert "Docker Swarm" in found[1].description


def test_e_list_workloads_of_the_project_has_swarm() -> None:
    assert "swarm" in [w.name for w in list_workloads()]


# C: waits refuse timeouts that never (or always at once) fire ------------------------------


@pytest.mark.parametrize("timeout", [math.nan, math.inf, -1.0, -math.inf])
def test_c_wait_for_refuses_nan_inf_negative_timeout(timeout: float) -> None:
    with pytest.raises(UsageError) as err:
        wait_for(lambda: None, what="node n1: sshd", timeout=timeout, interval=0.01)
    assert "timeout" in err.value.message and "node n1: sshd" in err.value.message


@pytest.mark.parametrize("interval", [math.nan, math.inf, -0.5])
def test_c_wait_for_refuses_nan_inf_negative_interval(interval: float) -> None:
    with pytest.raises(UsageError) as err:
        wait_for(lambda: None, what="n1", timeout=1, interval=interval)
    assert "interval" in err.value.message


def test_c_wait_for_zero_timeout_still_probes_once() -> None:
    assert wait_for(lambda: "up", what="n1", timeout=0, interval=0.01) == "up"
    with pytest.raises(WaitTimeout):
        wait_for(lambda: None, what="n1", timeout=0, interval=0.01)


# D: DeployError keeps the exit code of its cause -------------------------------------------


def test_d_deploy_error_exit_code_defaults_to_7() -> None:
    assert DeployError("run workload roles", "boom").exit_code == 7
    assert DeployError.exit_code == 7


@pytest.mark.parametrize(
    "cause",
    [
        ConflictError("taken"),
        HostSetupError("no dockerd"),
        WaitTimeout("too slow"),
        NotFoundError("gone"),
    ],
)
def test_d_deploy_error_keeps_the_exit_code_of_its_cause(cause: MetalctlError) -> None:
    err = DeployError("verify swarm", cause.message, cause_exit_code=cause.exit_code)
    assert err.exit_code == cause.exit_code
    assert "verify swarm" in str(err)


def test_d_deploy_error_with_a_generic_cause_stays_7() -> None:
    generic = MetalctlError("something")
    assert DeployError("p", "m", cause_exit_code=generic.exit_code).exit_code == 7
    assert DeployError("p", "m", cause_exit_code=None).exit_code == 7
