"""Settings of the boot service, checked once when it starts (not per request)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from metalctl.errors import UsageError

DEFAULT_TOKEN_TTL = 15 * 60.0
# A deploy token lives through one image write; an hour covers a slow disk, and a machine
# that boots again gets a new one anyway.
DEFAULT_DEPLOY_TOKEN_TTL = 60 * 60.0

# Values that end up in iPXE scripts: a newline would start a new script command, and a
# space in a URL would split a command's arguments, so both are refused up front.
_BASE_URL = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~/\-]*)?")
_FILE_PATH = re.compile(r"[A-Za-z0-9._\-]+(/[A-Za-z0-9._\-]+)*")


@dataclass(frozen=True)
class BootConfig:
    """``base_url``: how machines reach this service (default: the address and port a
    request arrived on, which is the one the machine could reach). Boot file paths are
    relative to the files directory."""

    token_ttl: float = DEFAULT_TOKEN_TTL
    deploy_token_ttl: float = DEFAULT_DEPLOY_TOKEN_TTL
    base_url: str | None = None
    discovery_kernel: str = "discovery/vmlinuz"
    discovery_initrd: str = "discovery/initrd.img"
    kernel_args: str = "console=tty0 console=ttyS0,115200n8"
    # How often a machine with nothing to boot yet (enrolled, awaiting provisioning) asks again.
    wait_retry_seconds: int = 30
    # Per socket read/write: a client that stalls longer loses its connection (and thread).
    request_timeout: float = 10.0

    def __post_init__(self) -> None:
        problems = [p for p in self._problems() if p]
        if problems:
            raise UsageError("invalid boot service settings: " + "; ".join(problems))

    def _problems(self) -> list[str | None]:
        return [
            _positive("token_ttl", self.token_ttl),
            _positive("deploy_token_ttl", self.deploy_token_ttl),
            _positive("request_timeout", self.request_timeout),
            _positive("wait_retry_seconds", self.wait_retry_seconds),
            None
            if self.base_url is None or _BASE_URL.fullmatch(self.base_url)
            else f"base_url {self.base_url!r} is not an http(s)://HOST[:PORT][/PATH] URL",
            _file_path("discovery_kernel", self.discovery_kernel),
            _file_path("discovery_initrd", self.discovery_initrd),
            None
            if self.kernel_args.isprintable()
            else "kernel_args must be one line of printable text",
        ]


def _positive(name: str, value: float) -> str | None:
    ok = math.isfinite(value) and value > 0
    return None if ok else f"{name} must be a number > 0, not {value!r}"


def _file_path(name: str, value: str) -> str | None:
    ok = _FILE_PATH.fullmatch(value) and ".." not in value.split("/")
    return None if ok else f"{name} {value!r} must be a relative path like discovery/vmlinuz"
