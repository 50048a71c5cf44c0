"""The CLI under bad input and a broken host: exit codes, one-line errors, no tracebacks.

Each test is named after the defect it covers (A-E in the fix/cli brief). Most run
``python -m metalctl`` like a user would; the crash handler is driven in-process.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import pytest

from metalctl import lifecycle
from metalctl.cli import cli, main
from metalctl.errors import ConflictError, DeployError
from metalctl.store import Store
from tests.cli import metalctl
from tests.conftest import GOOD_SPEC

# This checkout's metalctl, whatever the working directory of the command.
REPO = str(Path(__file__).resolve().parents[2])


def registered(tmp_path: Path, home: Path) -> Path:
    """A home with cluster rack1 in its store; returns the spec file."""
    spec = tmp_path / "c.yaml"
    spec.write_text(GOOD_SPEC)
    proc = metalctl("swarm", "env", "-f", str(spec), home=home)
    assert proc.returncode == 0, proc.stderr
    return spec


def no_traceback(proc: subprocess.CompletedProcess[str]) -> bool:
    return "Traceback" not in proc.stderr and "Traceback" not in proc.stdout


# A1: unexpected exceptions ---------------------------------------------------------------


def _run_main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["metalctl", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    return int(exit_.value.code or 0)


@pytest.fixture
def boom(monkeypatch: pytest.MonkeyPatch) -> None:
    """A `metalctl boom` command that fails the way a bug would."""

    @click.command("boom")
    def boom_cmd() -> None:
        raise RuntimeError("kaboom\nsecond line")

    monkeypatch.setitem(cli.commands, "boom", boom_cmd)


@pytest.mark.usefixtures("boom")
def test_a1_unexpected_exception_exits_1_with_one_line_and_a_private_crash_file(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run_main(monkeypatch, "boom") == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: unexpected RuntimeError: kaboom second line")
    crashes = list((home / "logs").glob(f"crash-*-{os.getpid()}.txt"))
    assert len(crashes) == 1
    assert f"full traceback in {crashes[0]}" in lines[0]
    assert stat.S_IMODE(crashes[0].stat().st_mode) == 0o600
    text = crashes[0].read_text()
    assert "Traceback" in text and "RuntimeError: kaboom" in text and "boom_cmd" in text


@pytest.mark.usefixtures("boom")
def test_a1_crash_file_falls_back_to_a_tempfile_when_the_home_is_unusable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    monkeypatch.setenv("METALCTL_HOME", str(blocker / "home"))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    assert _run_main(monkeypatch, "boom") == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (crash,) = tmp.iterdir()
    assert f"full traceback in {crash}" in err
    assert stat.S_IMODE(crash.stat().st_mode) == 0o600
    assert "kaboom" in crash.read_text()


def test_a1_closed_stdout_is_not_a_crash(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    @click.command("pipe")
    def pipe_cmd() -> None:
        raise BrokenPipeError(32, "Broken pipe")  # `metalctl events | head`

    monkeypatch.setitem(cli.commands, "pipe", pipe_cmd)
    assert _run_main(monkeypatch, "pipe") == 1  # click's own EPIPE handling: quiet
    assert capsys.readouterr().err == ""
    assert not (home / "logs").exists()


def test_a1_known_errors_keep_their_exit_codes(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    @click.command("conflict")
    def conflict_cmd() -> None:
        raise ConflictError("name taken", hint="pick another")

    monkeypatch.setitem(cli.commands, "conflict", conflict_cmd)
    assert _run_main(monkeypatch, "conflict") == 5
    assert "error: name taken" in capsys.readouterr().err
    assert not (home / "logs").exists()


def test_d_deploy_error_with_a_cause_exits_with_the_cause_code(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    @click.command("failing-deploy")
    def failing_cmd() -> None:
        raise DeployError("verify swarm", "timed out", cause_exit_code=8)

    monkeypatch.setitem(cli.commands, "failing-deploy", failing_cmd)
    assert _run_main(monkeypatch, "failing-deploy") == 8
    assert "phase 'verify swarm'" in capsys.readouterr().err


# A2: a broken store or home --------------------------------------------------------------


@pytest.mark.parametrize("damage", ["random bytes", "truncated"])
def test_a2_corrupt_db_exits_6_naming_the_file(damage: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    registered(tmp_path, home)
    db = home / "metalctl.db"
    good = db.read_bytes()
    db.write_bytes(os.urandom(8192) if damage == "random bytes" else good[:5000])
    proc = metalctl("nodes", "list", home=home)
    assert proc.returncode == 6, proc.stderr
    assert no_traceback(proc)
    assert str(db) in proc.stderr and "corrupt" in proc.stderr and "hint:" in proc.stderr


def test_a2_locked_db_exits_6_and_changes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    spec = registered(tmp_path, home)
    before = metalctl("events", "-c", "rack1", "-o", "json", home=home).stdout
    holder_code = (
        "import sqlite3, sys, time\n"
        "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "db.execute('BEGIN EXCLUSIVE')\n"
        "print('locked', flush=True)\n"
        "time.sleep(30)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_code, str(home / "metalctl.db")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        changed = spec.read_text().replace("192.0.2.14", "192.0.2.24")
        spec.write_text(changed)
        proc = metalctl(
            "swarm", "env", "-f", str(spec), "--replace", home=home, METALCTL_DB_TIMEOUT="0.2"
        )
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 6, proc.stderr
    assert no_traceback(proc)
    assert "locked" in proc.stderr and "another metalctl" in proc.stderr
    assert metalctl("events", "-c", "rack1", "-o", "json", home=home).stdout == before
    nodes = json.loads(metalctl("nodes", "list", "-o", "json", home=home).stdout)
    assert "192.0.2.24" not in {n["address"] for n in nodes}


def test_a2_home_that_is_a_regular_file_exits_6(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.write_text("x")
    proc = metalctl("nodes", "list", home=home)
    assert proc.returncode == 6, proc.stderr
    assert no_traceback(proc)
    assert str(home) in proc.stderr and "METALCTL_HOME" in proc.stderr


def test_a2_home_that_cannot_be_created_exits_6(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    proc = metalctl("events", "-c", "rack1", home=blocker / "sub")
    assert proc.returncode == 6, proc.stderr
    assert no_traceback(proc)
    assert str(blocker / "sub") in proc.stderr


# A3: the installation's workloads/ and roles/ ----------------------------------------------


def test_a3_missing_workloads_folder_exits_6_naming_it(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    proc = metalctl("deploy", "list", home=tmp_path / "home", METALCTL_SHARE=str(share))
    assert proc.returncode == 6, proc.stderr
    assert no_traceback(proc)
    assert str(share / "workloads") in proc.stderr and "reinstall" in proc.stderr


def test_a3_malformed_workload_yaml_exits_3_naming_the_file(tmp_path: Path) -> None:
    share = tmp_path / "share"
    (share / "workloads" / "swarm").mkdir(parents=True)
    bad = share / "workloads" / "swarm" / "workload.yaml"
    bad.write_text("name: swarm\nroles: [docker\n")
    proc = metalctl("deploy", "list", home=tmp_path / "home", METALCTL_SHARE=str(share))
    assert proc.returncode == 3, proc.stderr
    assert no_traceback(proc)
    assert str(bad) in proc.stderr


# B: swarm env ----------------------------------------------------------------------------


def test_b_swarm_env_eval_is_shell_safe(tmp_path: Path) -> None:
    home = tmp_path / "my home;touch PWNED;$(touch PWNED2) 'q'"
    spec = registered(tmp_path, home)
    work = tmp_path / "work"
    work.mkdir()
    script = (
        f'eval "$({sys.executable} -m metalctl swarm env -f {spec})"; '
        'printf "%s\\n%s\\n%s" "$DOCKER_CERT_PATH" "$DOCKER_HOST" "$DOCKER_TLS_VERIFY"'
    )
    proc = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        cwd=work,
        env={"METALCTL_HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": REPO},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n") == [
        str(home.resolve() / "clusters" / "rack1" / "docker-client"),
        "tcp://192.0.2.11:2376",
        "1",
    ]
    assert list(work.iterdir()) == []
    assert not (tmp_path / "PWNED").exists()


def test_b_swarm_env_refuses_a_home_with_a_newline(tmp_path: Path) -> None:
    home = tmp_path / "a\nb"
    spec = tmp_path / "c.yaml"
    spec.write_text(GOOD_SPEC)
    proc = metalctl("swarm", "env", "-f", str(spec), home=home)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and "DOCKER_CERT_PATH" in proc.stderr


@pytest.mark.parametrize(
    ("shell", "first"),
    [
        ("fish", "set -gx DOCKER_HOST 'tcp://192.0.2.11:2376';"),
        ("powershell", "$Env:DOCKER_HOST = 'tcp://192.0.2.11:2376'"),
        ("bash", "export DOCKER_HOST=tcp://192.0.2.11:2376"),
    ],
)
def test_b_swarm_env_shell_option(tmp_path: Path, shell: str, first: str) -> None:
    home = tmp_path / "home"
    spec = registered(tmp_path, home)
    proc = metalctl("swarm", "env", "-f", str(spec), "--shell", shell, home=home)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == first
    assert all(
        line.startswith(("export ", "set -gx ", "$Env:", "# ")) for line in proc.stdout.splitlines()
    )


def _fake_docker(tmp_path: Path, existing: bool) -> tuple[Path, Path]:
    """A `docker` that logs its arguments, one JSON list a line; returns (bin dir, log)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "docker.log"
    fake = bindir / "docker"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        f"sys.exit(0 if sys.argv[1:3] != ['context', 'inspect'] or {existing} else 1)\n"
    )
    fake.chmod(0o755)
    return bindir, log


def _client_certs(home: Path) -> Path:
    certs = home / "clusters" / "rack1" / "docker-client"
    certs.mkdir(parents=True, exist_ok=True)
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (certs / name).write_text("pem")
    return certs


@pytest.mark.parametrize("existing", [False, True], ids=["create", "update"])
def test_b_swarm_env_context_creates_or_updates_a_docker_context(
    tmp_path: Path, existing: bool
) -> None:
    home = tmp_path / "home"
    registered(tmp_path, home)
    certs = _client_certs(home)
    bindir, log = _fake_docker(tmp_path, existing)
    proc = metalctl(
        "swarm", "env", "-c", "rack1", "--context", home=home, PATH=f"{bindir}:/usr/bin:/bin"
    )
    assert proc.returncode == 0, proc.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    verb = "update" if existing else "create"
    (change,) = [c for c in calls if c[:2] == ["context", verb]]
    assert change[2] == "metalctl-rack1"
    endpoint = change[change.index("--docker") + 1]
    assert endpoint == (
        f"host=tcp://192.0.2.11:2376,ca={certs}/ca.pem,cert={certs}/cert.pem,key={certs}/key.pem"
    )
    assert "docker --context metalctl-rack1 node ls" in proc.stdout
    assert "docker context use metalctl-rack1" in proc.stdout


def test_b_swarm_env_context_takes_a_name(tmp_path: Path) -> None:
    home = tmp_path / "home"
    registered(tmp_path, home)
    _client_certs(home)
    bindir, log = _fake_docker(tmp_path, existing=False)
    proc = metalctl(
        "swarm", "env", "-c", "rack1", "--context", "lab", home=home, PATH=f"{bindir}:/usr/bin"
    )
    assert proc.returncode == 0, proc.stderr
    assert ["context", "create", "lab"] in [json.loads(x)[:3] for x in log.read_text().splitlines()]


def test_b_swarm_env_context_without_docker_cli_exits_6(tmp_path: Path) -> None:
    home = tmp_path / "home"
    registered(tmp_path, home)
    _client_certs(home)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    proc = metalctl("swarm", "env", "-c", "rack1", "--context", home=home, PATH=str(empty))
    assert proc.returncode == 6, proc.stderr
    assert "docker CLI" in proc.stderr and no_traceback(proc)


def _real_certs(certs: Path) -> None:
    """A self-signed client certificate: the docker CLI checks what it stores."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    certs.mkdir(parents=True, exist_ok=True)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (certs / "ca.pem").write_bytes(pem)
    (certs / "cert.pem").write_bytes(pem)
    (certs / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@pytest.mark.skipif(shutil.which("docker") is None, reason="needs the docker CLI (no daemon)")
def test_b_swarm_env_context_with_the_real_docker_cli(tmp_path: Path) -> None:
    # Commas and quotes in the path check the CSV quoting of --docker for real.
    home = tmp_path / 'home,"x"'
    registered(tmp_path, home)
    _real_certs(home / "clusters" / "rack1" / "docker-client")
    docker = shutil.which("docker")
    assert docker is not None
    env = {"DOCKER_CONFIG": str(tmp_path / "docker-config"), "PATH": str(Path(docker).parent)}
    for _ in range(2):  # the second run updates the context made by the first
        proc = metalctl("swarm", "env", "-c", "rack1", "--context", home=home, **env)
        assert proc.returncode == 0, proc.stderr
    shown = subprocess.run(
        [docker, "context", "inspect", "metalctl-rack1", "--format", "{{json .Endpoints}}"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert json.loads(shown.stdout)["docker"]["Host"] == "tcp://192.0.2.11:2376"


# C: numbers out of range ------------------------------------------------------------------


_DEPLOY = ("deploy", "swarm", "-c", "rack1", "--ssh-timeout")
SECONDS_CASES = [
    *[(_DEPLOY, v) for v in ("nan", "NaN", "inf", "-inf", "1e999", "-1", "soon")],
    (("deploy", "swarm", "-c", "rack1", "--swarm-timeout"), "nan"),
    (("nodes", "add", "-c", "rack1", "--timeout"), "inf"),
    (("nodes", "remove", "n4", "-c", "rack1", "--timeout"), "nan"),
    (("swarm", "reconcile", "-c", "rack1", "--grace"), "nan"),
    (("swarm", "reconcile", "-c", "rack1", "--lock-delay"), "NaN"),
]


@pytest.mark.parametrize(
    ("args", "value"), SECONDS_CASES, ids=[f"{a[-1]} {v}" for a, v in SECONDS_CASES]
)
def test_c_seconds_options_refuse_nan_inf_negative(
    tmp_path: Path, args: tuple[str, ...], value: str
) -> None:
    proc = metalctl(*args, value, home=tmp_path / "home")
    assert proc.returncode == 2, proc.stderr
    assert args[-1] in proc.stderr and no_traceback(proc)
    assert not (tmp_path / "home" / "metalctl.db").exists()  # refused before the store


@pytest.mark.parametrize(
    "args",
    [
        ("--nodes", "0"),
        ("--nodes", "201"),
        ("--nodes", "-3"),
        ("--managers", "-1"),
        ("--managers", "0"),
        ("--managers", "8"),
        ("--consul-servers", "0"),
        ("--consul-servers", "-1"),
    ],
    ids=" ".join,
)
def test_c_lab_up_refuses_out_of_range_counts(tmp_path: Path, args: tuple[str, str]) -> None:
    proc = metalctl("lab", "up", "--name", "x", *args, home=tmp_path / "home")
    assert proc.returncode == 2, proc.stderr
    assert args[0] in proc.stderr and "range" in proc.stderr


@pytest.mark.parametrize("limit", ["-1", "0", "100001", "many"])
def test_c_events_limit_is_range_checked(tmp_path: Path, limit: str) -> None:
    home = tmp_path / "home"
    registered(tmp_path, home)
    proc = metalctl("events", "-c", "rack1", "--limit", limit, home=home)
    assert proc.returncode == 2, proc.stderr
    assert "--limit" in proc.stderr


def test_c_events_of_an_unknown_cluster_exits_4(tmp_path: Path) -> None:
    proc = metalctl("events", "-c", "ghost", home=tmp_path / "home")
    assert proc.returncode == 4, proc.stderr
    assert "no cluster named 'ghost'" in proc.stderr


def test_c_events_of_a_removed_cluster_are_still_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    registered(tmp_path, home)
    monkeypatch.setenv("METALCTL_HOME", str(home))
    store = Store()
    lifecycle.forget_cluster(store, "rack1", "lab down")
    store.close()
    proc = metalctl("events", "-c", "rack1", "-o", "json", home=home)
    assert proc.returncode == 0, proc.stderr
    assert "lab down" in {e["reason"] for e in json.loads(proc.stdout)}


def test_c_events_limit_keeps_the_newest(tmp_path: Path) -> None:
    home = tmp_path / "home"
    registered(tmp_path, home)
    proc = metalctl("events", "-c", "rack1", "--limit", "1", "-o", "json", home=home)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 1


# E: deploy lists its workloads -------------------------------------------------------------


def test_e_deploy_list_names_and_describes_workloads(tmp_path: Path) -> None:
    proc = metalctl("deploy", "list", home=tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    assert "swarm" in proc.stdout and "Docker Swarm" in proc.stdout
    as_json = json.loads(metalctl("deploy", "list", "-o", "json", home=tmp_path).stdout)
    assert [w["name"] for w in as_json] == ["swarm"]
    assert as_json[0]["roles"] == ["ready_state", "docker", "consul", "swarm"]


def test_e_deploy_help_and_bare_deploy_list_workloads(tmp_path: Path) -> None:
    helped = metalctl("deploy", "--help", home=tmp_path)
    assert helped.returncode == 0
    assert "Workloads" in helped.stdout and "Docker Swarm with mutual-TLS" in helped.stdout
    bare = metalctl("deploy", home=tmp_path)
    assert "Docker Swarm with mutual-TLS" in bare.stdout + bare.stderr


def test_e_deploy_of_an_unknown_workload_exits_4_listing_known_ones(tmp_path: Path) -> None:
    proc = metalctl("deploy", "ghost", "--cluster", "rack1", home=tmp_path / "home")
    assert proc.returncode == 4, proc.stderr
    assert "no workload named 'ghost'" in proc.stderr and "swarm" in proc.stderr
    assert not (tmp_path / "home").exists()


def test_e_deploy_swarm_still_parses_as_before(tmp_path: Path) -> None:
    proc = metalctl("deploy", "swarm", "--cluster", "ghost", home=tmp_path / "home")
    assert proc.returncode == 4 and "no cluster named 'ghost'" in proc.stderr


def test_a2_store_unchanged_after_refused_input(tmp_path: Path) -> None:
    """Refusals leave the inventory byte-for-byte as it was (nothing half-written)."""
    home = tmp_path / "home"
    registered(tmp_path, home)
    db = sqlite3.connect(home / "metalctl.db")
    before = list(db.iterdump())
    db.close()
    for args in (
        ("events", "-c", "ghost"),
        ("deploy", "swarm", "-c", "rack1", "--ssh-timeout", "nan"),
        ("swarm", "env", "-c", "rack1", "--shell", "csh"),
    ):
        assert metalctl(*args, home=home).returncode != 0
    db = sqlite3.connect(home / "metalctl.db")
    assert list(db.iterdump()) == before
    db.close()
