"""The admin host's package cache for container labs (``lab up --package-cache``).

The boot service's apt-cacher-ng (``metalctl.boot.package_cache``), started for a lab on
its bridge's address (.1 of the lab subnet, which the nodes reach even on an ``--offline``
lab's internal network) and left running after ``lab up`` returns; ``lab down`` ends it.

Every lab's cache uses one host-wide package directory, ``cache_root()/apt/packages``, so
what one lab (or ``metalctl cache fill``) fetched, the next one reads. apt-cacher-ng keeps
no lock of its own, so one daemon at a time may use that directory (the CACHE.lock it
holds while it runs): a second lab with --package-cache is refused while the first is up.

A lab cache's config, logs and pid file live in ``cache_root()/apt/labs/NETWORK-ID``: keyed
by the lab's Docker network, which is unique even when two metalctl homes use one lab
name, and readable by the apt-cacher-ng account (a metalctl home may be 0700).
"""

from __future__ import annotations

import shutil
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from metalctl.boot.package_cache import (
    DEFAULT_PORT,
    CacheLayout,
    PackageCache,
    proxy_url,
    refuse_if_in_use,
    running_pid,
    stop_detached,
)
from metalctl.images.cache import cache_root
from metalctl.provisioners.base import Say


def packages_dir() -> Path:
    """The host-wide package cache all container labs share."""
    return cache_root() / "apt" / "packages"


def runs_dir() -> Path:
    return cache_root() / "apt" / "labs"


def bridge_address(subnet: str) -> IPv4Address:
    """The lab bridge's address (Docker's gateway, .1): where the nodes find the cache."""
    return IPv4Network(subnet).network_address + 1


def _state_dir(network_id: str) -> Path:
    return runs_dir() / network_id[:12]


def layout_for(network_id: str) -> CacheLayout:
    return CacheLayout.under(_state_dir(network_id), packages_dir())


def refuse_if_taken(network_id: str | None) -> None:
    """Before a lab is made or completed: ConflictError when another daemon (another lab's,
    a 'cache fill') uses the package directory. The lab's own running cache is fine."""
    if network_id is not None and running_pid(layout_for(network_id)) is not None:
        return
    refuse_if_in_use(packages_dir())


def ensure_running(lab: str, network_id: str, subnet: str, say: Say) -> str:
    """Start the lab's cache unless it runs; returns the URL the nodes' apt uses."""
    address = bridge_address(subnet)
    if running_pid(layout_for(network_id)) is None:
        say(f"starting the package cache for lab {lab} on {address}:{DEFAULT_PORT}")
        cache = PackageCache(
            _state_dir(network_id), address, shared_cache=packages_dir(), owner=f"lab {lab}"
        )
        cache.start()
        cache.detach()
    return proxy_url(address)


def stop(network_id: str) -> bool:
    """End the lab's cache and remove its config and logs (the packages stay); True if
    one ran."""
    ran = stop_detached(layout_for(network_id))
    shutil.rmtree(_state_dir(network_id), ignore_errors=True)
    return ran
