"""PXE provisioning decisions: which machine is a node's, which disk gets the image, what
the cloud-init seed says; and the spec rules of the PXE provisioners."""

from __future__ import annotations

import time

import pytest
import yaml

from metalctl.errors import ConflictError, SpecError
from metalctl.provisioners import pxe_plan
from metalctl.spec import Node, RootDevice, parse_spec
from metalctl.store import MachineRecord

GIB = 1 << 30


def _machine(
    mid: str, mac: str, *, serial: str | None = None, node: str | None = None
) -> MachineRecord:
    now = time.time()
    return MachineRecord(
        mid, mac, (mac,), None, serial, {}, "discovered", "c1" if node else None, node, now, now
    )


def _node(**extra: object) -> Node:
    return Node.model_validate({"name": "n1", "address": "10.9.0.11", **extra})


def test_machine_found_by_mac_serial_or_enrolment() -> None:
    machines = [
        _machine("m-1", "52:54:00:00:00:01"),
        _machine("m-2", "52:54:00:00:00:02", serial="S2"),
        _machine("m-3", "52:54:00:00:00:03", node="n1"),
    ]
    assert pxe_plan.machine_for(_node(mac="52:54:00:00:00:01"), "c1", machines[:2]).id == "m-1"
    assert pxe_plan.machine_for(_node(serial="S2"), "c1", machines[:2]).id == "m-2"
    assert pxe_plan.machine_for(_node(), "c1", machines).id == "m-3"


def test_no_or_two_matching_machines_are_refused_with_what_to_do() -> None:
    with pytest.raises(ConflictError, match="no discovered machine matches") as caught:
        pxe_plan.machine_for(_node(mac="52:54:00:00:00:09"), "c1", [])
    assert "PXE-boots" in (caught.value.hint or "")
    two = [_machine("m-1", "52:54:00:00:00:01"), _machine("m-2", "52:54:00:00:00:02", serial="S")]
    with pytest.raises(ConflictError, match="several machines"):
        pxe_plan.machine_for(_node(mac="52:54:00:00:00:01", serial="S"), "c1", two)


FACTS = {
    "disks": [
        {"name": "sda", "size_bytes": 960 * GIB, "serial": "BIG", "wwn": "0x5000c500a"},
        {"name": "sdb", "size_bytes": 240 * GIB, "serial": "SMALL"},
        {"name": "sdc", "size_bytes": 1 * GIB, "serial": "TINY"},
    ]
}


def test_default_disk_is_the_smallest_that_holds_the_image() -> None:
    assert pxe_plan.choose_disk("n1", FACTS, None, 2 * GIB).name == "sdb"


@pytest.mark.parametrize(
    ("hint", "want"),
    [
        (RootDevice(serial="BIG"), "sda"),
        (RootDevice(wwn="0x5000c500a"), "sda"),
        (RootDevice(name="sdb"), "sdb"),
        (RootDevice.model_validate({"minSizeGiB": 500}), "sda"),
    ],
)
def test_root_device_hint_picks_the_disk(hint: RootDevice, want: str) -> None:
    assert pxe_plan.choose_disk("n1", FACTS, hint, 2 * GIB).name == want


def test_no_fitting_disk_names_what_the_machine_has() -> None:
    with pytest.raises(ConflictError) as caught:
        pxe_plan.choose_disk("n1", FACTS, RootDevice(serial="TINY"), 2 * GIB)
    assert "sdc (1024 MiB, serial TINY)" in caught.value.message


def test_seed_sets_hostname_key_static_address_and_proxy() -> None:
    node = _node(mac="52:54:00:00:00:01")
    files = pxe_plan.seed(
        node, "m-1", "52:54:00:00:00:01", "10.9.0.0/24", "ssh-ed25519 AAAA metalctl\n", "x",
        apt_proxy="http://10.9.0.1:3142",
    )  # fmt: skip
    user = yaml.safe_load(files["user-data"])
    assert files["user-data"].startswith("#cloud-config\n")
    assert user["hostname"] == "n1" and user["ssh_authorized_keys"] == ["ssh-ed25519 AAAA metalctl"]
    assert user["apt"] == {"proxy": "http://10.9.0.1:3142"} and user["ssh_pwauth"] is False
    net = yaml.safe_load(files["network-config"])["ethernets"]["prov0"]
    assert net["match"] == {"macaddress": "52:54:00:00:00:01"}
    assert net["addresses"] == ["10.9.0.11/24"] and "gateway4" not in net and "routes" not in net
    assert yaml.safe_load(files["meta-data"])["local-hostname"] == "n1"


SPEC = """
apiVersion: metalctl/v1alpha1
kind: Cluster
metadata: {name: rack}
spec:
  provisioner: pxe
  pxe: {network: 10.9.0.0/24}
  nodes:
    - {name: a, address: 10.9.0.11, mac: '52:54:00:00:00:01'}
    - {name: b, address: 10.9.0.12, serial: S2}
  swarm: {master: a, managers: [a]}
  consul: {servers: [a]}
"""


def _fields(text: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_spec(text)
    return [field for field, _ in caught.value.problems]


def test_pxe_spec_is_accepted() -> None:
    spec = parse_spec(SPEC)
    assert spec.spec.pxe is not None and spec.spec.pxe.image == "debian-12"


def test_pxe_spec_rules_name_the_field() -> None:
    assert _fields(SPEC.replace("  pxe: {network: 10.9.0.0/24}\n", "")) == ["spec.pxe"]
    assert "spec.nodes.1" in _fields(SPEC.replace(", serial: S2", ""))
    assert "spec.nodes.1.address" in _fields(SPEC.replace("10.9.0.12", "10.8.0.12"))
    dup = SPEC.replace("serial: S2", "mac: '52:54:00:00:00:01'")
    assert "spec.nodes.1.mac" in _fields(dup)
    assert "spec.nodes.0.mac" in _fields(SPEC.replace("52:54:00:00:00:01", "52-54-00-00-00-01"))
