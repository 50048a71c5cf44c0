"""`metalctl cache`: the admin host's package cache that container labs share."""

from __future__ import annotations

import click

from metalctl.cli import views
from metalctl.cli.common import seconds_option
from metalctl.cli.format import OUTPUT_OPTION, emit
from metalctl.cli.progress import ConsoleProgress


@click.group("cache")
def cache_group() -> None:
    """The admin host's package cache (apt-cacher-ng, Debian's archive only).

    'lab up --package-cache' runs it on the lab's bridge and points the nodes' apt at it;
    every such lab shares one host-wide cache directory ($METALCTL_CACHE, default
    /var/cache/metalctl, under apt/packages), so what one lab fetched the next one reads.
    """


@cache_group.command("fill")
@click.option(
    "--workload",
    default="swarm",
    show_default=True,
    help="Whose packages: its workload.yaml 'preload.debian' list.",
)
@seconds_option("--timeout", 900, "How long the download may take.", low=1)
@OUTPUT_OPTION
def cache_fill_cmd(workload: str, timeout: float, output: str) -> None:
    """Put a workload's Debian packages into the cache ahead of a deploy.

    A throwaway lab node, on a network with no route out, downloads the packages and their
    dependencies through the cache: afterwards a lab made with
    'lab up --offline --package-cache' deploys the workload without reaching the archive.
    Re-running fetches only what changed in Debian's archive.
    """
    from metalctl.operations.package_cache import fill  # lazy: the Docker SDK

    progress = ConsoleProgress()
    result = fill(workload, progress.message, timeout)
    mib = 1 << 20
    rows = [
        {"what": "packages asked for", "value": " ".join(result.packages)},
        {
            "what": "fetched from the archive",
            "value": f"{result.fetched_files} files ({result.fetched_debs} packages), "
            f"{result.fetched_bytes / mib:.1f} MiB",
        },
        {
            "what": "served from the cache",
            "value": f"{result.served_files} files, {result.served_bytes / mib:.1f} MiB",
        },
        {"what": "cache", "value": f"{result.cache_dir}, {result.cache_bytes / mib:.1f} MiB"},
    ]
    emit(
        output,
        views.cache_fill(result),
        [("", "what"), ("", "value")],
        title=f"cache filled for workload {workload} in {result.seconds:g} s",
        rows=rows,
    )
