from __future__ import annotations

import pytest

from metalctl import lifecycle
from metalctl.errors import ConflictError, InvalidTransitionError
from metalctl.spec import parse_spec
from metalctl.store import Store
from tests.conftest import GOOD_SPEC


def test_register_then_deploy_records_states_and_events(store: Store) -> None:
    spec = parse_spec(GOOD_SPEC)
    lifecycle.register_cluster(store, spec, initial_state=lifecycle.READY, reason="test")
    names = [n.name for n in spec.nodes]
    lifecycle.transition(store, "rack1", names, lifecycle.DEPLOYING, "deploy")
    lifecycle.transition(store, "rack1", names, lifecycle.ACTIVE, "done")
    assert {n.state for n in store.list_nodes("rack1")} == {"active"}
    events = store.list_events("rack1")
    assert [(e.node, e.from_state, e.to_state) for e in events if e.node == "n1"] == [
        ("n1", None, "ready"),
        ("n1", "ready", "deploying"),
        ("n1", "deploying", "active"),
    ]


def test_invalid_transition_changes_nothing(store: Store) -> None:
    spec = parse_spec(GOOD_SPEC)
    lifecycle.register_cluster(store, spec, initial_state=lifecycle.READY, reason="test")
    lifecycle.transition(store, "rack1", ["n1"], lifecycle.DEPLOYING, "deploy")
    before = store.list_events("rack1")
    # n1 may go to active, but n2 (ready) may not: the whole batch is refused.
    with pytest.raises(InvalidTransitionError) as err:
        lifecycle.transition(store, "rack1", ["n1", "n2"], lifecycle.ACTIVE, "done")
    assert err.value.node == "n2"
    assert store.get_node("rack1", "n1").state == "deploying"
    assert store.list_events("rack1") == before


def test_failed_keeps_last_error_and_allows_retry(store: Store) -> None:
    lifecycle.register_cluster(store, parse_spec(GOOD_SPEC), initial_state="ready", reason="t")
    lifecycle.transition(store, "rack1", ["n1"], lifecycle.DEPLOYING, "deploy")
    lifecycle.transition(store, "rack1", ["n1"], lifecycle.FAILED, "boom", error="apt failed")
    assert store.get_node("rack1", "n1").last_error == "apt failed"
    lifecycle.transition(store, "rack1", ["n1"], lifecycle.DEPLOYING, "retry")
    assert store.get_node("rack1", "n1").last_error is None


def test_reregistering_keeps_node_state(store: Store) -> None:
    spec = parse_spec(GOOD_SPEC)
    lifecycle.register_cluster(store, spec, initial_state="ready", reason="t")
    lifecycle.transition(store, "rack1", ["n1"], lifecycle.DEPLOYING, "deploy")
    lifecycle.register_cluster(store, spec, initial_state="ready", reason="again")
    assert store.get_node("rack1", "n1").state == "deploying"


def test_cluster_name_taken_by_other_provisioner(store: Store) -> None:
    spec = parse_spec(GOOD_SPEC)
    lifecycle.register_cluster(store, spec, initial_state="ready", reason="t")
    lab = parse_spec(GOOD_SPEC.replace("provisioner: static", "provisioner: lab"))
    with pytest.raises(ConflictError):
        lifecycle.register_cluster(store, lab, initial_state="ready", reason="t")
