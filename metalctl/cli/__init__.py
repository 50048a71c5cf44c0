"""metalctl's command line: click commands that parse, call one function, and format.

Errors are mapped to exit codes here and only here: each MetalctlError subclass
carries its own ``exit_code`` (see metalctl.errors).
"""

from __future__ import annotations

import sys

import click

from metalctl import __version__
from metalctl.cli.deploy import deploy_group
from metalctl.cli.events import events_cmd
from metalctl.cli.lab import lab_group
from metalctl.cli.machines import power_cmd, provision_cmd
from metalctl.cli.nodes import nodes_group
from metalctl.cli.swarm import swarm_group
from metalctl.errors import MetalctlError


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
cli.add_command(provision_cmd)
cli.add_command(power_cmd)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
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
