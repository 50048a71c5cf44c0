"""metalctl's command line: click commands that parse, call one function, and format.

Errors are mapped to exit codes here and only here: each MetalctlError subclass
carries its own ``exit_code`` (see metalctl.errors). Anything else is a bug: one line on
stderr, exit 1, and the traceback in a private crash file for the bug report.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import NoReturn

import click

from metalctl import __version__
from metalctl.cli.boot import boot_group
from metalctl.cli.cache import cache_group
from metalctl.cli.deploy import deploy_group
from metalctl.cli.events import events_cmd
from metalctl.cli.image import image_group
from metalctl.cli.lab import lab_group
from metalctl.cli.machines import machines_group, power_cmd, provision_cmd, release_cmd
from metalctl.cli.nodes import nodes_group
from metalctl.cli.runs import runs_group
from metalctl.cli.swarm import swarm_group
from metalctl.errors import MetalctlError
from metalctl.paths import ensure_private_dir, metalctl_home, write_private


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="metalctl")
def cli() -> None:
    """Bring bare-metal machines (or lab containers) to a Docker Swarm with Consul.

    \b
    Typical session:
      metalctl lab up --name demo --nodes 4 --managers 3
      metalctl deploy swarm --cluster demo
      eval "$(metalctl swarm env --cluster demo)"; docker node ls

    State (inventory, PKI, secrets, run logs) lives in $METALCTL_HOME
    (default ~/.local/share/metalctl).
    """


cli.add_command(lab_group)
cli.add_command(nodes_group)
cli.add_command(deploy_group)
cli.add_command(swarm_group)
cli.add_command(events_cmd)
cli.add_command(runs_group)
cli.add_command(provision_cmd)
cli.add_command(power_cmd)
cli.add_command(release_cmd)
cli.add_command(machines_group)
cli.add_command(boot_group)
cli.add_command(cache_group)
cli.add_command(image_group)


def main() -> None:
    try:
        code = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except MetalctlError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug: never a raw traceback, always a report
        _crash(exc)
    # click hands back ctx.exit(N) instead of exiting when standalone_mode is off.
    sys.exit(code if isinstance(code, int) else 0)


def _crash(exc: Exception) -> NoReturn:
    saved = _save_crash_report(exc)
    where = f"full traceback in {saved}" if saved else "the traceback could not be saved"
    text = " ".join(str(exc).split())  # one line, whatever the message holds
    if len(text) > 300:
        text = text[:300] + "..."
    detail = f": {text}" if text else ""
    click.secho(f"error: unexpected {type(exc).__name__}{detail}; {where}", fg="red", err=True)
    sys.exit(1)


def _save_crash_report(exc: Exception) -> Path | None:
    """$METALCTL_HOME/logs/crash-<time>-<pid>.txt (0600: a traceback may quote secrets);
    a temporary file when the home cannot take it (it may be what is broken)."""
    report = _crash_report(exc)
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    try:
        path = ensure_private_dir(metalctl_home() / "logs") / name
        write_private(path, report)
        return path
    except (OSError, MetalctlError):
        pass
    try:
        fd, tmp = tempfile.mkstemp(prefix=name.removesuffix(".txt") + "-", suffix=".txt")
        with os.fdopen(fd, "w") as fh:
            fh.write(report)
        return Path(tmp)
    except OSError:
        return None


def _crash_report(exc: Exception) -> str:
    return (
        f"metalctl {__version__}, Python {platform.python_version()}, {platform.platform()}\n"
        f"argv: {sys.argv!r}\n\n" + "".join(traceback.format_exception(exc))
    )
