from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from metalctl.errors import SpecError
from metalctl.spec import (
    API_VERSION,
    Node,
    check_rules,
    load_spec_file,
    parse_spec,
)
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
        d["spec"]["swarm"].update(master="n4", managers=["n1", "x9"])
        d["spec"]["consul"].update(servers=["n1", "n1"])

    with pytest.raises(SpecError) as err:
        parse_spec(mutate(change))
    fields = {f for f, _ in err.value.problems}
    assert {"spec.swarm.master", "spec.swarm.managers", "spec.consul.servers"} <= fields


def refusal(text: str | bytes) -> SpecError:
    with pytest.raises(SpecError) as err:
        parse_spec(text)
    assert err.value.exit_code == 3
    return err.value


def fields_of(err: SpecError) -> list[str]:
    return [f for f, _ in err.problems]


# 1. `$` matches before a final "\n": names must match whole.
@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d["metadata"].update(name="rack1\n"), "metadata.name"),
        (lambda d: d["spec"]["nodes"][3].update(name="n4\n"), "spec.nodes.3.name"),
        (lambda d: d["spec"]["consul"].update(datacenter="dc1\n"), "spec.consul.datacenter"),
        (lambda d: d["spec"]["consul"].update(version="1.8.7\n"), "spec.consul.version"),
        (lambda d: d["spec"].update(provisioner="static\n"), "spec.provisioner"),
    ],
)
def test_trailing_newline_in_a_name_is_refused(change, field: str) -> None:  # type: ignore[no-untyped-def]
    err = refusal(mutate(change))
    assert field in fields_of(err), err.problems


# 2. No lax coercion: wrong YAML types are refused, naming the field and the type wanted.
@pytest.mark.parametrize(
    ("old", "new", "field", "wanted"),
    [
        ("port: 2222", "port: true", "spec.nodes.1.ssh.port", "integer"),
        ("port: 2222", 'port: "2222"', "spec.nodes.1.ssh.port", "integer"),
        ("port: 2222", "port: 2222.0", "spec.nodes.1.ssh.port", "integer"),
        ("user: admin", "user: !!binary YWRtaW4=", "spec.nodes.1.ssh.user", "string"),
        ("managers: [n1, n2, n3]", "managers: !!set {n1, n2, n3}", "spec.swarm.managers", "list"),
        (
            "master: n1",
            "master: n1\n    dockerApiPort: '2376'",
            "spec.swarm.dockerApiPort",
            "integer",
        ),
    ],
)
def test_lax_coercion_of_wrong_yaml_types_is_refused(
    old: str, new: str, field: str, wanted: str
) -> None:
    err = refusal(GOOD_SPEC.replace(old, new))
    assert field in fields_of(err), err.problems
    assert wanted in dict(err.problems)[field]


# 3. A repeated key used to win silently (3 managers became 1).
def test_duplicate_yaml_keys_are_refused_naming_key_and_line() -> None:
    text = GOOD_SPEC.replace("managers: [n1, n2, n3]", "managers: [n1, n2, n3]\n    managers: [n1]")
    err = refusal(text)
    assert "duplicate key 'managers' at line 15" in str(err)


# 4. consul.version becomes a path component (artifacts/consul/VERSION/consul).
@pytest.mark.parametrize("version", ["../../../tmp/evil", "1.8.7/../../x", "latest", "1.8"])
def test_consul_version_that_is_not_a_version_is_refused(version: str) -> None:
    err = refusal(mutate(lambda d: d["spec"]["consul"].update(version=version)))
    assert "spec.consul.version" in fields_of(err)


def test_consul_version_with_a_suffix_is_accepted() -> None:
    spec = parse_spec(mutate(lambda d: d["spec"]["consul"].update(version="1.9.0-beta1")))
    assert spec.spec.consul.version == "1.9.0-beta1"


# 5. Consul and Swarm need IP addresses, reachable from the admin host and each other.
@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("node1.example.org", "not an IPv4 address"),
        ("2001:db8::11", "IPv6 addresses are not supported yet"),
        ("0.0.0.0", "unspecified"),
        ("127.0.0.1", "loopback"),
        ("224.0.0.1", "multicast"),
    ],
)
def test_node_address_must_be_a_usable_ipv4_address(address: str, words: str) -> None:
    err = refusal(mutate(lambda d: d["spec"]["nodes"][0].update(address=address)))
    assert "spec.nodes.0.address" in fields_of(err)
    assert words in str(err)


# 6. The Docker API port must not take a port that Swarm, Consul or SSH use.
@pytest.mark.parametrize(
    ("port", "service"),
    [
        (22, "SSH"),
        (2377, "Swarm"),
        (7946, "Swarm"),
        (4789, "Swarm"),
        (8300, "Consul"),
        (8301, "Consul"),
        (8302, "Consul"),
        (8500, "Consul"),
        (8501, "Consul"),
        (8600, "Consul"),
    ],
)
def test_docker_api_port_used_by_swarm_consul_or_ssh_is_refused(port: int, service: str) -> None:
    err = refusal(mutate(lambda d: d["spec"]["swarm"].update(dockerApiPort=port)))
    assert "spec.swarm.dockerApiPort" in fields_of(err)
    assert service in dict(err.problems)["spec.swarm.dockerApiPort"]


# 7. Size, depth and encoding limits, checked before or while parsing.
def test_spec_larger_than_1_mib_is_refused_before_parsing() -> None:
    huge = GOOD_SPEC + "# padding\n" * 200_000
    for text in (huge, huge.encode()):
        err = refusal(text)
        assert fields_of(err) == ["file"]
        assert "1 MiB" in str(err)


def test_load_spec_file_refuses_a_file_larger_than_1_mib(tmp_path: Path) -> None:
    path = tmp_path / "sparse.yaml"
    with path.open("wb") as f:
        f.truncate(64 * 1024 * 1024)  # sparse: costs no disk
    with pytest.raises(SpecError) as err:
        load_spec_file(path)
    assert "1 MiB" in str(err.value)


@pytest.mark.parametrize("kind", ["device", "fifo", "directory"])
def test_load_spec_file_refuses_non_regular_files(kind: str, tmp_path: Path) -> None:
    path = Path("/dev/zero")
    if kind == "fifo":
        path = tmp_path / "fifo"
        os.mkfifo(path)  # nobody writes: reading it would wait forever
    elif kind == "directory":
        path = tmp_path
    with pytest.raises(SpecError) as err:
        load_spec_file(path)
    assert "not a regular file" in str(err.value)


def test_load_spec_file_reads_utf8_and_refuses_other_encodings(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(GOOD_SPEC.encode())
    assert load_spec_file(path).name == "rack1"
    latin1 = GOOD_SPEC.replace("rack: r1", "rack: r\xe9").encode("latin-1")
    path.write_bytes(latin1)
    offset = latin1.index(b"\xe9")
    with pytest.raises(SpecError) as err:
        load_spec_file(path)
    assert f"not UTF-8 text at byte {offset}" in str(err.value)


@pytest.mark.parametrize(
    "text",
    [
        "a: " + "[" * 100_000 + "]" * 100_000,
        "a:\n" + "- " * 50_000 + "x\n",
        "".join(" " * i + f"k{i}:\n" for i in range(40)),
    ],
    ids=["flow", "block sequence", "block mapping"],
)
def test_deep_nesting_is_a_spec_error_not_a_recursion_error(text: str) -> None:
    assert "nested more than 32 levels deep" in str(refusal(text))


def test_nul_byte_is_refused_naming_its_offset() -> None:
    text = GOOD_SPEC.replace("rack1", "rack\x001")
    for raw in (text, text.encode()):
        assert f"NUL byte at byte {text.index(chr(0))}" in str(refusal(raw))


def test_node_count_is_capped() -> None:
    nodes = "".join(
        f"    - {{name: x{i}, address: 10.0.{i // 256}.{i % 256}}}\n" for i in range(1001)
    )
    err = refusal(GOOD_SPEC.replace("  nodes:\n", "  nodes:\n" + nodes, 1))
    assert "spec.nodes" in fields_of(err)
    assert "at most 1000" in str(err)


def test_megabyte_of_adversarial_yaml_is_refused_with_a_clear_error() -> None:
    # Used to take seconds per MiB (86 s for 10 MB); now refused after a bounded amount of work.
    for text in ("a: [" + "1," * 500_000 + "]\n", "a:\n" + "- a\n" * 250_000):
        err = refusal(text)
        assert "more than" in str(err) and "values" in str(err)


# 8. Error output is bounded however many problems a spec has.
def test_error_output_is_capped_for_thousands_of_problems() -> None:
    long_name = "N" * 500
    nodes = "".join(
        f"    - {{name: {long_name}{i}, address: bad{i}, ssh: {{port: -1}}}}\n" for i in range(996)
    )
    text = GOOD_SPEC.replace("  nodes:\n", "  nodes:\n" + nodes, 1)
    err = refusal(text)
    message = str(err)
    assert len(message) < 8192
    assert len(err.problems) == 21
    assert "... and " in message and "more problems" in message
    assert long_name not in message and "NNN..." in message


# 9. provisioner is a plain name; the provisioner registry decides which exist.
def test_provisioner_is_any_lowercase_name() -> None:
    spec = parse_spec(mutate(lambda d: d["spec"].update(provisioner="metal-x")))
    assert spec.spec.provisioner == "metal-x"
    assert parse_spec(mutate(lambda d: d["spec"].pop("provisioner"))).spec.provisioner == "static"
    for bad in ("Lab", "-lab", "a" * 33, "lab/x"):
        err = refusal(mutate(lambda d, bad=bad: d["spec"].update(provisioner=bad)))  # type: ignore[misc]
        assert "spec.provisioner" in fields_of(err)


def test_public_api_still_works() -> None:
    spec = parse_spec(GOOD_SPEC)
    grown = spec.with_node(Node.model_validate({"name": "n5", "address": "192.0.2.15"}))
    assert [n.name for n in grown.nodes][-1] == "n5"
    assert grown.role_of("n5") == "worker" and grown.role_of("n2") == "manager"
    assert check_rules(grown) == []
    assert API_VERSION == "metalctl/v1alpha1"
