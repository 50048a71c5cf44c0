"""B: `swarm env` output is data for every shell, never code (metalctl.shell_env)."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest

from metalctl.errors import HostSetupError, NotFoundError, UsageError
from metalctl.shell_env import (
    docker_endpoint,
    ensure_docker_context,
    quote_fish,
    quote_powershell,
    render_comment,
    render_exports,
)

NASTY = "/tmp/a b;touch PWNED;'x'\"y\"$(id)`id`\\z"
EXPORTS = [("DOCKER_HOST", "tcp://192.0.2.11:2376"), ("DOCKER_CERT_PATH", NASTY)]


def test_b_bash_exports_survive_eval_exactly() -> None:
    lines = render_exports(EXPORTS, "bash")
    assert lines[0] == "export DOCKER_HOST=tcp://192.0.2.11:2376"
    script = "\n".join(lines) + '\nprintf %s "$DOCKER_CERT_PATH"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout == NASTY


@pytest.mark.parametrize("shell", ["sh", "zsh"])
def test_b_posix_shells_render_like_bash(shell: str) -> None:
    assert render_exports(EXPORTS, shell) == render_exports(EXPORTS, "bash")


def test_b_fish_exports_quote_backslash_and_single_quote() -> None:
    assert quote_fish("a b") == "'a b'"
    assert quote_fish("it's") == "'it\\'s'"
    assert quote_fish("back\\slash") == "'back\\\\slash'"
    lines = render_exports(EXPORTS, "fish")
    assert lines[0] == "set -gx DOCKER_HOST 'tcp://192.0.2.11:2376';"
    assert lines[1] == (
        "set -gx DOCKER_CERT_PATH '/tmp/a b;touch PWNED;\\'x\\'\"y\"$(id)`id`\\\\z';"
    )


def test_b_powershell_exports_double_every_single_quote() -> None:
    assert quote_powershell("it's") == "'it''s'"
    # PowerShell also ends a single-quoted string at the typographic single quotes.
    assert quote_powershell("a\u2019b") == "'a\u2019\u2019b'"
    lines = render_exports(EXPORTS, "powershell")
    assert lines[0] == "$Env:DOCKER_HOST = 'tcp://192.0.2.11:2376'"
    assert lines[1] == "$Env:DOCKER_CERT_PATH = '/tmp/a b;touch PWNED;''x''\"y\"$(id)`id`\\z'"


@pytest.mark.parametrize("shell", ["bash", "fish", "powershell"])
@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\x00b", "a\x1bb"])
def test_b_values_with_control_characters_are_refused(shell: str, bad: str) -> None:
    with pytest.raises(UsageError) as err:
        render_exports([("DOCKER_CERT_PATH", bad)], shell)
    assert "DOCKER_CERT_PATH" in err.value.message


def test_b_bad_variable_names_and_shells_are_refused() -> None:
    with pytest.raises(UsageError):
        render_exports([("A;B", "x")], "bash")
    with pytest.raises(UsageError):
        render_exports(EXPORTS, "csh")


def test_b_comment_stays_one_line() -> None:
    assert render_comment("talks to\nrm -rf /") == "# talks to?rm -rf /"
    assert "\n" not in render_comment("a\r\nb\x00")


def test_b_docker_endpoint_is_csv_that_survives_commas_and_quotes(tmp_path: Path) -> None:
    certs = tmp_path / 'we,ird "dir"'
    value = docker_endpoint("tcp://192.0.2.11:2376", certs)
    fields = next(csv.reader([value]))
    assert dict(f.split("=", 1) for f in fields) == {
        "host": "tcp://192.0.2.11:2376",
        "ca": str(certs / "ca.pem"),
        "cert": str(certs / "cert.pem"),
        "key": str(certs / "key.pem"),
    }


def _certs(tmp_path: Path) -> Path:
    certs = tmp_path / "docker-client"
    certs.mkdir()
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (certs / name).write_text("pem")
    return certs


def test_b_docker_context_without_the_docker_cli_is_host_setup_error(tmp_path: Path) -> None:
    with pytest.raises(HostSetupError) as err:
        ensure_docker_context("metalctl-rack1", "tcp://h:2376", _certs(tmp_path), "d", docker=None)
    assert "docker CLI" in err.value.message and err.value.hint


def test_b_docker_context_without_certificates_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as err:
        ensure_docker_context("metalctl-rack1", "tcp://h:2376", tmp_path, "d", docker="docker")
    assert "ca.pem" in err.value.message and err.value.hint and "deploy" in err.value.hint


@pytest.mark.parametrize("name", ["", "-x", "a b", "a;b", "é"])
def test_b_docker_context_refuses_bad_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(UsageError):
        ensure_docker_context(name, "tcp://h:2376", _certs(tmp_path), "d", docker="docker")
