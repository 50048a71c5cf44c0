"""Hostile and careless command lines: every one gets a clear error and an exit code from
the documented table (never 1, which means a bug and writes a crash file), no traceback,
and the store exactly as it was. Run in-process through the real entry point (main)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from metalctl.cli import main
from tests.conftest import GOOD_SPEC

NUL_SPEC = "apiVersion: metalctl/v1alpha1\x00\nkind: Cluster\n"
DEEP_SPEC = "a: " + "[" * 5000 + "]" * 5000 + "\n"
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)

# (id, argv, files to write first {name: text or bytes}); "@name" in argv is that file.
CASES: list[tuple[str, list[str], dict[str, str | bytes]]] = [
    ("lab up nodes 0", ["lab", "up", "--name", "x", "--nodes", "0"], {}),
    ("lab up nodes -1", ["lab", "up", "--name", "x", "--nodes", "-1"], {}),
    ("lab up nodes huge", ["lab", "up", "--name", "x", "--nodes", "100000"], {}),
    ("lab up nodes text", ["lab", "up", "--name", "x", "--nodes", "four"], {}),
    ("lab up managers -1", ["lab", "up", "--name", "x", "--managers", "-1"], {}),
    ("lab up managers 0", ["lab", "up", "--name", "x", "--managers", "0"], {}),
    ("lab up managers even", ["lab", "up", "--name", "x", "--managers", "2"], {}),
    ("lab up managers 9", ["lab", "up", "--name", "x", "--nodes", "9", "--managers", "9"], {}),
    (
        "lab up managers > nodes",
        ["lab", "up", "--name", "x", "--nodes", "1", "--managers", "3"],
        {},
    ),
    ("lab up servers 0", ["lab", "up", "--name", "x", "--consul-servers", "0"], {}),
    ("lab up servers even", ["lab", "up", "--name", "x", "--consul-servers", "2"], {}),
    ("lab up name upper", ["lab", "up", "--name", "UPPER"], {}),
    ("lab up name shell", ["lab", "up", "--name", "a;rm -rf /"], {}),
    ("lab up name traversal", ["lab", "up", "--name", "../../etc"], {}),
    ("lab up name empty", ["lab", "up", "--name", ""], {}),
    ("lab up name long", ["lab", "up", "--name", "a" * 200], {}),
    ("lab up name newline", ["lab", "up", "--name", "lab\n"], {}),
    ("lab up no name", ["lab", "up"], {}),
    ("lab down traversal", ["lab", "down", "--name", "../../victim"], {}),
    ("lab down slash", ["lab", "down", "--name", "/"], {}),
    ("lab status traversal", ["lab", "status", "--name", ".."], {}),
    ("deploy no source", ["deploy", "swarm"], {}),
    ("deploy both sources", ["deploy", "swarm", "-c", "x", "-f", "@good"], {"good": GOOD_SPEC}),
    ("deploy ghost cluster", ["deploy", "swarm", "-c", "ghost"], {}),
    ("deploy ghost workload", ["deploy", "ghostload", "-c", "x"], {}),
    ("deploy missing file", ["deploy", "swarm", "-f", "/nonexistent/c.yaml"], {}),
    ("deploy dir as file", ["deploy", "swarm", "-f", "/tmp"], {}),
    ("deploy /dev/zero", ["deploy", "swarm", "-f", "/dev/zero"], {}),
    ("deploy empty file", ["deploy", "swarm", "-f", "@empty"], {"empty": ""}),
    ("deploy binary", ["deploy", "swarm", "-f", "@bin"], {"bin": bytes(range(256)) * 4}),
    (
        "deploy latin-1",
        ["deploy", "swarm", "-f", "@latin"],
        {"latin": "name: caf\xe9\n".encode("latin-1")},
    ),
    ("deploy NUL", ["deploy", "swarm", "-f", "@nul"], {"nul": NUL_SPEC}),
    ("deploy deep", ["deploy", "swarm", "-f", "@deep"], {"deep": DEEP_SPEC}),
    ("deploy alias bomb", ["deploy", "swarm", "-f", "@bomb"], {"bomb": ALIAS_BOMB}),
    ("deploy list top", ["deploy", "swarm", "-f", "@list"], {"list": "- a\n- b\n"}),
    (
        "deploy python tag",
        ["deploy", "swarm", "-f", "@tag"],
        {"tag": "!!python/object/apply:os.system ['true']\n"},
    ),
    ("deploy 2 MiB", ["deploy", "swarm", "-f", "@big"], {"big": "#" * (2 << 20)}),
    (
        "deploy ssh-timeout nan",
        ["deploy", "swarm", "-f", "@good", "--ssh-timeout", "nan"],
        {"good": GOOD_SPEC},
    ),
    (
        "deploy ssh-timeout inf",
        ["deploy", "swarm", "-f", "@good", "--ssh-timeout", "inf"],
        {"good": GOOD_SPEC},
    ),
    (
        "deploy ssh-timeout -1",
        ["deploy", "swarm", "-f", "@good", "--ssh-timeout", "-1"],
        {"good": GOOD_SPEC},
    ),
    (
        "deploy swarm-timeout text",
        ["deploy", "swarm", "-f", "@good", "--swarm-timeout", "soon"],
        {"good": GOOD_SPEC},
    ),
    ("events ghost", ["events", "-c", "ghost"], {}),
    ("events limit -1", ["events", "-c", "x", "--limit", "-1"], {}),
    ("events limit 0", ["events", "-c", "x", "--limit", "0"], {}),
    ("events limit text", ["events", "-c", "x", "--limit", "all"], {}),
    ("events no cluster", ["events"], {}),
    ("output yaml", ["nodes", "list", "-o", "yaml"], {}),
    ("nodes list ghost", ["nodes", "list", "-c", "ghost"], {}),
    ("nodes show ghost", ["nodes", "show", "ghost"], {}),
    ("nodes add ghost", ["nodes", "add", "-c", "ghost"], {}),
    ("nodes add role king", ["nodes", "add", "-c", "x", "--role", "king"], {}),
    ("nodes add timeout nan", ["nodes", "add", "-c", "x", "--timeout", "nan"], {}),
    ("nodes add timeout 0", ["nodes", "add", "-c", "x", "--timeout", "0"], {}),
    ("nodes remove ghost", ["nodes", "remove", "n1", "-c", "ghost"], {}),
    ("nodes remove no node", ["nodes", "remove", "-c", "x"], {}),
    ("swarm env ghost", ["swarm", "env", "-c", "ghost"], {}),
    ("swarm env bad shell", ["swarm", "env", "-c", "x", "--shell", "tcsh"], {}),
    ("swarm status ghost", ["swarm", "status", "-c", "ghost"], {}),
    ("reconcile ghost", ["swarm", "reconcile", "-c", "ghost"], {}),
    ("reconcile grace nan", ["swarm", "reconcile", "-c", "x", "--grace", "nan"], {}),
    ("reconcile grace -5", ["swarm", "reconcile", "-c", "x", "--grace", "-5"], {}),
    ("provision ghost", ["provision", "-c", "ghost"], {}),
    ("power bad action", ["power", "explode", "n1", "-c", "x"], {}),
    ("power ghost cluster", ["power", "on", "n1", "-c", "ghost"], {}),
    ("unknown command", ["frobnicate"], {}),
    ("unknown option", ["nodes", "list", "--frob"], {}),
]

# Against a registered static cluster 'rack1': the store must stay exactly as it was.
ON_RACK: list[tuple[str, list[str]]] = [
    ("nodes show ghost in rack", ["nodes", "show", "ghost", "-c", "rack1"]),
    ("nodes add without name", ["nodes", "add", "-c", "rack1"]),
    ("nodes add unknown name", ["nodes", "add", "-c", "rack1", "--name", "n9"]),
    ("nodes add wrong role", ["nodes", "add", "-c", "rack1", "--name", "n4", "--role", "manager"]),
    ("nodes remove master", ["nodes", "remove", "n1", "-c", "rack1"]),
    ("nodes remove ready node", ["nodes", "remove", "n4", "-c", "rack1"]),
    ("nodes remove ghost node", ["nodes", "remove", "n9", "-c", "rack1"]),
    ("reconcile ghost agent", ["swarm", "reconcile", "-c", "rack1", "--agent", "n9"]),
    ("power static", ["power", "cycle", "n2", "-c", "rack1"]),
    ("power ghost node", ["power", "on", "n9", "-c", "rack1"]),
    ("provision ghost node", ["provision", "-c", "rack1", "n9"]),
    ("lab down of a rack", ["lab", "down", "--name", "rack1"]),
    ("lab up over a rack", ["lab", "up", "--name", "rack1"]),
    (
        "deploy leaves rack alone on bad flag",
        ["deploy", "swarm", "-c", "rack1", "--ssh-timeout", "nan"],
    ),
    ("replace with a changed spec w/o flag", ["swarm", "env", "-f", "@changed"]),
    ("spec duplicate key", ["swarm", "env", "-f", "@dupkey"]),
    ("spec unknown provisioner", ["swarm", "env", "-f", "@unknownprov"]),
]
DOCUMENTED = {2, 3, 4, 5, 6, 8}


def run(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["metalctl", *argv])
    with pytest.raises(SystemExit) as exited:
        main()
    code = exited.value.code
    captured = capsys.readouterr()
    return (code if isinstance(code, int) else 1), captured.err, captured.out


def materialise(argv: list[str], files: dict[str, str | bytes], tmp: Path) -> list[str]:
    for name, content in files.items():
        path = tmp / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return [str(tmp / a[1:]) if a.startswith("@") else a for a in argv]


def assert_clean_refusal(code: int, err: str, home: Path) -> None:
    assert code in DOCUMENTED, f"exit {code}: {err[-600:]}"
    assert "Traceback" not in err
    assert err.strip(), "a refusal must say what is wrong"
    assert len(err) < 16_384, f"error output of {len(err)} bytes"
    assert not (home / "logs").exists(), "a crash file was written"


@pytest.mark.parametrize(("case", "argv", "files"), CASES, ids=[c[0] for c in CASES])
def test_hostile_command_line_is_refused_cleanly(
    case: str,
    argv: list[str],
    files: dict[str, str | bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("METALCTL_HOME", str(home))
    (tmp_path / "victim").mkdir()
    code, err, _ = run(materialise(argv, files, tmp_path), monkeypatch, capsys)
    assert_clean_refusal(code, err, home)
    assert (tmp_path / "victim").is_dir(), "a command deleted a folder outside its home"


@pytest.mark.parametrize(("case", "argv"), ON_RACK, ids=[c[0] for c in ON_RACK])
def test_hostile_command_on_a_cluster_leaves_the_store_as_it_was(
    case: str,
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("METALCTL_HOME", str(home))
    files: dict[str, str | bytes] = {
        "rack": GOOD_SPEC,
        "changed": GOOD_SPEC.replace("192.0.2.14", "192.0.2.24"),
        "dupkey": GOOD_SPEC.replace("kind: Cluster\n", "kind: Cluster\nkind: Cluster\n"),
        "unknownprov": GOOD_SPEC.replace("provisioner: static", "provisioner: maas"),
    }
    argv = materialise(argv, files, tmp_path)
    assert run(["swarm", "env", "-f", str(tmp_path / "rack")], monkeypatch, capsys)[0] == 0
    snapshot = ["nodes", "list", "-o", "json"], ["events", "-c", "rack1", "-o", "json"]

    def state() -> list[object]:
        return [json.loads(run(cmd, monkeypatch, capsys)[2]) for cmd in snapshot]

    before = state()
    code, err, _ = run(argv, monkeypatch, capsys)
    assert_clean_refusal(code, err, home)
    assert state() == before
    assert (home / "clusters" / "rack1" / "cluster.yaml").exists()
