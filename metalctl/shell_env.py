"""Environment for the docker CLI, safe to hand to a shell: ``metalctl swarm env``.

Values come from $METALCTL_HOME, which the user controls: a path such as
``/srv/my home;touch x`` must reach the variable as data and never run as code. So each
value is quoted for the shell that will read it (POSIX shells: shlex.quote; fish; and
PowerShell), and values with control characters are refused outright: a newline would
end the line inside ``eval``, ``source`` or ``Invoke-Expression`` in some shells, and no
path that metalctl makes needs one.

The other way to point the docker CLI at a cluster, a docker context, is made by
``ensure_docker_context`` (the one function here that runs a program).
"""

from __future__ import annotations

import csv
import io
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from metalctl.errors import HostSetupError, NotFoundError, UsageError

POSIX_SHELLS = ("bash", "zsh", "sh")
SHELLS = (*POSIX_SHELLS, "fish", "powershell")

_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# PowerShell ends a single-quoted string at any of these, not only at the ASCII quote.
_PWSH_QUOTES = "'\u2018\u2019\u201a\u201b"


def quote_fish(value: str) -> str:
    """fish single quotes: only backslash and the single quote are special inside."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_powershell(value: str) -> str:
    """PowerShell single quotes (no expansion inside): each quote character is doubled."""
    return "'" + "".join(c + c if c in _PWSH_QUOTES else c for c in value) + "'"


def render_exports(exports: Sequence[tuple[str, str]], shell: str) -> list[str]:
    """One line per variable that sets it in ``shell``: eval/source/Invoke-Expression safe."""
    if shell not in SHELLS:
        raise UsageError(f"unknown shell '{shell}'", hint=f"one of: {', '.join(SHELLS)}")
    return [_render_one(key, value, shell) for key, value in exports]


def _render_one(key: str, value: str, shell: str) -> str:
    if not _VARIABLE.fullmatch(key):
        raise UsageError(f"'{key}' is not a valid environment variable name")
    if _CONTROL.search(value):
        raise UsageError(
            f"{key} would contain a control character (such as a newline): {value!r}",
            hint="use a METALCTL_HOME path without newlines or other control characters",
        )
    if shell == "fish":
        return f"set -gx {key} {quote_fish(value)};"
    if shell == "powershell":
        return f"$Env:{key} = {quote_powershell(value)}"
    return f"export {key}={shlex.quote(value)}"


def render_comment(text: str) -> str:
    """A comment line for every supported shell: '#' to the end of the one line it keeps."""
    return "# " + _CONTROL.sub("?", text)


def usage_line(shell: str, command: str) -> str:
    """How to load the output of ``command`` into ``shell`` (docker-machine's hint)."""
    if shell == "fish":
        return f"{command} | source"
    if shell == "powershell":
        return f"{command} | Invoke-Expression"
    return f'eval "$({command})"'


# docker context --------------------------------------------------------------------------

# The docker CLI's rule for context names (docker/cli, store.ValidateContextName).
_CONTEXT_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.+-]+")
CLIENT_FILES = ("ca.pem", "cert.pem", "key.pem")

Runner = Callable[[list[str]], subprocess.CompletedProcess[str]]


@dataclass(frozen=True)
class DockerContext:
    name: str
    created: bool  # False: a context of that name existed and was updated


def docker_endpoint(host: str, cert_path: Path) -> str:
    """The value of ``docker context create --docker``: one CSV record of key=value.

    The docker CLI parses it with Go's encoding/csv, so a path holding a comma or a
    double quote must be a quoted field; Python's csv writes exactly that.
    """
    fields = [f"host={host}", *(f"{f.split('.')[0]}={cert_path / f}" for f in CLIENT_FILES)]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(fields)
    return buffer.getvalue()


def ensure_docker_context(
    name: str,
    host: str,
    cert_path: Path,
    description: str,
    *,
    docker: str | None = "",
    run: Runner | None = None,
) -> DockerContext:
    """Create the docker context ``name`` for ``host`` with the client certificate in
    ``cert_path``, or update it if it exists (a redeploy may have made new certificates;
    the docker CLI keeps its own copy of them).

    ``docker`` is the docker CLI's path ("" to look it up on PATH, None for "not
    installed"); ``run`` runs a command (tests pass a fake).
    """
    if not _CONTEXT_NAME.fullmatch(name):
        raise UsageError(
            f"'{name}' is not a valid docker context name",
            hint="letters, digits and _ . + -, at least 2 characters, starting with a "
            "letter or digit",
        )
    missing = [f for f in CLIENT_FILES if not (cert_path / f).is_file()]
    if missing:
        raise NotFoundError(
            f"no Docker client certificate in {cert_path} (missing {', '.join(missing)})",
            hint="deploy the cluster first: metalctl deploy swarm --cluster NAME",
        )
    exe = shutil.which("docker") if docker == "" else docker
    if exe is None:
        raise HostSetupError(
            "the docker CLI is not installed (or not on PATH); --context needs it",
            hint="install the docker CLI (docker-ce-cli), or use the environment "
            'variables instead: eval "$(metalctl swarm env --cluster NAME)"',
        )
    runner = run or _run
    exists = runner([exe, "context", "inspect", "--format", "{{.Name}}", name]).returncode == 0
    verb = "update" if exists else "create"
    args = [exe, "context", verb, name, "--description", description]
    done = runner([*args, "--docker", docker_endpoint(host, cert_path)])
    if done.returncode != 0:
        raise HostSetupError(
            f"docker context {verb} {name} failed: {done.stderr.strip() or done.stdout.strip()}",
            hint="run the same 'docker context' command by hand to see more",
        )
    return DockerContext(name, created=not exists)


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HostSetupError(f"cannot run {args[0]}: {exc}") from exc
