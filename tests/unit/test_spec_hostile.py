"""Hostile cluster specs: every one must be refused with a SpecError (exit 3) that
names the offending field (or the file / YAML position), never a traceback, a hang
or a megabyte of output."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from metalctl.errors import SpecError
from metalctl.spec import parse_spec
from tests.cli import metalctl
from tests.conftest import GOOD_SPEC

MIB = 1024 * 1024


def mutated(change: Callable[[dict[str, Any]], object]) -> str:
    """GOOD_SPEC with one change, as YAML text."""
    data = yaml.safe_load(GOOD_SPEC)
    change(data)
    return yaml.safe_dump(data, sort_keys=False, width=1 << 30)


def node0(**fields: object) -> str:
    return mutated(lambda d: d["spec"]["nodes"][0].update(fields))


def ssh0(**fields: object) -> str:
    return mutated(lambda d: d["spec"]["nodes"][0].update(ssh=fields))


def swarm(**fields: object) -> str:
    return mutated(lambda d: d["spec"]["swarm"].update(fields))


def consul(**fields: object) -> str:
    return mutated(lambda d: d["spec"]["consul"].update(fields))


def top(**fields: object) -> str:
    return mutated(lambda d: d.update(fields))


def body(**fields: object) -> str:
    return mutated(lambda d: d["spec"].update(fields))


def many_nodes(count: int, address: Callable[[int], str]) -> str:
    nodes = "".join(f"    - {{name: x{i}, address: {address(i)}}}\n" for i in range(count))
    return GOOD_SPEC.replace("  nodes:\n", "  nodes:\n" + nodes, 1)


def nested_merges(depth: int) -> str:
    lines = ["base0: &b0 {rack: r0}"]
    lines += [f"base{i}: &b{i} {{<<: *b{i - 1}, k{i}: v}}" for i in range(1, depth)]
    return "\n".join(lines) + "\n" + GOOD_SPEC


def alias_chain(links: int, depth: int = 30) -> str:
    """Anchors each nesting the previous one 30 levels deeper: small, but deep."""
    lines = ["a0: &a0 " + "[" * depth + "x" + "]" * depth]
    lines += [f"a{i}: &a{i} " + "[" * depth + f"*a{i - 1}" + "]" * depth for i in range(1, links)]
    return "\n".join(lines) + "\n" + GOOD_SPEC


BILLION_LAUGHS = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
    )
    + GOOD_SPEC.replace("labels: {rack: r1}", "labels: *i")
)

# name -> (spec text or bytes, what the error must name)
HOSTILE: dict[str, tuple[str | bytes, str]] = {
    # wrong types and nulls, field by field
    "metadata.name int": (top(metadata={"name": 123}), "metadata.name"),
    "metadata.name null": (top(metadata={"name": None}), "metadata.name"),
    "metadata scalar": (top(metadata="rack1"), "metadata"),
    "metadata.name unicode": (top(metadata={"name": "ráck1"}), "metadata.name"),
    "metadata.name newline": (top(metadata={"name": "rack1\n"}), "metadata.name"),
    "metadata.name huge": (top(metadata={"name": "r" * 100_000}), "metadata.name"),
    "apiVersion null": (top(apiVersion=None), "apiVersion"),
    "kind Pod": (top(kind="Pod"), "kind"),
    "spec a list": (top(spec=[]), "spec"),
    "nodes a mapping": (body(nodes={"n1": "192.0.2.11"}), "spec.nodes"),
    "nodes null": (body(nodes=None), "spec.nodes"),
    "nodes empty": (body(nodes=[]), "spec.nodes"),
    "node a string": (mutated(lambda d: d["spec"]["nodes"].__setitem__(0, "n1")), "spec.nodes.0"),
    "node name null": (node0(name=None), "spec.nodes.0.name"),
    "node name newline": (node0(name="n1\n"), "spec.nodes.0.name"),
    "node name bidi override": (node0(name="n1\u202e"), "spec.nodes.0.name"),
    "address null": (node0(address=None), "spec.nodes.0.address"),
    "address int": (node0(address=3232235777), "spec.nodes.0.address"),
    "address hostname": (node0(address="localhost"), "spec.nodes.0.address"),
    "address ipv6": (node0(address="2001:db8::11"), "spec.nodes.0.address"),
    "address unspecified": (node0(address="0.0.0.0"), "spec.nodes.0.address"),
    "address loopback": (node0(address="127.0.0.1"), "spec.nodes.0.address"),
    "address multicast": (node0(address="224.0.0.1"), "spec.nodes.0.address"),
    "address broadcast": (node0(address="255.255.255.255"), "spec.nodes.0.address"),
    "address leading zero": (node0(address="192.0.2.011"), "spec.nodes.0.address"),
    "address padded": (node0(address=" 192.0.2.11"), "spec.nodes.0.address"),
    "ssh null": (node0(ssh=None), "spec.nodes.0.ssh"),
    "ssh port string": (ssh0(port="22"), "spec.nodes.0.ssh.port"),
    "ssh port bool": (ssh0(port=True), "spec.nodes.0.ssh.port"),
    "ssh port float": (ssh0(port=22.0), "spec.nodes.0.ssh.port"),
    "ssh port nan": (ssh0(port=float("nan")), "spec.nodes.0.ssh.port"),
    "ssh port negative": (ssh0(port=-22), "spec.nodes.0.ssh.port"),
    "ssh port zero": (ssh0(port=0), "spec.nodes.0.ssh.port"),
    "ssh port huge": (ssh0(port=10**30), "spec.nodes.0.ssh.port"),
    "ssh port 5000 digits": (
        GOOD_SPEC.replace("port: 2222", "port: 1" + "0" * 5000),
        "yaml",
    ),
    "ssh port 5000 hex digits": (
        GOOD_SPEC.replace("port: 2222", "port: 0x" + "f" * 5000),
        "spec.nodes.1.ssh.port",
    ),
    "ssh port consul clash": (ssh0(port=8500), "spec.nodes.0.ssh.port"),
    "ssh user empty": (ssh0(user=""), "spec.nodes.0.ssh.user"),
    "ssh user option injection": (
        ssh0(user="-oProxyCommand=touch /tmp/pwned"),
        "spec.nodes.0.ssh.user",
    ),
    "ssh user list": (ssh0(user=["root"]), "spec.nodes.0.ssh.user"),
    "labels a list": (node0(labels=["a", "b"]), "spec.nodes.0.labels"),
    "label value int": (node0(labels={"rack": 1}), "spec.nodes.0.labels"),
    "label value null": (node0(labels={"rack": None}), "spec.nodes.0.labels"),
    "label key with =": (node0(labels={"a=b": "c"}), "spec.nodes.0.labels"),
    "label value escape sequence": (
        node0(labels={"rack": "\x1b[2J\x1b[31mowned"}),
        "spec.nodes.0.labels",
    ),
    "labels ten thousand": (
        node0(labels={f"k{i}": "v" for i in range(10_000)}),
        "spec.nodes.0.labels",
    ),
    "swarmRole leader": (node0(swarmRole="leader"), "spec.nodes.0.swarmRole"),
    "swarmRole bool": (node0(swarmRole=True), "spec.nodes.0.swarmRole"),
    "managers a string": (swarm(managers="n1"), "spec.swarm.managers"),
    "managers nested list": (swarm(managers=["n1", ["n2"], "n3"]), "spec.swarm.managers.1"),
    "managers a set": (
        GOOD_SPEC.replace("managers: [n1, n2, n3]", "managers: !!set {n1, n2, n3}"),
        "spec.swarm.managers",
    ),
    "managers five thousand": (
        swarm(managers=[f"n{i}" for i in range(5000)]),
        "spec.swarm.managers",
    ),
    "master null": (swarm(master=None), "spec.swarm.master"),
    "master a list": (swarm(master=["n1"]), "spec.swarm.master"),
    "dockerApiPort string": (swarm(dockerApiPort="2376"), "spec.swarm.dockerApiPort"),
    "dockerApiPort too big": (swarm(dockerApiPort=70000), "spec.swarm.dockerApiPort"),
    "dockerApiPort consul": (swarm(dockerApiPort=8500), "spec.swarm.dockerApiPort"),
    "dockerApiPort swarm": (swarm(dockerApiPort=2377), "spec.swarm.dockerApiPort"),
    "consul servers null": (consul(servers=None), "spec.consul.servers"),
    "datacenter space": (consul(datacenter="DC 1"), "spec.consul.datacenter"),
    "datacenter newline": (consul(datacenter="dc1\n"), "spec.consul.datacenter"),
    "version traversal": (consul(version="../../../../tmp/x"), "spec.consul.version"),
    "version float": (GOOD_SPEC + "    version: 1.8\n", "spec.consul.version"),
    "version unicode digits": (consul(version="١.٨.٧"), "spec.consul.version"),
    "binary a string": (consul(binary="https://example.org/consul"), "spec.consul.binary"),
    "binary url file": (
        consul(binary={"url": "file:///etc/passwd", "sha256": "a" * 64}),
        "spec.consul.binary.url",
    ),
    "binary url jinja": (
        consul(binary={"url": "https://x.org/{{ lookup('pipe','id') }}", "sha256": "a" * 64}),
        "spec.consul.binary.url",
    ),
    "binary sha256 short": (
        consul(binary={"url": "https://x.org/consul.zip", "sha256": "XYZ"}),
        "spec.consul.binary.sha256",
    ),
    "provisioner traversal": (body(provisioner="../lab"), "spec.provisioner"),
    "provisioner null": (body(provisioner=None), "spec.provisioner"),
    "top-level int key": (GOOD_SPEC + "1: 2\n", "1: a key must be a string"),
    # YAML-level hostility
    "empty file": ("", "(top)"),
    "only a comment": ("# nothing here\n", "(top)"),
    "null document": ("null\n", "(top)"),
    "list at top": ("- a\n- b\n", "(top)"),
    "scalar at top": ("hello\n", "(top)"),
    "two documents": (GOOD_SPEC + "---\n" + GOOD_SPEC, "yaml"),
    "python object tag": ("!!python/object/apply:os.system ['id']\n", "yaml"),
    "python name tag": (GOOD_SPEC + "x: !!python/name:os.system\n", "yaml"),
    "local tag": (GOOD_SPEC.replace("name: rack1", "name: !foo rack1"), "yaml"),
    "bad !!int": (GOOD_SPEC.replace("port: 2222", "port: !!int abc"), "yaml"),
    "bad !!float": (GOOD_SPEC.replace("port: 2222", "port: !!float abc"), "yaml"),
    "bad !!bool": (GOOD_SPEC.replace("port: 2222", "port: !!bool maybe"), "yaml"),
    "bad !!timestamp": (GOOD_SPEC.replace("port: 2222", "port: !!timestamp nope"), "yaml"),
    "bad !!binary": (
        GOOD_SPEC.replace("port: 2222", "port: !!binary '!!!'"),
        "spec.nodes.1.ssh.port",
    ),
    "binary as user": (
        GOOD_SPEC.replace("user: admin", "user: !!binary cm9vdA=="),
        "spec.nodes.1.ssh.user",
    ),
    "date as version": (GOOD_SPEC + "    version: 2020-01-01\n", "spec.consul.version"),
    "billion laughs": (BILLION_LAUGHS, "yaml"),
    "recursive alias": (GOOD_SPEC.replace("labels: {rack: r1}", "labels: &l {a: *l}"), "yaml"),
    "undefined alias": (GOOD_SPEC.replace("labels: {rack: r1}", "labels: *nope"), "yaml"),
    "long merge chain": (nested_merges(3000), "yaml"),
    "duplicate key": (GOOD_SPEC + "  provisioner: lab\n", "duplicate key 'provisioner'"),
    "duplicate node key": (
        GOOD_SPEC.replace("{name: n1, address: 192.0.2.11}", "{name: n1, name: n9, address: 1}"),
        "duplicate key 'name'",
    ),
    "unhashable key": (GOOD_SPEC + "? [a, b]\n: c\n", "yaml"),
    "deep flow nesting": ("a: " + "[" * 100_000 + "]" * 100_000 + "\n", "yaml"),
    "deep block nesting": ("a:\n" + "- " * 50_000 + "x\n", "yaml"),
    "deep through aliases": (alias_chain(50), "yaml"),
    "deep mapping nesting": ("".join(" " * i + f"k{i}:\n" for i in range(200)), "yaml"),
    "tab indentation": (GOOD_SPEC.replace("  swarm:", "\tswarm:"), "yaml"),
    "control character": (GOOD_SPEC.replace("rack1", "rack\x01"), "yaml"),
    "NUL byte": (GOOD_SPEC.replace("rack1", "rack\x001"), "file"),
    "NUL bytes (bytes)": (GOOD_SPEC.encode().replace(b"rack1", b"rack\x001"), "file"),
    "utf-16": (GOOD_SPEC.encode("utf-16"), "file"),
    "latin-1": (GOOD_SPEC.replace("rack1", "räck1").encode("latin-1"), "file"),
    "lone surrogate (str)": (GOOD_SPEC.replace("rack1", "rack\udcff"), "file"),
    "two MiB": (GOOD_SPEC + "#" * (2 * MIB), "file"),
    "two MiB (bytes)": (GOOD_SPEC.encode() + b"#" * (2 * MIB), "file"),
    "megabyte of flow ints": ("a: [" + "1," * (MIB // 2 - 8) + "]\n", "yaml"),
    "megabyte of block list": ("a:\n" + "- a\n" * (MIB // 4 - 4), "yaml"),
    "megabyte of nodes": (
        many_nodes(14_000, lambda i: f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"),
        "spec",
    ),
    "two thousand nodes": (
        many_nodes(2000, lambda i: f"10.0.{i // 256}.{i % 256}"),
        "spec.nodes",
    ),
    "thousands of bad nodes": (many_nodes(5000, lambda i: "bad"), "spec.nodes"),
    "huge simple key": (GOOD_SPEC + "k" * 500_000 + ": 1\n", "yaml"),
    "huge unknown key": (GOOD_SPEC + "? " + "k" * 500_000 + "\n: 1\n", "'kkkk"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_spec_is_refused_with_a_bounded_message_naming_the_field(case: str) -> None:
    text, field = HOSTILE[case]
    with pytest.raises(SpecError) as err:
        parse_spec(text)
    message = str(err.value)
    assert err.value.exit_code == 3
    assert field in message, message
    assert len(message) < 8192, len(message)


def test_yaml_merge_keys_and_shared_anchors_still_work() -> None:
    text = GOOD_SPEC.replace(
        "{name: n1, address: 192.0.2.11}", "&n1 {name: n1, address: 192.0.2.11}"
    )
    text = text.replace(
        "- {name: n4, address: 192.0.2.14}", "- {<<: *n1, name: n4, address: 192.0.2.14}"
    )
    text = text.replace("servers: [n1, n2, n3]", "servers: *m").replace(
        "managers: [", "managers: &m ["
    )
    spec = parse_spec(text)
    assert spec.node("n4").address == "192.0.2.14"
    assert spec.spec.consul.servers == ["n1", "n2", "n3"]


def test_spec_may_be_given_as_utf8_bytes_with_bom_or_crlf() -> None:
    assert parse_spec(GOOD_SPEC.encode()).name == "rack1"
    assert parse_spec(b"\xef\xbb\xbf" + GOOD_SPEC.encode()).name == "rack1"
    assert parse_spec(GOOD_SPEC.replace("\n", "\r\n")).name == "rack1"


@pytest.mark.parametrize(
    ("name", "text"),
    [("laughs.yaml", BILLION_LAUGHS), ("deep.yaml", "a: " + "[" * 100_000 + "]" * 100_000)],
)
def test_cli_refuses_hostile_spec_with_exit_3_and_no_traceback(
    name: str, text: str, tmp_path: Path
) -> None:
    path = tmp_path / name
    path.write_text(text)
    proc = metalctl("swarm", "env", "-f", str(path), home=tmp_path / "home")
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "yaml" in proc.stderr


def test_cli_refuses_dev_zero_without_reading_it(tmp_path: Path) -> None:
    proc = metalctl("swarm", "env", "-f", "/dev/zero", home=tmp_path / "home")
    assert proc.returncode == 3, proc.stderr
    assert "not a regular file" in proc.stderr
