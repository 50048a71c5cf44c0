"""Spec validation of the ironic provisioner's fields: every problem names its field."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from metalctl.errors import SpecError
from metalctl.spec import parse_spec

BASE: dict[str, Any] = {
    "apiVersion": "metalctl/v1alpha1",
    "kind": "Cluster",
    "metadata": {"name": "rack"},
    "spec": {
        "provisioner": "ironic",
        "ironic": {"endpoint": "http://ironic.example:6385", "auth": "none"},
        "image": {"url": "http://images.example/debian-12.raw", "sha256": "ab" * 32},
        "nodes": [
            {
                "name": "r1-n1",
                "address": "192.0.2.21",
                "macs": ["52:54:00:aa:bb:01"],
                "bmc": {
                    "driver": "redfish",
                    "address": "https://bmc-r1-n1",
                    "username": "admin",
                    "passwordFile": "/etc/metalctl/bmc-r1-n1",
                },
            },
            {
                "name": "r1-n2",
                "address": "192.0.2.22",
                "macs": ["52:54:00:aa:bb:02", "52:54:00:aa:bb:12"],
                "bmc": {
                    "driver": "ipmi",
                    "address": "10.0.0.22",
                    "username": "admin",
                    "passwordEnv": "BMC_PASSWORD",
                },
                "image": {"url": "https://images.example/other.qcow2", "sha256": "cd" * 32},
            },
            {
                "name": "r1-n3",
                "address": "192.0.2.23",
                "macs": ["52:54:00:aa:bb:03"],
                "bmc": {"driver": "fake-hardware", "interfaces": {"deploy": "direct"}},
            },
        ],
        "swarm": {"master": "r1-n1", "managers": ["r1-n1"]},
        "consul": {"servers": ["r1-n1"]},
    },
}


def spec_with(**changes: Any) -> str:
    data = copy.deepcopy(BASE)
    for path, value in changes.items():
        *parents, last = path.split("__")
        target = data
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is None:
            del target[last]
        else:
            target[last] = value
    return yaml.safe_dump(data)


def problems(text: str) -> dict[str, str]:
    with pytest.raises(SpecError) as err:
        parse_spec(text)
    return dict(err.value.problems)


def test_a_good_ironic_spec_parses() -> None:
    spec = parse_spec(spec_with())
    n1, n2, n3 = spec.nodes
    assert (
        spec.spec.ironic is not None and spec.spec.ironic.endpoint == "http://ironic.example:6385"
    )
    assert n1.bmc is not None and n1.bmc.password_file == "/etc/metalctl/bmc-r1-n1"
    assert n2.image is not None and n2.image.url.endswith("other.qcow2")
    assert n3.bmc is not None and n3.bmc.interfaces == {"deploy": "direct"}
    assert parse_spec(spec.to_yaml()) == spec


def test_a_clouds_yaml_cloud_instead_of_an_endpoint() -> None:
    spec = parse_spec(spec_with(spec__ironic={"cloud": "rack-ironic"}))
    assert spec.spec.ironic is not None and spec.spec.ironic.cloud == "rack-ironic"


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"spec__ironic": None}, "spec.ironic", "needs an ironic: section"),
        ({"spec__ironic": {"auth": "none"}}, "spec.ironic", "exactly one of endpoint"),
        (
            {"spec__ironic": {"cloud": "c", "endpoint": "http://i:6385"}},
            "spec.ironic",
            "exactly one",
        ),
        ({"spec__ironic": {"cloud": "c", "auth": "none"}}, "spec.ironic.auth", "clouds.yaml"),
        ({"spec__ironic": {"endpoint": "ftp://x"}}, "spec.ironic.endpoint", "http"),
        ({"spec__image": None}, "spec.nodes.0.image", "no image"),
        ({"spec__image": {"url": "http://i/x", "sha256": "AB"}}, "spec.image.sha256", "SHA-256"),
        ({"spec__nodes__0__macs": None}, "spec.nodes.0.macs", "needs macs"),
        ({"spec__nodes__0__macs": []}, "spec.nodes.0.macs", "must not be empty"),
        ({"spec__nodes__0__macs": ["52:54:00:AA:BB:01"]}, "spec.nodes.0.macs.0", "lowercase"),
        (
            {"spec__nodes__2__macs": ["52:54:00:aa:bb:12"]},
            "spec.nodes.2.macs.0",
            "duplicate MAC '52:54:00:aa:bb:12' (also spec.nodes.1.macs.1)",
        ),
        (
            {"spec__nodes__1__macs": ["52:54:00:aa:bb:02", "52:54:00:aa:bb:02"]},
            "spec.nodes.1.macs.1",
            "duplicate MAC",
        ),
        ({"spec__nodes__0__bmc": None}, "spec.nodes.0.bmc", "needs bmc"),
        ({"spec__nodes__0__bmc__driver": "ilo"}, "spec.nodes.0.bmc.driver", "redfish"),
        ({"spec__nodes__0__bmc__address": "bmc-r1-n1"}, "spec.nodes.0.bmc.address", "URL"),
        ({"spec__nodes__0__bmc__address": None}, "spec.nodes.0.bmc.address", "needs its address"),
        ({"spec__nodes__0__bmc__username": None}, "spec.nodes.0.bmc.username", "username"),
        (
            {"spec__nodes__0__bmc__passwordFile": None},
            "spec.nodes.0.bmc.passwordFile",
            "never the password",
        ),
        (
            {"spec__nodes__0__bmc__passwordFile": "bmc-pass"},
            "spec.nodes.0.bmc.passwordFile",
            "absolute path",
        ),
        (
            {"spec__nodes__0__bmc__passwordEnv": "X"},
            "spec.nodes.0.bmc.passwordEnv",
            "not both",
        ),
        (
            {"spec__nodes__0__bmc__password": "hunter2"},
            "spec.nodes.0.bmc.password",
            "unknown key",
        ),
        (
            {"spec__nodes__1__bmc__systemId": "/redfish/v1/Systems/1"},
            "spec.nodes.1.bmc.systemId",
            "only a redfish BMC",
        ),
        (
            {"spec__nodes__1__bmc__address": "bmc r1"},
            "spec.nodes.1.bmc.address",
            "host name or IP",
        ),
        (
            {"spec__nodes__2__bmc__interfaces": {"network": "neutron"}},
            "spec.nodes.2.bmc.interfaces.network.[key]",
            "",
        ),
        # Fields another provisioner would silently ignore are refused there.
        ({"spec__provisioner": "static"}, "spec.ironic", "only 'ironic'"),
    ],
)
def test_bad_ironic_fields_are_refused_naming_the_field(
    changes: dict[str, Any], field: str, words: str
) -> None:
    found = problems(spec_with(**changes))
    assert field in found, found
    assert words in found[field]


def test_static_spec_with_node_bmc_is_refused() -> None:
    text = spec_with(spec__provisioner="static", spec__ironic=None, spec__image=None)
    found = problems(text)
    assert {"spec.nodes.0.bmc", "spec.nodes.0.macs", "spec.nodes.1.image"} <= set(found)
