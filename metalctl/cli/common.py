"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

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


def cluster_from_options(store: Store, cluster: str | None, spec_file: Path | None) -> ClusterSpec:
    from metalctl.clusters import load_cluster  # lazy: pydantic is slow to import

    return load_cluster(store, cluster, spec_file)
