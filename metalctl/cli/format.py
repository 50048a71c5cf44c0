"""Output formatting for the CLI: every listing is a table (rich) or JSON."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table

OUTPUT_OPTION = click.option(
    "--output",
    "-o",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)


def to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def emit(
    output: str,
    data: Any,
    columns: Sequence[tuple[str, str]],
    title: str | None = None,
    rows: Sequence[Any] | None = None,
) -> None:
    """Print ``data`` as JSON, or ``rows`` (default: data) as a table of ``columns`` (header, attr)."""
    if output == "json":
        click.echo(json.dumps(to_jsonable(data), indent=2, default=str))
        return
    console = Console()
    if title:
        console.print(title, soft_wrap=True)
    table = Table()
    for header, _attr in columns:
        table.add_column(header)
    for row in rows if rows is not None else data:
        table.add_row(*[_cell(row, attr) for _h, attr in columns])
    console.print(table)


def _cell(row: Any, attr: str) -> str:
    value = row.get(attr) if isinstance(row, dict) else getattr(row, attr, "")
    if value is None:
        return ""
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)
