from __future__ import annotations

import pytest
import yaml

from metalctl.errors import SpecError
from metalctl.spec import parse_spec
from tests.conftest import GOOD_SPEC


def mutate(change) -> str:  # type: ignore[no-untyped-def]
    data = yaml.safe_load(GOOD_SPEC)
    change(data)
    return yaml.safe_dump(data)


def test_good_spec_parses_with_defaults() -> None:
    spec = parse_spec(GOOD_SPEC)
    assert spec.name == "rack1"
    assert spec.spec.swarm.docker_api_port == 2376
    assert spec.node("n2").ssh.port == 2222
    assert spec.node("n1").ssh.user == "root"
    assert spec.role_of("n4") == "worker"
    assert spec.spec.consul.datacenter == "dc1"
    # Round trip: what we store parses back to the same spec.
    assert parse_spec(spec.to_yaml()) == spec


BAD = {
    "even managers": (
        lambda d: d["spec"]["swarm"].update(managers=["n1", "n2"]),
        "spec.swarm.managers",
        "odd",
    ),
    "too many managers": (
        lambda d: (
            d["spec"]["nodes"].extend(
                {"name": f"m{i}", "address": f"192.0.2.{100 + i}"} for i in range(6)
            ),
            d["spec"]["swarm"].update(
                managers=["n1", "n2", "n3", "m0", "m1", "m2", "m3", "m4", "m5"]
            ),
        ),
        "spec.swarm.managers",
        "at most 7",
    ),
    "duplicate names": (
        lambda d: d["spec"]["nodes"][1].update(name="n1"),
        "spec.nodes.1.name",
        "duplicate node name",
    ),
    "duplicate addresses": (
        lambda d: d["spec"]["nodes"][3].update(address="192.0.2.11"),
        "spec.nodes.3.address",
        "duplicate address",
    ),
    "master not a manager": (
        lambda d: d["spec"]["swarm"].update(master="n4"),
        "spec.swarm.master",
        "must be a manager",
    ),
    "unknown key": (
        lambda d: d["spec"]["swarm"].update(replicas=3),
        "spec.swarm.replicas",
        "unknown key",
    ),
    "even consul servers": (
        lambda d: d["spec"]["consul"].update(servers=["n1", "n2"]),
        "spec.consul.servers",
        "odd",
    ),
    "manager not a node": (
        lambda d: d["spec"]["swarm"].update(managers=["n1", "n2", "x9"]),
        "spec.swarm.managers",
        "x9",
    ),
    "plain docker port": (
        lambda d: d["spec"]["swarm"].update(dockerApiPort=2375),
        "spec.swarm.dockerApiPort",
        "mutual TLS",
    ),
    "wrong apiVersion": (lambda d: d.update(apiVersion="v1"), "apiVersion", "metalctl/v1alpha1"),
    "bad address": (
        lambda d: d["spec"]["nodes"][0].update(address="not an address!"),
        "spec.nodes.0.address",
        "not an IP",
    ),
    "missing swarm": (lambda d: d["spec"].pop("swarm"), "spec.swarm", "missing"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_spec_names_the_field(case: str) -> None:
    change, field, words = BAD[case]
    with pytest.raises(SpecError) as err:
        parse_spec(mutate(change))
    fields = [f for f, _ in err.value.problems]
    assert field in fields, err.value.problems
    assert words in str(err.value)


def test_malformed_yaml_gives_position() -> None:
    with pytest.raises(SpecError) as err:
        parse_spec("apiVersion: metalctl/v1alpha1\nkind: [Cluster\n")
    assert err.value.problems[0][0] == "yaml"
    assert "line" in str(err.value)


def test_all_rule_problems_reported_together() -> None:
    def change(d):  # type: ignore[no-untyped-def]
        d["spec"]["swarm"].update(master="n4", managers=["n1", "n2"])
        d["spec"]["consul"].update(servers=["n1", "n2"])

    with pytest.raises(SpecError) as err:
        parse_spec(mutate(change))
    fields = {f for f, _ in err.value.problems}
    assert {"spec.swarm.master", "spec.swarm.managers", "spec.consul.servers"} <= fields
