"""Options shared by several commands."""

from __future__ import annotations

import math
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
_FILE = click.option(
    "--file",
    "-f",
    "spec_file",
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A cluster spec (apiVersion metalctl/v1alpha1, kind Cluster).",
)
_REPLACE = click.option(
    "--replace",
    is_flag=True,
    help="With -f: the file's spec replaces a known cluster's different one (nodes it no "
    "longer lists are forgotten; refused for nodes still in the swarm). Without it such a "
    "file is refused, showing the difference.",
)


def FILE_OPTION(fn: Callable[..., Any]) -> Callable[..., Any]:
    """-f FILE and --replace: the commands that take a spec file take both."""
    return _FILE(_REPLACE(fn))


QUIET_OPTION = click.option("--quiet", "-q", is_flag=True, help="No progress output.")


# The longest wait any flag accepts. Nothing metalctl waits for takes a month, and a
# bound keeps absurd values (1e300) away from timers that overflow on them.
MAX_SECONDS = 30 * 24 * 3600.0


if TYPE_CHECKING:
    _FloatParam = click.ParamType[float, Any]
else:  # older click's ParamType (pyproject allows click>=8.1) is not subscriptable
    _FloatParam = click.ParamType


class Seconds(_FloatParam):
    """A finite number of seconds in [low, high].

    click.FloatRange lets "nan" through (every comparison with NaN is false), and a NaN
    timeout never fires; "inf" never fires either.
    """

    name = "seconds"

    def __init__(self, low: float = 0, high: float = MAX_SECONDS) -> None:
        self.low, self.high = float(low), float(high)

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        if not self.low <= seconds <= self.high:
            self.fail(
                f"{_number(seconds)} is not in the range {self.range_text()} seconds", param, ctx
            )
        return seconds

    def range_text(self) -> str:
        return f"{_number(self.low)}..{_number(self.high)}"

    # ctx is optional: click before 8.2 calls get_metavar(param) alone.
    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "SECONDS"


def _number(value: float) -> str:
    """2592000, not 2.592e+06: ranges in --help read as typed."""
    return str(int(value)) if value.is_integer() else f"{value:g}"


def seconds_option(
    flag: str, default: float, help: str, low: float = 0, high: float = MAX_SECONDS
) -> Callable[[Any], Any]:
    """A duration flag in seconds, its default and range shown in --help (every wait has one)."""
    kind = Seconds(low, high)
    return click.option(
        flag,
        type=kind,
        default=default,
        show_default=True,
        help=f"{help} [{kind.range_text()}]",
    )


def cluster_from_options(
    store: Store, cluster: str | None, spec_file: Path | None, replace: bool = False
) -> ClusterSpec:
    from metalctl.clusters import load_cluster  # lazy: pydantic is slow to import

    return load_cluster(store, cluster, spec_file, replace=replace)
