"""`provision: true` in a spec: `deploy` first provisions the nodes not yet ready."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from metalctl import lifecycle, provisioners
from metalctl.errors import ProvisionError, SpecError
from metalctl.operations.machines import provision_unready
from metalctl.provisioners.base import Capabilities, Say
from metalctl.spec import ClusterSpec, parse_spec
from metalctl.store import Store
from tests.conftest import GOOD_SPEC

PROVISIONING_SPEC = GOOD_SPEC.replace(
    "  provisioner: static\n", "  provisioner: static\n  provision: true\n"
)


@dataclass
class _Backend:
    """A provisioner that installs an OS on the nodes it is given, and fails ``broken``."""

    broken: dict[str, str] = field(default_factory=dict)
    installed: list[str] = field(default_factory=list)
    name: ClassVar[str] = "fake"
    capabilities: ClassVar[Capabilities] = Capabilities(
        creates_machines=False, power=False, installs_os=True
    )

    def provision(
        self,
        store: Store,
        spec: ClusterSpec,
        names: Sequence[str],
        say: Say,
        *,
        timeout: float | None = None,
    ) -> dict[str, str]:
        self.installed += [n for n in names if n not in self.broken]
        return {n: why for n, why in self.broken.items() if n in names}


def _register(store: Store, text: str) -> ClusterSpec:
    """rack1 with n1 discovered, n2 failed while provisioning, n3 failed in a deploy
    (its OS is there), n4 left 'provisioning' by a run that stopped."""
    spec = parse_spec(text)
    lifecycle.register_cluster(store, spec, initial_state=lifecycle.DISCOVERED, reason="t")
    move = lifecycle.transition
    move(store, "rack1", ["n2", "n3", "n4"], lifecycle.PROVISIONING, "provision")
    move(store, "rack1", ["n2"], lifecycle.FAILED, "provision failed", error="no BMC")
    move(store, "rack1", ["n3"], lifecycle.READY, "provisioned")
    move(store, "rack1", ["n3"], lifecycle.DEPLOYING, "deploy")
    move(store, "rack1", ["n3"], lifecycle.FAILED, "deploy failed", error="apt failed")
    return spec


def _states(store: Store) -> dict[str, str]:
    return {n.name: n.state for n in store.list_nodes("rack1")}


def test_nodes_not_yet_ready_leave_out_those_that_have_their_os(store: Store) -> None:
    _register(store, GOOD_SPEC)
    assert lifecycle.not_yet_ready(store, "rack1") == ["n1", "n2", "n4"]
    # n2 provisioned after all, then failed in a deploy: its OS is there now.
    lifecycle.transition(store, "rack1", ["n2"], lifecycle.PROVISIONING, "provision")
    lifecycle.transition(store, "rack1", ["n2"], lifecycle.READY, "provisioned")
    lifecycle.transition(store, "rack1", ["n2"], lifecycle.DEPLOYING, "deploy")
    lifecycle.transition(store, "rack1", ["n2"], lifecycle.FAILED, "deploy failed", error="x")
    assert lifecycle.not_yet_ready(store, "rack1") == ["n1", "n4"]


def test_provision_true_installs_the_nodes_not_yet_ready(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _register(store, PROVISIONING_SPEC)
    backend = _Backend()
    monkeypatch.setattr(provisioners, "get", lambda name: backend)
    said: list[str] = []
    results = provision_unready(store, spec, said.append)
    assert sorted(backend.installed) == ["n1", "n2", "n4"]  # not n3: it has its OS
    assert {r.node: r.state for r in results} == dict.fromkeys(["n1", "n2", "n4"], "ready")
    assert _states(store) == {"n1": "ready", "n2": "ready", "n3": "failed", "n4": "ready"}
    assert any("n1, n2, n4" in line for line in said)
    # A second deploy finds nothing to provision.
    assert provision_unready(store, spec, said.append) == []
    assert sorted(backend.installed) == ["n1", "n2", "n4"]


def test_a_node_that_fails_to_provision_stops_the_deploy_with_the_reason(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _register(store, PROVISIONING_SPEC)
    backend = _Backend(broken={"n4": "Ironic: deploy failed: no image"})
    monkeypatch.setattr(provisioners, "get", lambda name: backend)
    with pytest.raises(ProvisionError) as err:
        provision_unready(store, spec, lambda _: None)
    assert "1 node(s) failed: n4: Ironic: deploy failed: no image" in err.value.message
    assert err.value.exit_code == 6
    assert _states(store) == {"n1": "ready", "n2": "ready", "n3": "failed", "n4": "failed"}


def test_without_provision_true_nothing_is_provisioned(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _register(store, GOOD_SPEC)
    backend = _Backend()
    monkeypatch.setattr(provisioners, "get", lambda name: backend)
    assert provision_unready(store, spec, lambda _: None) == []
    assert backend.installed == []
    assert _states(store)["n1"] == "discovered"


def test_provision_field_is_a_strict_bool_and_absent_from_specs_that_omit_it() -> None:
    assert parse_spec(PROVISIONING_SPEC).spec.provision is True
    assert "provision: true" in parse_spec(PROVISIONING_SPEC).to_yaml()
    # Specs stored before the field existed compare equal to their re-rendering.
    assert "provision" not in parse_spec(GOOD_SPEC).to_yaml().replace("provisioner", "")
    with pytest.raises(SpecError) as err:
        parse_spec(PROVISIONING_SPEC.replace("provision: true", "provision: 'yes'"))
    assert any(f == "spec.provision" for f, _ in err.value.problems)
