"""`metalctl image`: build, import and list OS and discovery images (the image cache)."""

from __future__ import annotations

import click

from metalctl.cli.format import OUTPUT_OPTION, emit

_BUILDABLE = ("debian-12", "discovery")
_COLUMNS = [
    ("NAME", "name"),
    ("SHA256", "short_sha"),
    ("SIZE", "size_text"),
    ("STORED", "stored_text"),
    ("SOURCE", "source"),
    ("CREATED", "created_at"),
]


@click.group("image")
def image_group() -> None:
    """OS images (deployed to machines) and the discovery image, kept in $METALCTL_CACHE
    (default /var/cache/metalctl)."""


@image_group.command("build")
@click.argument("what", type=click.Choice(_BUILDABLE))
@click.option("--force", is_flag=True, help="Build again even if the recipe is unchanged.")
def image_build_cmd(what: str, force: bool) -> None:
    """Build WHAT (needs root and Debian's archive; an unchanged recipe is reused).

    \b
      debian-12   a bootable Debian 12 disk image (BIOS and UEFI, cloud-init NoCloud,
                  docker.io preloaded), stored as images/SHA256.raw.zst
      discovery   the discovery/deploy kernel + initramfs with the agent
    """
    if what == "discovery":
        # Written alongside (another slice); imported here only, so the group loads without it.
        from metalctl.images.discovery import (  # type: ignore[import-not-found,unused-ignore]
            build_discovery,
        )

        result = build_discovery(_say, force=force)
        click.echo(f"discovery {result.recipe}: kernel {result.kernel}, initrd {result.initrd}")
        return
    from metalctl.images.catalog import image_path
    from metalctl.images.debian import build_debian12

    record = build_debian12(_say, force=force)
    click.echo(f"{record.name} {record.sha256} {image_path(record)}")


@image_group.command("import")
@click.argument("source", metavar="SOURCE")
@click.option(
    "--sha256",
    "sha256",
    required=True,
    metavar="HEX",
    help="SHA-256 of SOURCE as downloaded (a mismatch stores nothing).",
)
@click.option("--name", required=True, metavar="NAME", help="Name to store the image under.")
def image_import_cmd(source: str, sha256: str, name: str) -> None:
    """Import an OS image from SOURCE: a path, a file:// or an http(s):// URL.

    raw or qcow2 (converted to raw once); stored zstd-compressed under the SHA-256 of its
    raw bytes, and NAME points at it.
    """
    from metalctl.images.catalog import image_path
    from metalctl.images.importer import import_image

    record = import_image(source, sha256, name, _say)
    click.echo(f"{record.name} {record.sha256} {image_path(record)}")


@image_group.command("list")
@OUTPUT_OPTION
def image_list_cmd(output: str) -> None:
    """The OS images in the cache."""
    from metalctl.images.catalog import list_images

    records = list_images()
    rows = [
        {
            **record.to_json(),
            "short_sha": record.sha256[:12],
            "size_text": _mib(record.size),
            "stored_text": _mib(record.stored_size),
        }
        for record in records
    ]
    emit(output, records, _COLUMNS, rows=rows)


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.0f} MiB"


def _say(text: str) -> None:
    click.echo(f"image: {text}", err=True)
