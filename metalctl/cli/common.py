"""Options shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from metalctl.spec import ClusterSpec
    from metalctl.store import Store

CLUSTER_OPTION = click.option(
    "--cluster",
    "-c",
    "cluster",
    metavar="NAME",
    help="A cluster known to the store (made by 'lab up' or -f).",
)
FILE_OPTION = click.option(
    "--file",
    "-f",
    "spec_file",
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A cluster spec (apiVersion metalctl/v1alpha1, kind Cluster).",
)

QUIET_OPTION = click.option("--quiet", "-q", is_flag=True, help="No progress output.")


def seconds_option(
    flag: str, default: float, help: str, low: float | None = 0, high: float | None = None
) -> Callable[[Any], Any]:
    """A duration flag in seconds, its default shown in --help (every wait has one)."""
    kind = float if low is None and high is None else click.FloatRange(min=low, max=high)
    return click.option(flag, type=kind, default=default, show_default=True, help=help)


def cluster_from_options(store: Store, cluster: str | None, spec_file: Path | None) -> ClusterSpec:
    from metalctl.clusters import load_cluster  # lazy: pydantic is slow to import

    return load_cluster(store, cluster, spec_file)
