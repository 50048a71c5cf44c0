"""Two options of the ironic provisioner against a real standalone Ironic (fake-hardware):
`release --keep` (the machine stays deployed, only metalctl retires the node) against the
plain form (Ironic undeploys it), and `ironic: {cloud: NAME}`
(a clouds.yaml cloud instead of an endpoint). The deployed "OS" of each node is the SSH
banner stand-in of tests/integration/ssh_standin.py."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.cli import metalctl
from tests.integration.ironic_support import (
    IronicServer,
    fake_node,
    ironic_spec,
    standalone_ironic,
)
from tests.integration.ssh_standin import ssh_standins
from tests.integration.test_ironic_provision import (
    _events,
    _ironic_nodes,
    _json,
    _states,
    _writes,
)


@pytest.fixture(scope="module")
def ironic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IronicServer]:
    """One Ironic for the module: each test uses node names of its own."""
    with standalone_ironic(tmp_path_factory.mktemp("ironic")) as server:
        yield server


def _ironic_view(server: IronicServer, names: list[str]) -> dict[str, tuple[str, bool]]:
    seen = _ironic_nodes(server)
    return {n: (str(seen[n]["state"]), bool(seen[n]["retired"])) for n in names}


def _writes_to(server: IronicServer, idents: set[str], since: int) -> list[str]:
    """Ironic API writes (not GET) since ``since`` whose path names one of the nodes."""
    return [f"{m} {p}" for m, p, _ in _writes(server)[since:] if any(u in p for u in idents)]


def _idents(server: IronicServer, names: list[str]) -> set[str]:
    """The nodes' names and Ironic UUIDs (an API path names a node by either)."""
    db = sqlite3.connect(server.db)
    try:
        rows = db.execute("SELECT name, uuid FROM nodes").fetchall()
    finally:
        db.close()
    return {uuid for name, uuid in rows if name in names} | set(names)


def _provision(home: Path, spec: Path, names: list[str], **env: str) -> None:
    results = _json(
        metalctl("provision", "-f", str(spec), "--parallel", "3", "-o", "json", home=home, **env)
    )
    assert {r["node"]: r["state"] for r in results} == dict.fromkeys(names, "ready")


# -- release --keep ----------------------------------------------------------------------


def test_release_keep_leaves_the_machine_active_and_release_undeploys_it(
    ironic: IronicServer, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    spec = tmp_path / "rack.yaml"
    with ssh_standins(3) as standins:
        nodes = [
            fake_node(i, a, standins.port, name=f"rk{i}")
            for i, a in enumerate(standins.addresses, start=21)
        ]
        names = [str(n["name"]) for n in nodes]
        spec.write_text(ironic_spec("rel", ironic.url, nodes))
        _provision(home, spec, names)
    assert _ironic_view(ironic, names) == dict.fromkeys(names, ("active", False))
    first, kept, freed = names

    before = len(_writes(ironic))
    keep = metalctl("release", kept, "-c", "rel", "--keep", "-o", "json", home=home)
    assert _json(keep) == [{"node": kept, "state": "retired", "error": None}]
    # --keep: not a single write to Ironic for the node; it stays deployed, not retired there.
    assert _writes_to(ironic, _idents(ironic, [kept]), before) == []
    assert _ironic_view(ironic, [kept]) == {kept: ("active", False)}
    events = [e for e in _events(home, "rel") if e["node"] == kept]
    assert (events[-1]["to_state"], events[-1]["reason"]) == ("retired", "released, machine kept")

    plain = metalctl("release", freed, "-c", "rel", "-o", "json", home=home)
    assert _json(plain) == [{"node": freed, "state": "retired", "error": None}]
    # Without --keep: undeployed, made manageable and retired in Ironic.
    assert _ironic_view(ironic, [freed]) == {freed: ("manageable", True)}

    assert {n: s for n, (s, _) in _states(home, "rel").items()} == {
        first: "ready", kept: "retired", freed: "retired",
    }  # fmt: skip
    assert _ironic_view(ironic, [first, kept]) == dict.fromkeys([first, kept], ("active", False))


# -- nodes remove --keep -----------------------------------------------------------------


# -- ironic: {cloud: NAME} ---------------------------------------------------------------


def _clouds_yaml(folder: Path, ironic: IronicServer) -> Path:
    path = folder / "clouds.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "clouds": {
                    "standalone": {
                        "auth_type": "none",
                        "baremetal_endpoint_override": ironic.url,
                    }
                }
            }
        )
    )
    return path


def _cloud_spec(name: str, cloud: str, nodes: list[dict[str, object]]) -> str:
    doc = yaml.safe_load(ironic_spec(name, "http://127.0.0.1:9", nodes))
    doc["spec"]["ironic"] = {"cloud": cloud}
    return yaml.safe_dump(doc, sort_keys=False)


def test_provision_through_a_clouds_yaml_cloud_reaches_active(
    ironic: IronicServer, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    clouds = _clouds_yaml(tmp_path, ironic)
    spec = tmp_path / "rack.yaml"
    with ssh_standins(2) as standins:
        nodes = [
            fake_node(i, a, standins.port, name=f"cl{i}")
            for i, a in enumerate(standins.addresses, start=41)
        ]
        names = [str(n["name"]) for n in nodes]
        spec.write_text(_cloud_spec("cloudy", "standalone", nodes))
        assert "endpoint" not in spec.read_text()  # clouds.yaml is the only way to Ironic
        _provision(home, spec, names, OS_CLIENT_CONFIG_FILE=str(clouds))
    assert _ironic_view(ironic, names) == dict.fromkeys(names, ("active", False))
    shown = _json(metalctl("nodes", "list", "-c", "cloudy", "-o", "json", home=home))
    assert {str(r["name"]): r["state"] for r in shown} == dict.fromkeys(names, "ready")


def test_a_cloud_missing_from_clouds_yaml_is_refused_naming_it_and_nothing_is_stored(
    ironic: IronicServer, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    clouds = _clouds_yaml(tmp_path, ironic)
    spec = tmp_path / "rack.yaml"
    nodes = [fake_node(i, f"198.51.100.{i}", 22, name=f"nc{i}") for i in (51, 52)]
    spec.write_text(_cloud_spec("nocloud", "no-such-cloud", nodes))
    before = len(ironic.api_calls())

    refused = metalctl("provision", "-f", str(spec), home=home, OS_CLIENT_CONFIG_FILE=str(clouds))
    assert refused.returncode == 6, (refused.stdout, refused.stderr[-3000:])  # host setup
    assert "no-such-cloud" in refused.stderr
    assert "clouds.yaml" in refused.stderr
    assert "Traceback" not in refused.stderr
    # Nothing stored: no cluster, no nodes, no spec copy; Ironic was not asked anything.
    unknown = metalctl("nodes", "list", "-c", "nocloud", home=home)
    assert unknown.returncode == 4, unknown.stderr
    assert not (home / "clusters" / "nocloud").exists()
    assert ironic.api_calls()[before:] == []
    assert not {"nc51", "nc52"} & set(_ironic_nodes(ironic))
