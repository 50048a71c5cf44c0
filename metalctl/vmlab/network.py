"""The lab network of a cluster: one Linux bridge, one tap per VM, and no route out.

Names derive from the cluster name and fit Linux's 15-character limit: ``mcb`` + 8 hex
digits of the name's SHA-256 for the bridge, ``mct`` + the same 8 digits + the VM's index for
its tap. The bridge carries the boot service's IPv4 address (and a ULA, so that iPXE gets a
router advertisement instead of waiting ~14 s for one) and has no way out: the host may
forward (Docker sets ``ip_forward=1``), so iptables FORWARD rules drop whatever would be
routed into or out of the bridge (traffic between the bridge's own ports stays allowed), the
bridge's IPv4 ``forwarding`` sysctl is 0, and there is no NAT. Each rule carries the comment
``metalctl-vmlab:BRIDGE``, which is how ``remove`` and ``leftovers`` find them.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv6Interface
from pathlib import Path

from metalctl.errors import ConflictError, HostSetupError, UsageError

BRIDGE_PREFIX = "mcb"
TAP_PREFIX = "mct"
RULE_COMMENT = "metalctl-vmlab:"
MAX_INDEX = 9999
_IFNAMSIZ = 15
_TIMEOUT = 20.0


def _digest(cluster: str) -> str:
    if not cluster:
        raise UsageError("a lab network needs a cluster name")
    return hashlib.sha256(cluster.encode()).hexdigest()[:8]


def bridge_name(cluster: str) -> str:
    """``mcb`` + 8 hex digits: the same name for the same cluster, 11 characters."""
    return f"{BRIDGE_PREFIX}{_digest(cluster)}"


def tap_name(cluster: str, index: int) -> str:
    """``mct`` + 8 hex digits + ``index`` (0 … 9999): at most 15 characters."""
    if not 0 <= index <= MAX_INDEX:
        raise UsageError(f"VM index {index} out of range 0 … {MAX_INDEX}")
    name = f"{TAP_PREFIX}{_digest(cluster)}{index}"
    assert len(name) <= _IFNAMSIZ
    return name


# --- commands ---------------------------------------------------------------------------


def _tool(name: str, package: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        raise HostSetupError(f"'{name}' not found", hint=f"install Debian's package {package}")
    return found


def _run(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        raise HostSetupError(f"'{shlex.join(argv)}' did not finish in {_TIMEOUT:g} s") from exc
    if check and done.returncode != 0:
        said = (done.stderr or done.stdout).strip()
        raise HostSetupError(f"'{shlex.join(argv)}' failed: {said or f'exit {done.returncode}'}")
    return done


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run([_tool("ip", "iproute2"), *args], check=check)


def _iptables_tools() -> list[str]:
    """iptables (required) and ip6tables (when installed)."""
    tools = [_tool("iptables", "iptables")]
    six = shutil.which("ip6tables") or shutil.which("ip6tables", path="/usr/sbin:/sbin")
    return [*tools, six] if six else tools


def _link(name: str) -> dict[str, object] | None:
    done = _ip("-j", "-d", "link", "show", "dev", name, check=False)
    if done.returncode != 0:
        return None
    try:
        links = json.loads(done.stdout)
    except ValueError as exc:
        raise HostSetupError(f"cannot read 'ip -j link show dev {name}': {exc}") from exc
    return links[0] if links else None


def _kind(link: dict[str, object]) -> str | None:
    info = link.get("linkinfo")
    return str(info.get("info_kind")) if isinstance(info, dict) else None


def _all_links() -> list[str]:
    try:
        return [str(link["ifname"]) for link in json.loads(_ip("-j", "link", "show").stdout)]
    except (ValueError, KeyError, TypeError) as exc:
        raise HostSetupError(f"cannot read 'ip -j link show': {exc}") from exc


# --- the firewall rules -----------------------------------------------------------------


def _rule_specs(bridge: str) -> list[list[str]]:
    """In chain order: the bridge's own ports may talk (with br_netfilter loaded, bridged
    frames pass FORWARD too, and Docker sets its policy to DROP); nothing is routed in or out."""
    comment = ["-m", "comment", "--comment", f"{RULE_COMMENT}{bridge}"]
    return [
        ["-i", bridge, "-o", bridge, *comment, "-j", "ACCEPT"],
        ["-i", bridge, *comment, "-j", "DROP"],
        ["-o", bridge, *comment, "-j", "DROP"],
    ]


def _add_rules(bridge: str) -> list[str]:
    added = []
    for tool in _iptables_tools():
        specs = _rule_specs(bridge)
        if all(
            _run([tool, "-w", "10", "-C", "FORWARD", *s], check=False).returncode == 0
            for s in specs
        ):
            continue
        _delete_rules(tool, bridge)  # a partial set from an interrupted run: start clean
        for position, spec in enumerate(specs, start=1):
            _run([tool, "-w", "10", "-I", "FORWARD", str(position), *spec])
            added.append(f"{Path(tool).name} -I FORWARD {position} {shlex.join(spec)}")
    return added


def _rules_of(tool: str, bridge: str | None) -> list[list[str]]:
    """The FORWARD rules (as ``-A FORWARD ...`` argument lists) carrying our comment for
    ``bridge``, or for any bridge when ``bridge`` is None."""
    done = _run([tool, "-w", "10", "-S", "FORWARD"], check=False)
    if done.returncode != 0:
        return []
    found = []
    for line in done.stdout.splitlines():
        args = shlex.split(line)
        if "--comment" not in args or args[:2] != ["-A", "FORWARD"]:
            continue
        comment = args[args.index("--comment") + 1]
        wanted = f"{RULE_COMMENT}{bridge}" if bridge else None
        if comment == wanted or (wanted is None and comment.startswith(RULE_COMMENT)):
            found.append(args)
    return found


def _delete_rules(tool: str, bridge: str) -> list[str]:
    removed = []
    for args in _rules_of(tool, bridge):
        done = _run([tool, "-w", "10", "-D", *args[1:]], check=False)
        if done.returncode == 0:
            removed.append(f"{Path(tool).name} {shlex.join(args)}")
    return removed


# --- the public API ---------------------------------------------------------------------


@dataclass(frozen=True)
class Bridge:
    """What ``create_bridge`` did: ``created`` is False when the bridge existed already;
    ``addresses`` and ``rules`` list only what this call added."""

    name: str
    created: bool
    addresses: tuple[str, ...]
    rules: tuple[str, ...]


def create_bridge(name: str, address: IPv4Interface, ula: IPv6Interface | None = None) -> Bridge:
    """The bridge ``name``, up, with ``address`` (and ``ula``), and the FORWARD DROP rules.
    Idempotent: what exists already is kept. A non-bridge link of that name is refused."""
    if len(name) > _IFNAMSIZ:
        raise UsageError(f"interface name {name!r} is longer than {_IFNAMSIZ} characters")
    link = _link(name)
    created = link is None
    if link is not None and _kind(link) != "bridge":
        raise ConflictError(
            f"{name} exists and is not a bridge ({_kind(link) or 'unknown kind'})",
            hint="pick another cluster name or remove that interface",
        )
    # The rules come first: the bridge never exists without them.
    rules = _add_rules(name)
    if created:
        _ip("link", "add", name, "type", "bridge", "stp_state", "0", "forward_delay", "0")
    _set_sysctl(f"net/ipv4/conf/{name}/forwarding", "0")
    addresses = []
    have = _addresses(name)
    for wanted in (address, ula):
        if wanted is None or str(wanted) in have:
            continue
        extra = ["nodad"] if isinstance(wanted, IPv6Interface) else []
        _ip("addr", "add", str(wanted), "dev", name, *extra)
        addresses.append(str(wanted))
    _ip("link", "set", name, "up")
    return Bridge(name, created, tuple(addresses), tuple(rules))


def _addresses(name: str) -> set[str]:
    try:
        info = json.loads(_ip("-j", "addr", "show", "dev", name).stdout)
        return {f"{a['local']}/{a['prefixlen']}" for a in info[0].get("addr_info", [])}
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise HostSetupError(f"cannot read 'ip -j addr show dev {name}': {exc}") from exc


def _set_sysctl(key: str, value: str) -> None:
    try:
        Path("/proc/sys", key).write_text(value)
    except OSError as exc:
        raise HostSetupError(f"cannot set {key.replace('/', '.')}={value}: {exc}") from exc


def add_tap(tap: str, bridge: str) -> bool:
    """A persistent tap ``tap`` in ``bridge``, up. Returns whether it was created (an
    existing tap is reattached). QEMU opens it with ``script=no``."""
    if len(tap) > _IFNAMSIZ:
        raise UsageError(f"interface name {tap!r} is longer than {_IFNAMSIZ} characters")
    link = _link(tap)
    if link is not None and _kind(link) != "tun":
        raise ConflictError(f"{tap} exists and is not a tap ({_kind(link) or 'unknown kind'})")
    if link is None:
        _ip("tuntap", "add", "dev", tap, "mode", "tap")
    _ip("link", "set", tap, "master", bridge, "up")
    return link is None


def remove(*names: str) -> list[str]:
    """Delete the links ``names`` (taps, bridges) and the FORWARD rules of those that are
    bridges. Idempotent: a name already gone is skipped. Returns what was removed."""
    removed = []
    for name in names:
        for tool in _iptables_tools():
            removed += _delete_rules(tool, name)
        if _link(name) is not None:
            done = _ip("link", "del", name, check=False)
            if done.returncode == 0:
                removed.append(f"link {name}")
            elif _link(name) is not None:
                raise HostSetupError(f"cannot delete {name}: {done.stderr.strip()}")
    return removed


@dataclass(frozen=True)
class Leftovers:
    links: tuple[str, ...]
    rules: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.links or self.rules)

    def names(self) -> tuple[str, ...]:
        """The links and the bridges that rules are left for: what to pass to ``remove``."""
        bridges = {r.split(RULE_COMMENT, 1)[1].split()[0].strip("\"'") for r in self.rules}
        return tuple(dict.fromkeys([*self.links, *sorted(bridges)]))


def leftovers(cluster: str) -> Leftovers:
    """The cluster's bridge and taps that exist, and FORWARD rules left for its bridge."""
    bridge = bridge_name(cluster)
    tap_prefix = f"{TAP_PREFIX}{_digest(cluster)}"
    links = tuple(
        n
        for n in _all_links()
        if n == bridge or (n.startswith(tap_prefix) and n[len(tap_prefix) :].isdigit())
    )
    rules = tuple(
        f"{Path(tool).name} {shlex.join(args)}"
        for tool in _iptables_tools()
        for args in _rules_of(tool, bridge)
    )
    return Leftovers(links, rules)
