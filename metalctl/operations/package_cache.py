"""``metalctl cache fill``: a workload's Debian packages into the host-wide package cache,
ahead of a deploy, so that labs with no route out (``lab up --offline --package-cache``)
deploy from it.

How: the cache (apt-cacher-ng, as a lab gets it) on the bridge of a throwaway internal
Docker network, and on that network a throwaway container of the plain lab node image, the
image the nodes run, that asks apt, through the cache only, to download the workload's
packages. So the cache ends up holding exactly what such a node's apt will ask for: the
package indexes and the packages with their dependencies and recommends, as the roles'
apt installs them. The container itself has no route out.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import requests

from metalctl.boot.package_cache import PackageCache, read_transfers
from metalctl.deploy.workload import load_workload
from metalctl.errors import ProvisionError, UsageError
from metalctl.provisioners import lab, lab_cache, lab_image
from metalctl.provisioners.lab_engine import engine_client

FILL_TIMEOUT = 900.0
FILL_LABEL = "metalctl.cache-fill"
_LOG_TAIL_LINES = 15


@dataclass(frozen=True)
class FillResult:
    workload: str
    packages: list[str]
    cache_dir: str
    fetched_files: int  # from Debian's archive into the cache (indexes included)
    fetched_bytes: int
    fetched_debs: int  # packages that were not in the cache yet
    served_files: int  # from the cache to the download container
    served_bytes: int
    cache_bytes: int  # the whole cache directory after the fill
    seconds: float


def fill(
    workload: str, progress: lab.Progress | None = None, timeout: float = FILL_TIMEOUT
) -> FillResult:
    """Download ``workload``'s Debian packages through the host-wide cache; re-running
    fetches only what changed in the archive."""
    say = progress or (lambda _m: None)
    packages = load_workload(workload).preload_debian
    if not packages:
        raise UsageError(
            f"workload '{workload}' names no Debian packages to put into the cache",
            hint="its workload.yaml needs 'preload: {debian: [package, ...]}'",
        )
    started = time.monotonic()
    client = engine_client()
    image = lab_image.ensure_image(progress=say)
    with _state_dir() as state, _fill_network(client) as (network, subnet):
        cache = PackageCache(
            state,
            lab_cache.bridge_address(subnet),
            shared_cache=lab_cache.packages_dir(),
            owner="metalctl cache fill",
        )
        with cache:
            say(
                f"downloading {len(packages)} packages of workload {workload} and their "
                f"dependencies through the package cache ({lab_cache.packages_dir()})"
            )
            _download(client, image, network, cache.url, packages, timeout)
        # Read after the daemon stopped: its transfer log is complete then.
        moved = read_transfers(cache.layout.transfer_log)
    return FillResult(
        workload=workload,
        packages=list(packages),
        cache_dir=str(lab_cache.packages_dir()),
        fetched_files=moved.fetched_files,
        fetched_bytes=moved.fetched_bytes,
        fetched_debs=moved.fetched_debs,
        served_files=moved.served_files,
        served_bytes=moved.served_bytes,
        cache_bytes=_tree_bytes(lab_cache.packages_dir()),
        seconds=round(time.monotonic() - started, 1),
    )


@contextlib.contextmanager
def _state_dir() -> Iterator[Path]:
    """The fill's own config and logs: apt-cacher-ng's account must enter it (mode 0755)."""
    lab_cache.runs_dir().mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="fill-", dir=lab_cache.runs_dir()))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _fill_network(client: docker.DockerClient) -> Iterator[tuple[str, str]]:
    """A throwaway internal network (no route out) and its subnet."""
    subnet = str(lab.free_subnet(client))
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet)])
    network = client.networks.create(
        f"metalctl-cache-fill-{os.getpid()}",
        driver="bridge",
        ipam=ipam,
        internal=True,
        labels={FILL_LABEL: "1"},
    )
    try:
        yield network.name, subnet
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            network.remove()


def _download(
    client: docker.DockerClient,
    image: str,
    network: str,
    proxy: str,
    packages: tuple[str, ...],
    timeout: float,
) -> None:
    apt = f"apt-get -q -o Acquire::http::Proxy={shlex.quote(proxy)} -o Acquire::Retries=2"
    script = f"set -e; {apt} update; {apt} -y install --download-only {shlex.join(packages)}"
    container: Any = client.containers.run(
        image,
        ["sh", "-c", script],
        network=network,
        detach=True,
        labels={FILL_LABEL: "1"},
        environment={"DEBIAN_FRONTEND": "noninteractive"},
    )
    try:
        try:
            status = container.wait(timeout=timeout)
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            raise ProvisionError(
                f"the package download did not finish within {timeout:g} s",
                hint="a slow link to Debian's archive? re-run with a longer --timeout: what "
                "was fetched stays in the cache",
            ) from None
        if status.get("StatusCode") != 0:
            tail = container.logs().decode("utf-8", "replace").splitlines()[-_LOG_TAIL_LINES:]
            raise ProvisionError(
                "apt could not download the packages through the cache:\n" + "\n".join(tail),
                hint="the package cache reaches only Debian's archive (deb.debian.org); "
                "check that this host reaches it, then re-run",
            )
    finally:
        container.remove(force=True)


def _tree_bytes(root: Path) -> int:
    total = 0
    for path in root.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
    return total
