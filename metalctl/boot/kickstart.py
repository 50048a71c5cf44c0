"""The EL9 path (Rocky / Alma / CentOS Stream 9): a kickstart per node (templates/el9.ks.j2).

    iPXE: the mirror's installer kernel (installer.py) -> GET /v1/deploy/kickstart
        -> Anaconda installs from the mirror -> %post POSTs /v1/deploy/result -> reboot

``KickstartParams`` checks every value when it is made: a kickstart is a list of shell-like
command lines, so a newline would start a command of its own, a space or quote would end an
argument early and a ``$`` or backquote would be expanded by the %post shell. A bad value is
a UsageError naming the field. See docs/pxe-provisioning.md "EL9 by kickstart".
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import re
import struct
import urllib.parse
from dataclasses import dataclass
from typing import Literal

import jinja2

from metalctl.errors import UsageError

Flavour = Literal["rocky", "alma", "centos-stream"]

FLAVOURS: dict[str, tuple[str, str]] = {
    # flavour: (name in comments, ID= of the installed system's /etc/os-release)
    "rocky": ("Rocky Linux", "rocky"),
    "alma": ("AlmaLinux", "almalinux"),
    "centos-stream": ("CentOS Stream", "centos"),
}

# Where each flavour's 9 tree lives upstream; MIRROR/BaseOS/x86_64/os is the install tree
# for all three. A local mirror of the same layout is better for a rack of machines.
UPSTREAM_MIRRORS: dict[str, str] = {
    "rocky": "https://dl.rockylinux.org/pub/rocky/9",
    "alma": "https://repo.almalinux.org/almalinux/9",
    "centos-stream": "https://mirror.stream.centos.org/9-stream",
}

DEFAULT_CONSOLE = "console=tty0 console=ttyS0,115200n8"

# http(s)://HOST[:PORT][/PATH]: no query, no spaces, quotes, '$' or backquotes (the URLs
# land in kickstart commands, a %post shell line and the kernel command line).
_URL = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]{1,255}(/[A-Za-z0-9._~/\-+]{0,1024})?")
_DNS_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")
# Kernel names of whole disks: sda, vda, nvme0n1, xvda, mmcblk0.
_DISK_NAME = re.compile(r"[a-z][a-z0-9]{1,31}")
# udev's persistent names: letters, digits and . _ : + @ - (spaces are '_' there).
_DISK_LINK = re.compile(r"/dev/disk/by-(id|path)/[A-Za-z0-9._:+@-]{1,200}")
_SERIAL = re.compile(r"[A-Za-z0-9._:+@-]{1,128}")
_CONSOLE = re.compile(r"[A-Za-z0-9=,._:-]{1,64}( [A-Za-z0-9=,._:-]{1,64}){0,15}")
_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)
# The comment of a key: printable ASCII without quotes or backslashes (the key is quoted).
_KEY_COMMENT = re.compile(r"[!#-\[\]-~]([ !#-\[\]-~]{0,254}[!#-\[\]-~])?")


@dataclass(frozen=True)
class KickstartParams:
    """What one node's kickstart needs.

    ``address``/``prefix``: a static IPv4 address on the NIC ``mac`` (with ``gateway`` and
    ``nameservers`` if the node needs them), or ``None`` for DHCP. ``root_device``: the disk
    to install on, as a kernel name (``sda``, ``nvme0n1``), a udev link
    (``/dev/disk/by-id/...``, ``/dev/disk/by-path/...``) or ``serial:SERIAL``; ``None`` is
    the first fixed disk by kernel name. ``token``: the deploy token the %post reports with;
    ``base_url``: the boot service as the machine reaches it. ``ntp_servers``: chrony's
    sources (none: the distribution's pool).
    """

    hostname: str
    ssh_public_key: str
    mirror_url: str
    mac: str
    token: str
    base_url: str
    flavour: Flavour = "rocky"
    address: str | None = None
    prefix: int | None = None
    gateway: str | None = None
    nameservers: tuple[str, ...] = ()
    root_device: str | None = None
    ntp_servers: tuple[str, ...] = ()
    console: str = DEFAULT_CONSOLE

    def __post_init__(self) -> None:
        problems = [p for p in self._problems() if p]
        if problems:
            raise UsageError("invalid kickstart parameters: " + "; ".join(problems))

    def _problems(self) -> list[str | None]:
        return [
            check_hostname("hostname", self.hostname),
            _check_ssh_key("ssh_public_key", self.ssh_public_key),
            check_url("mirror_url", self.mirror_url),
            check_mac("mac", self.mac),
            None
            if isinstance(self.token, str) and _TOKEN.fullmatch(self.token)
            else "token must be 16-128 characters of A-Z a-z 0-9 _ -",
            check_url("base_url", self.base_url),
            check_flavour("flavour", self.flavour),
            *self._network_problems(),
            _check_root_device("root_device", self.root_device),
            *(
                check_hostname_or_ip(f"ntp_servers[{i}]", s)
                for i, s in enumerate(_as_tuple(self.ntp_servers))
            ),
            check_console("console", self.console),
        ]

    def _network_problems(self) -> list[str | None]:
        for name in ("nameservers", "ntp_servers"):
            if not isinstance(getattr(self, name), tuple):
                return [f"{name} must be a tuple of strings"]
        if self.address is None:
            extra = [n for n in ("prefix", "gateway") if getattr(self, n) is not None]
            if self.nameservers:
                extra.append("nameservers")
            return [f"{n} is set but address is not (DHCP)" for n in extra]
        interface = _interface(self.address, self.prefix)
        if isinstance(interface, str):
            return [interface]
        problems: list[str | None] = []
        if self.gateway is not None:
            gateway = _ipv4(self.gateway)
            if gateway is None:
                problems.append(f"gateway {_show(self.gateway)} is not an IPv4 address")
            elif gateway not in interface.network or gateway == interface.ip:
                problems.append(
                    f"gateway {self.gateway} is not another address in {interface.network}"
                )
        for i, server in enumerate(self.nameservers):
            if _ipv4(server) is None:
                problems.append(f"nameservers[{i}] {_show(server)} is not an IPv4 address")
        return problems


def render_kickstart(params: KickstartParams) -> str:
    """The kickstart for one node (text, ends with a newline)."""
    flavour_name, os_release_id = FLAVOURS[params.flavour]
    device, serial, comment = _disk(params.root_device)
    netmask = None
    if params.address is not None and params.prefix is not None:
        netmask = str(ipaddress.IPv4Network(f"0.0.0.0/{params.prefix}").netmask)
    return render(
        "el9.ks.j2",
        hostname=params.hostname,
        flavour=params.flavour,
        flavour_name=flavour_name,
        os_release_id=os_release_id,
        mirror=params.mirror_url.rstrip("/"),
        mac=params.mac.lower(),
        address=params.address,
        netmask=netmask,
        gateway=params.gateway,
        nameservers=params.nameservers,
        ssh_public_key=params.ssh_public_key,
        disk_device=device,
        disk_serial=serial,
        disk_comment=comment,
        ntp_servers=params.ntp_servers,
        console=params.console,
        token=params.token,
        base_url=params.base_url.rstrip("/"),
    )


def _disk(hint: str | None) -> tuple[str | None, str | None, str]:
    """(device for ignoredisk/clearpart, or None when %pre finds it; serial; description)"""
    if hint is None:
        return None, None, "the first fixed disk by kernel name"
    if hint.startswith("serial:"):
        serial = hint.removeprefix("serial:")
        return None, serial, f"the disk with serial {serial}"
    if hint.startswith("/dev/disk/"):
        # Anaconda's own spelling of a udev link in ignoredisk and clearpart.
        link = hint.removeprefix("/dev/")
        return link, None, hint
    return hint, None, f"/dev/{hint}"


# --- checks shared with installer.py: each returns None or a message naming the field ---


def check_url(field: str, value: object) -> str | None:
    if isinstance(value, str) and _URL.fullmatch(value):
        try:
            if urllib.parse.urlsplit(value).hostname:
                return None
        except ValueError:  # a malformed [IPv6] host
            pass
    return (
        f"{field} {_show(value)} is not an http:// or https:// URL like http://HOST[:PORT][/PATH] "
        "(no query, spaces, quotes or '$')"
    )


def check_mac(field: str, value: object) -> str | None:
    if isinstance(value, str) and _MAC.fullmatch(value.lower()):
        return None
    return f"{field} {_show(value)} is not a MAC address like 52:54:00:12:34:56"


def check_flavour(field: str, value: object) -> str | None:
    if isinstance(value, str) and value in FLAVOURS:
        return None
    return f"{field} {_show(value)} is not one of {', '.join(FLAVOURS)}"


def check_hostname(field: str, value: object) -> str | None:
    if isinstance(value, str) and len(value) <= 253 and _DNS_NAME.fullmatch(value):
        return None
    return (
        f"{field} {_show(value)} is not a host name (lowercase DNS labels: a-z, 0-9, '-', "
        "joined by '.')"
    )


def check_hostname_or_ip(field: str, value: object) -> str | None:
    if isinstance(value, str) and _ipv4(value) is not None:
        return None
    return check_hostname(field, value)


def check_console(field: str, value: object) -> str | None:
    if isinstance(value, str) and _CONSOLE.fullmatch(value):
        return None
    return (
        f"{field} {_show(value)} must be kernel arguments like {DEFAULT_CONSOLE!r} "
        "(letters, digits and = , . _ : - separated by single spaces)"
    )


def _check_ssh_key(field: str, value: object) -> str | None:
    if not isinstance(value, str):
        return f"{field} must be a string"
    if "\n" in value or "\r" in value:
        return f"{field} must be one line (strip the .pub file's trailing newline)"
    parts = value.split(" ", 2)
    if len(parts) < 2 or parts[0] not in _KEY_TYPES:
        return f"{field} is not an OpenSSH public key line like 'ssh-ed25519 AAAA... comment'"
    kind, blob = parts[0], parts[1]
    if not _blob_is(blob, kind):
        return f"{field}: the key data is not a {kind} key in base64"
    if len(parts) == 3 and not _KEY_COMMENT.fullmatch(parts[2]):
        return (
            f"{field}: the key's comment must be printable ASCII without quotes or "
            "backslashes (it is quoted in the kickstart)"
        )
    return None


def _blob_is(blob: str, kind: str) -> bool:
    """The base64 decodes, and starts with the key type as an SSH string (length, name)."""
    if len(blob) > 16384:
        return False
    try:
        data = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return False
    name = kind.encode()
    return data[: 4 + len(name)] == struct.pack(">I", len(name)) + name


def _check_root_device(field: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        return f"{field} must be a string or None"
    if value.startswith("serial:"):
        if _SERIAL.fullmatch(value.removeprefix("serial:")):
            return None
        return f"{field} {_show(value)}: a serial is letters, digits and . _ : + @ -"
    if value.startswith("/dev/disk/"):
        if _DISK_LINK.fullmatch(value):
            return None
        return (
            f"{field} {_show(value)} is not a udev link like /dev/disk/by-id/NAME or "
            "/dev/disk/by-path/NAME"
        )
    if value.startswith("/dev/") and _DISK_NAME.fullmatch(value.removeprefix("/dev/")):
        return f"{field} {_show(value)}: give the kernel name without /dev/ ({value[5:]})"
    if _DISK_NAME.fullmatch(value):
        return None
    return (
        f"{field} {_show(value)} is not a disk: a kernel name (sda, nvme0n1), "
        "/dev/disk/by-id/NAME, /dev/disk/by-path/NAME or serial:SERIAL"
    )


def _interface(address: object, prefix: object) -> ipaddress.IPv4Interface | str:
    ip = _ipv4(address)
    if ip is None:
        return f"address {_show(address)} is not an IPv4 address"
    if type(prefix) is not int or not 1 <= prefix <= 32:
        return f"prefix {_show(prefix)} must be an integer 1-32 with a static address"
    interface = ipaddress.IPv4Interface(f"{ip}/{prefix}")
    network = interface.network
    if prefix < 31 and ip in (network.network_address, network.broadcast_address):
        return f"address {ip} is the network's own or broadcast address in {network}"
    if ip.is_unspecified or ip.is_multicast or ip.is_loopback or ip.is_reserved:
        return f"address {ip} cannot be a host's address"
    return interface


def _ipv4(value: object) -> ipaddress.IPv4Address | None:
    if not isinstance(value, str):
        return None
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        return None


def _as_tuple(value: object) -> tuple[object, ...]:
    return value if isinstance(value, tuple) else ()


def _show(value: object) -> str:
    """A value for a message: repr (so newlines and quotes show), clipped."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@functools.cache
def _environment() -> jinja2.Environment:
    # Not HTML: no autoescape. Every value is checked before it gets here; StrictUndefined
    # turns a missing value into an error instead of an empty argument. trim/lstrip_blocks:
    # {% if %} lines leave no blank lines or indentation behind.
    return jinja2.Environment(
        loader=jinja2.PackageLoader("metalctl.boot", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def render(name: str, **values: object) -> str:
    """Render one of this package's templates (kickstart or installer script)."""
    return _environment().get_template(name).render(**values)
