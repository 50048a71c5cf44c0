"""The cluster spec (apiVersion metalctl/v1alpha1, kind Cluster): typed models and validation.

A spec is validated completely before anything changes: the text first (size,
encoding), then the YAML (nesting depth, alias expansion, duplicate keys), then
shape and types (pydantic in strict mode, unknown keys rejected), then the
cross-field rules (quorum, duplicates, membership of master/managers/servers, ports).
Problems are reported together, each naming its field (``spec.swarm.managers``) and
what to do about it; the report is bounded however hostile the spec is.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import stat
import unicodedata
import urllib.parse
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from metalctl.errors import SpecError
from metalctl.spec_yaml import LoadError, at, read_yaml

API_VERSION = "metalctl/v1alpha1"
KIND = "Cluster"
PLAIN_DOCKER_PORT = 2375

# Limits: far above any real cluster, low enough that a hostile spec is refused within
# a second or so, with a short message, and without a traceback.
MAX_SPEC_BYTES = 1024 * 1024
MAX_NODES = 1000
MAX_LABELS = 64
MAX_PROBLEMS = 20  # listed in a SpecError; the rest are counted
MAX_QUOTE = 60  # characters of a user's value quoted in a message
_MAX_FIELD = 80
_MAX_MESSAGE = 240

# Ports that Swarm, Consul and SSH use on every node: the Docker API (and sshd) cannot
# take them too.
SERVICE_PORTS: dict[int, str] = {
    22: "SSH (metalctl deploys over it)",
    2377: "Swarm cluster management",
    4789: "Swarm overlay networks (VXLAN)",
    7946: "Swarm node gossip",
    8300: "Consul server RPC",
    8301: "Consul LAN gossip",
    8302: "Consul WAN gossip",
    8500: "Consul HTTP API",
    8501: "Consul HTTPS API",
    8502: "Consul gRPC",
    8600: "Consul DNS",
}

# Every pattern is used with fullmatch: '$' would also match before a final newline.
_DNS_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
# Not starting with '-': the user is passed to ssh, where '-o...' would be an option.
_SSH_USER = r"[A-Za-z_][A-Za-z0-9_.-]{0,31}"
_DATACENTER = r"[a-z0-9-]{1,64}"
# [0-9], not \d: \d matches any Unicode digit, and the version is a path component.
_VERSION = r"[0-9]{1,6}\.[0-9]{1,6}\.[0-9]{1,6}(-[0-9A-Za-z.]{1,40})?"
_SHA256 = r"[0-9a-f]{64}"
_PROVISIONER = r"[a-z][a-z0-9-]{0,31}"
_LABEL_KEY = r"[A-Za-z0-9]([A-Za-z0-9._/-]{0,126}[A-Za-z0-9])?"
# Printable ASCII without spaces; no braces, which Ansible would take for a template.
_URL = r"https?://[!-z|~]{1,2040}"
_MAC = r"[0-9a-f]{2}(:[0-9a-f]{2}){5}"
_SERIAL = r"[A-Za-z0-9._:/+-]{1,128}"
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_IMAGE_REF = r"[a-z0-9][a-z0-9._-]{0,63}"
_CIDR = r"[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}"
_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,127}"
_CLOUD = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_BMC_USER = r"[!-~]{1,64}"
_BMC_HOST = r"[A-Za-z0-9]([A-Za-z0-9.:-]{0,251}[A-Za-z0-9])?"
_REDFISH_SYSTEM = r"/redfish/v1/Systems/[A-Za-z0-9._~-]{1,128}"
_IRONIC_INTERFACE_NAME = r"[a-z][a-z0-9-]{0,63}"
IRONIC_PROVISIONER = "ironic"
# Provisioners that install an OS over PXE: their nodes need a machine identity and the
# spec a pxe: section.
PXE_PROVISIONERS = ("pxe", "vmlab")


def _matching(pattern: str, what: str) -> AfterValidator:
    """A validator refusing a string that does not match *pattern* as a whole."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{_quote(value)} is not {what}")
        return value

    return AfterValidator(check)


def _check_address(value: str) -> str:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(
            f"{_quote(value)} is not an IPv4 address; Consul and Swarm advertise and join by "
            "IP address, so give the node's address (like 192.0.2.11), not a host name"
        ) from None
    if address.version == 6:
        raise ValueError(
            "IPv6 addresses are not supported yet (Docker/Consul URLs and Swarm advertise "
            "addresses are built for IPv4); use the node's IPv4 address"
        )
    unusable = _unusable(address)
    if unusable:
        raise ValueError(
            f"{value} is {unusable}; give an address at which the admin host and the "
            "other nodes reach this node"
        )
    return value


def _unusable(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address == ipaddress.IPv4Address("255.255.255.255"):
        return "the broadcast address"
    if address.is_reserved:
        return "a reserved address (240.0.0.0/4)"
    return None


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        if not re.fullmatch(_LABEL_KEY, key):
            raise ValueError(
                f"label key {_quote(key)} must be letters, digits, '.', '_', '/' or '-' "
                "(at most 128, starting and ending with a letter or digit)"
            )
        if len(value) > 256 or not _printable(value):
            raise ValueError(
                f"label {key}: the value must be at most 256 printable characters "
                "(no control or formatting characters)"
            )
    return labels


def _printable(text: str) -> bool:
    """No control, formatting (bidi overrides, zero-width) or line/paragraph separators:
    labels are shown in terminals."""
    return not any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in text)


def _check_url(value: str) -> str:
    if re.fullmatch(_URL, value):
        try:
            if urllib.parse.urlsplit(value).hostname:
                return value
        except ValueError:  # a malformed [IPv6] host
            pass
    raise ValueError(
        f"{_quote(value)} is not an http:// or https:// URL (printable ASCII, no spaces or "
        "braces, at most 2048 characters); give the URL of the Consul zip or binary"
    )


def _check_http_url(value: str) -> str:
    """An http(s) URL with a host (an Ironic endpoint, an image, a Redfish BMC)."""
    try:
        return _check_url(value)
    except ValueError:
        raise ValueError(
            f"{_quote(value)} is not an http:// or https:// URL with a host (printable "
            "ASCII, no spaces or braces, at most 2048 characters)"
        ) from None


def _check_apt_proxy(value: str) -> str:
    """apt's HTTP proxy: http://HOST[:PORT], nothing else (it is written into apt.conf)."""
    match = re.fullmatch(r"http://([A-Za-z0-9.-]{1,253})(?::(\d{1,5}))?/?", value)
    if match and (match[2] is None or 1 <= int(match[2]) <= 65535):
        return value
    raise ValueError(
        f"{_quote(value)} is not an apt proxy URL: give http://HOST:PORT (a host name or "
        "IPv4 address, e.g. http://10.10.0.1:3142, the admin host's package cache)"
    )


def _check_secret_path(value: str) -> str:
    if not value.startswith("/") or "\0" in value or len(value) > 4096:
        raise ValueError(
            f"{_quote(value)} is not an absolute path; give the absolute path of a 0600 file "
            "that holds only the password"
        )
    return value


DnsLabel = Annotated[
    str,
    _matching(_DNS_LABEL, "a lowercase DNS label (a-z, 0-9, '-'; at most 63, no '-' at the ends)"),
]
Port = Annotated[int, Field(ge=1, le=65535)]


class _Model(BaseModel):
    # strict: YAML already gives real ints, strings and lists, so coercing "2222" or true
    # to a port, or a set to a list, could only hide a mistake in the spec.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, strict=True)


class SSH(_Model):
    user: Annotated[str, _matching(_SSH_USER, "a user name (letters, digits, '_', '.', '-')")] = (
        "root"
    )
    port: Port = 22


class RootDevice(_Model):
    """Which disk gets the OS (Ironic's root device hints, the useful subset); no hint: the
    smallest disk that holds the image."""

    serial: Annotated[str, _matching(_SERIAL, "a disk serial number")] | None = None
    wwn: Annotated[str, _matching(_SERIAL, "a disk WWN")] | None = None
    name: Annotated[str, _matching(r"[a-z][a-z0-9]{1,31}", "a disk name like sda")] | None = None
    min_size_gib: Annotated[int, Field(ge=1, le=1 << 20)] | None = Field(None, alias="minSizeGiB")


class Node(_Model):
    name: DnsLabel
    address: Annotated[str, AfterValidator(_check_address)]
    ssh: SSH = SSH()
    labels: Annotated[
        dict[str, str], Field(max_length=MAX_LABELS), AfterValidator(_check_labels)
    ] = Field(default_factory=dict)
    # The role of a node added on day 2 ('metalctl nodes add'); the first deploy's
    # managers are spec.swarm.managers (an odd count, for the quorum).
    swarm_role: Literal["manager", "worker"] | None = Field(None, alias="swarmRole")
    # How a PXE provisioner finds this node's machine among the discovered ones: any one.
    mac: Annotated[str, _matching(_MAC, "a MAC like 52:54:00:12:34:56 (lowercase)")] | None = None
    serial: Annotated[str, _matching(_SERIAL, "an SMBIOS serial number")] | None = None
    uuid: Annotated[str, _matching(_UUID, "an SMBIOS UUID (lowercase)")] | None = None
    root_device: RootDevice | None = Field(None, alias="rootDevice")
    # Ironic: the node's NICs (its ports), how Ironic reaches its BMC, and an image other
    # than spec.image.
    macs: (
        Annotated[
            list[Annotated[str, _matching(_MAC, "a MAC like 52:54:00:12:34:56 (lowercase)")]],
            Field(min_length=1, max_length=16),
        ]
        | None
    ) = None
    bmc: Bmc | None = None
    image: Image | None = None


class Image(_Model):
    """An OS image that Ironic writes (whole-disk, raw or qcow2), checked by its SHA-256."""

    url: Annotated[str, AfterValidator(_check_http_url)]
    sha256: Annotated[str, _matching(_SHA256, "a SHA-256 digest (64 lowercase hex digits)")]


IronicInterface = Literal["boot", "deploy", "inspect", "management", "power", "raid", "bios"]


class Bmc(_Model):
    """How Ironic reaches a node's BMC. The password is never in the spec: a 0600 file or an
    environment variable of the metalctl process, read when Ironic needs it."""

    driver: Literal["redfish", "ipmi", "fake-hardware"]
    # redfish: the BMC's URL (https://bmc-r1-n1); ipmi: its host or IP (optionally :port).
    address: str | None = None
    username: (
        Annotated[str, _matching(_BMC_USER, "a BMC user name (printable, no spaces)")] | None
    ) = None
    password_file: Annotated[str, AfterValidator(_check_secret_path)] | None = Field(
        None, alias="passwordFile"
    )
    password_env: Annotated[str, _matching(_ENV_NAME, "an environment variable name")] | None = (
        Field(None, alias="passwordEnv")
    )
    # redfish: which system of the BMC (needed when it manages more than one).
    system_id: (
        Annotated[
            str, _matching(_REDFISH_SYSTEM, "a Redfish system path like /redfish/v1/Systems/1")
        ]
        | None
    ) = Field(None, alias="systemId")
    verify_ca: bool = Field(True, alias="verifyCa")
    # Ironic interfaces other than the hardware type's defaults (deploy: direct, ...).
    interfaces: Annotated[
        dict[
            IronicInterface,
            Annotated[
                str, _matching(_IRONIC_INTERFACE_NAME, "an Ironic interface name like direct")
            ],
        ],
        Field(max_length=8),
    ] = Field(default_factory=dict)


class Ironic(_Model):
    """Which Ironic: an endpoint (standalone Ironic, auth: none) or a clouds.yaml cloud."""

    endpoint: Annotated[str, AfterValidator(_check_http_url)] | None = None
    auth: Literal["none"] | None = None
    cloud: Annotated[str, _matching(_CLOUD, "a clouds.yaml cloud name")] | None = None


class Installer(_Model):
    """Install EL9 by kickstart from a mirror instead of writing an image."""

    flavour: Literal["rocky", "alma", "centos-stream"]
    # The flavour's 9 tree, e.g. http://mirror.example/rocky/9 (BaseOS/x86_64/os under it).
    mirror: Annotated[str, AfterValidator(_check_url)]


class Pxe(_Model):
    """Settings of the PXE provisioners (pxe, vmlab)."""

    # An image name from 'metalctl image list' (or its sha256).
    image: Annotated[str, _matching(_IMAGE_REF, "an image name like debian-12")] = "debian-12"
    # The provisioning network: node addresses lie in it; the installed OS gets its node's
    # address with this prefix (no gateway: the network has no route out).
    network: Annotated[str, _matching(_CIDR, "a network like 10.214.0.0/24")]
    # The admin host's package cache (boot serve --package-cache), for networks with no way
    # out: the installed OS's apt goes through it (http://ADDRESS:3142).
    apt_proxy: Annotated[str, AfterValidator(_check_url)] | None = Field(None, alias="aptProxy")
    # Send the image zstd-compressed (the agent decompresses) instead of raw. Raw is the
    # default: under QEMU/TCG the guest's zstd was the bottleneck (~8 MiB/s of raw bytes);
    # on real hardware over a slow link, compressed may win.
    stream_compressed: bool = Field(False, alias="streamCompressed")
    # EL9 by kickstart (image is then unused).
    installer: Installer | None = None


class Packages(_Model):
    """Where the nodes' package manager gets packages: through the admin host's package
    cache (``lab up --package-cache`` fills this in), for nodes with no route out."""

    # apt's HTTP proxy on every Debian node (written to /etc/apt/apt.conf.d by ready_state).
    apt_proxy: Annotated[str, AfterValidator(_check_apt_proxy)] | None = Field(
        None, alias="aptProxy"
    )
    # EL 9 nodes: a mirror of the distribution's 9 tree (BaseOS/ and AppStream/ under it,
    # e.g. http://mirror.example/rocky/9); the roles' dnf then uses it and nothing else.
    el_mirror: Annotated[str, AfterValidator(_check_http_url)] | None = Field(
        None, alias="elMirror"
    )
    # EL 9 nodes: a mirror of https://download.docker.com/linux/centos (its
    # 9/x86_64/stable/ and gpg under it), for Docker CE. Needs elMirror (its dependencies).
    docker_ce_mirror: Annotated[str, AfterValidator(_check_http_url)] | None = Field(
        None, alias="dockerCeMirror"
    )


class Swarm(_Model):
    master: str
    managers: list[str] = Field(max_length=MAX_NODES)
    docker_api_port: Port = Field(2376, alias="dockerApiPort")


class ConsulBinary(_Model):
    url: Annotated[str, AfterValidator(_check_url)]
    sha256: Annotated[str, _matching(_SHA256, "a SHA-256 digest (64 lowercase hex digits)")]


class Consul(_Model):
    servers: list[str] = Field(max_length=MAX_NODES)
    datacenter: Annotated[
        str, _matching(_DATACENTER, "a datacenter name (a-z, 0-9, '-'; at most 64)")
    ] = "dc1"
    version: Annotated[str, _matching(_VERSION, "a Consul version like 1.8.7 or 1.9.0-beta1")] = (
        "1.8.7"
    )
    binary: ConsulBinary | None = None


class Metadata(_Model):
    name: DnsLabel


class ClusterBody(_Model):
    # Which provisioners exist is the provisioner registry's business (its caller checks);
    # here only the shape of the name.
    provisioner: Annotated[
        str, _matching(_PROVISIONER, "a provisioner name (like 'static' or 'lab')")
    ] = "static"
    nodes: list[Node] = Field(min_length=1, max_length=MAX_NODES)
    swarm: Swarm
    consul: Consul
    pxe: Pxe | None = None
    packages: Packages | None = None
    ironic: Ironic | None = None
    # The OS image of every node that names none of its own (ironic).
    image: Image | None = None
    # true: 'deploy' first provisions the nodes not yet ready, through the provisioner
    # (one command for both). Not given (None) is false, and stays out of the stored spec.
    provision: bool | None = None


class ClusterSpec(_Model):
    api_version: Literal["metalctl/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["Cluster"]
    metadata: Metadata
    spec: ClusterBody

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def nodes(self) -> list[Node]:
        return self.spec.nodes

    def node(self, name: str) -> Node:
        for node in self.spec.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def role_of(self, name: str) -> str:
        if name in self.spec.swarm.managers:
            return "manager"
        return self.node(name).swarm_role or "worker"

    def with_node(self, node: Node) -> ClusterSpec:
        """A copy with one more node (validated like any spec)."""
        data = self.model_dump(by_alias=True, exclude_none=True, mode="json")
        data["spec"]["nodes"].append(node.model_dump(by_alias=True, exclude_none=True))
        return parse_spec(yaml.safe_dump(data, sort_keys=False), source=f"cluster {self.name}")

    def to_yaml(self) -> str:
        data = self.model_dump(by_alias=True, exclude_none=True, mode="json")
        return yaml.safe_dump(data, sort_keys=False)


def load_spec_file(path: Path) -> ClusterSpec:
    """Read and validate a spec file. At most MAX_SPEC_BYTES + 1 bytes are read, and
    only from a regular file, so ``-f /dev/zero`` or a huge file cannot eat memory."""
    source = str(path)
    try:
        raw = _read_capped(path)
    except OSError as exc:
        raise _refusal(source, [("file", f"cannot read it: {exc.strerror or exc}")]) from exc
    if raw is None:
        raise _refusal(
            source,
            [("file", "is not a regular file (a device, pipe or directory); give a spec file")],
        )
    return parse_spec(raw, source=source)


def _read_capped(path: Path) -> bytes | None:
    """The first MAX_SPEC_BYTES + 1 bytes of a regular file; None for anything else."""
    # O_NONBLOCK: opening a FIFO that nobody writes to returns at once, to be refused.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with open(fd, "rb", closefd=False) as f:
            return f.read(MAX_SPEC_BYTES + 1)
    finally:
        os.close(fd)


def parse_spec(text: str | bytes, source: str = "<spec>") -> ClusterSpec:
    """Validate a spec (YAML text, or its UTF-8 bytes) completely; raises SpecError
    naming every problem found (at most MAX_PROBLEMS listed)."""
    data = _load_yaml(_decode(text, source), source)
    if not isinstance(data, dict):
        raise _refusal(source, [("(top)", _top_problem(data))])
    try:
        spec = ClusterSpec.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # Only the problems shown are described: a hostile spec can have 50k of them.
        problems = [_describe(err) for err in errors[:MAX_PROBLEMS]]
        raise _refusal(source, problems, total=len(errors)) from exc
    problems = check_rules(spec)
    if problems:
        raise _refusal(source, problems)
    return spec


def _decode(text: str | bytes, source: str) -> str:
    """The spec as text; refused before any parsing when too big, holding NUL bytes
    (a UTF-16 file has them) or not UTF-8."""
    # A str has at least as many bytes as characters: refuse a huge one before encoding.
    too_big = (
        f"is larger than 1 MiB ({MAX_SPEC_BYTES} bytes), the most a spec may be; "
        "is it the right file?"
    )
    if len(text) > MAX_SPEC_BYTES:
        raise _refusal(source, [("file", too_big)])
    try:
        raw = text.encode() if isinstance(text, str) else text
    except UnicodeEncodeError as exc:
        why = f"not UTF-8 text at character {exc.start} (an unpaired surrogate); give UTF-8 text"
        raise _refusal(source, [("file", why)]) from exc
    if len(raw) > MAX_SPEC_BYTES:
        raise _refusal(source, [("file", too_big)])
    nul = raw.find(b"\0")
    if nul >= 0:
        why = f"has a NUL byte at byte {nul}; a spec is UTF-8 text (save it as UTF-8)"
        raise _refusal(source, [("file", why)])
    if isinstance(text, str):
        return text
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        why = f"not UTF-8 text at byte {exc.start}; save the file as UTF-8"
        raise _refusal(source, [("file", why)]) from exc


def _top_problem(data: object) -> str:
    wanted = "a mapping with apiVersion, kind, metadata and spec"
    if data is None:
        return f"the spec is empty; expected {wanted}"
    return f"expected {wanted}, got {_what(data)}"


def _load_yaml(text: str, source: str) -> Any:
    try:
        return read_yaml(text)
    except LoadError as exc:
        raise _refusal(source, [("yaml", str(exc))]) from exc
    except yaml.MarkedYAMLError as exc:
        problem = exc.problem or str(exc)
        if exc.context:
            problem = f"{exc.context}: {problem}"
        why = f"malformed YAML at {at(exc.problem_mark)}: {problem}"
        raise _refusal(source, [("yaml", why)]) from exc
    except yaml.reader.ReaderError as exc:
        why = f"unacceptable character at position {exc.position}: {exc.reason}; remove it"
        raise _refusal(source, [("yaml", why)]) from exc
    except yaml.YAMLError as exc:
        raise _refusal(source, [("yaml", f"malformed YAML: {exc}")]) from exc


def _refusal(source: str, problems: list[tuple[str, str]], total: int | None = None) -> SpecError:
    """A SpecError whose text stays short however many problems (*total*, when only the
    first are given) and however long the values quoted in them."""
    shown = [(_clip(f, _MAX_FIELD), _clip(m, _MAX_MESSAGE)) for f, m in problems[:MAX_PROBLEMS]]
    hidden = (len(problems) if total is None else total) - len(shown)
    if hidden > 0:
        shown.append(
            (f"... and {hidden} more problems", "not shown; fix the ones above and try again")
        )
    return SpecError(source, shown)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _quote(value: object) -> str:
    """A user's value for a message: quoted, escaped, at most MAX_QUOTE characters."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and value.bit_length() > 64:
        return "a very large integer"  # str() of one may be slow, or refused by Python
    if isinstance(value, str):
        return _clip(repr(value[:MAX_QUOTE]), MAX_QUOTE)  # slice first: it may be a megabyte
    if isinstance(value, int | float):
        return repr(value)
    return _kind(value)


def _kind(value: object) -> str:
    kinds: list[tuple[type | tuple[type, ...], str]] = [
        (type(None), "nothing (null)"),
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        (list, "a list"),
        (dict, "a mapping"),
        ((datetime.date, datetime.datetime), "a date"),
        (bytes, "binary data"),
        ((set, frozenset), "a set"),
    ]
    for types, name in kinds:
        if isinstance(value, types):
            return name
    return type(value).__name__


def _what(value: object) -> str:
    """What a user gave, for 'must be X, got ...'."""
    if isinstance(value, bool | int | float | str):
        return f"{_quote(value)} ({_kind(value)})"
    if isinstance(value, datetime.date):
        return f"{value.isoformat()} (a date)"
    return _kind(value)


_EXPECTED = {
    "int_type": "an integer",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _describe(err: ErrorDetails) -> tuple[str, str]:
    field = _field(err["loc"])
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx", {})
    if kind == "extra_forbidden":
        return field, "unknown key; remove it or check its spelling (keys are camelCase)"
    if kind == "missing":
        return field, "required field is missing"
    if kind in _EXPECTED:
        return field, f"must be {_EXPECTED[kind]}, got {_what(value)}{_type_hint(kind, value)}"
    if kind == "invalid_key":
        return field, f"a key must be a string, got {_what(value)}; put it in quotes"
    if kind == "value_error":
        return field, str(ctx.get("error", err["msg"]))
    if kind == "literal_error":
        return field, f"must be {ctx.get('expected')}, got {_what(value)}"
    if kind == "too_long":
        got = len(value) if isinstance(value, list | dict) else ctx.get("actual_length")
        return field, f"may hold at most {ctx.get('max_length')} entries, got {got}"
    if kind == "too_short":
        return field, "must not be empty"
    if kind == "greater_than_equal":
        return field, f"must be at least {ctx.get('ge')}, got {_quote(value)}"
    if kind == "less_than_equal":
        return field, f"must be at most {ctx.get('le')}, got {_quote(value)}"
    return field, f"{err['msg']}, got {_what(value)}"


def _type_hint(kind: str, value: object) -> str:
    if kind == "string_type" and isinstance(value, bool | int | float | datetime.date):
        return "; put it in quotes if it is meant as text"
    if kind == "int_type" and isinstance(value, str):
        return "; write the number without quotes"
    return ""


def _field(loc: tuple[int | str, ...]) -> str:
    """spec.nodes.0.name; a part that a hostile spec made strange is quoted instead."""
    parts = [
        p if isinstance(p, str) and p.isprintable() and len(p) <= 40 else _quote(p) for p in loc
    ]
    return ".".join(str(p) for p in parts) or "(top)"


def check_rules(spec: ClusterSpec) -> list[tuple[str, str]]:
    """Cross-field rules. Returns every problem found (field, message)."""
    sw, consul = spec.spec.swarm, spec.spec.consul
    names = {n.name for n in spec.nodes}
    problems = _check_nodes(spec.nodes)
    # How many managers and servers a workload needs (odd, at most 7) is its workload.yaml's
    # constraints (deploy/workload.py); the spec only checks that they name its nodes.
    problems += _check_members("spec.swarm.managers", sw.managers, names)
    problems += _check_members("spec.consul.servers", consul.servers, names)
    if sw.master not in sw.managers:
        problems.append(
            (
                "spec.swarm.master",
                f"{_quote(sw.master)} is not in spec.swarm.managers; the master must be a manager",
            )
        )
    managers = set(sw.managers)
    for i, node in enumerate(spec.nodes):
        if node.name in managers and node.swarm_role == "worker":
            problems.append(
                (
                    f"spec.nodes.{i}.swarmRole",
                    f"'{node.name}' is in spec.swarm.managers; remove swarmRole or the listing",
                )
            )
    problems += _check_packages(spec)
    return problems + _check_ports(spec) + _check_pxe(spec) + _check_ironic(spec)


def _check_packages(spec: ClusterSpec) -> list[tuple[str, str]]:
    packages = spec.spec.packages
    if packages and packages.docker_ce_mirror and not packages.el_mirror:
        return [
            (
                "spec.packages.dockerCeMirror",
                "needs spec.packages.elMirror too: with a Docker CE mirror the roles' dnf uses "
                "the named mirrors only, and Docker CE's dependencies come from AppStream",
            )
        ]
    return []


def _check_ironic(spec: ClusterSpec) -> list[tuple[str, str]]:
    """The ironic provisioner: where Ironic is, an image for every node, each node's NICs
    and BMC; no MAC claimed twice. Other provisioners would silently ignore these fields,
    so they are refused there."""
    body = spec.spec
    if body.provisioner != IRONIC_PROVISIONER:
        return _ironic_fields_elsewhere(spec)
    problems: list[tuple[str, str]] = []
    if body.ironic is None:
        why = "provisioner 'ironic' needs an ironic: section (endpoint: URL, or cloud: NAME)"
        problems.append(("spec.ironic", why))
    else:
        problems += _check_ironic_section(body.ironic)
    seen: dict[str, str] = {}
    for i, node in enumerate(spec.nodes):
        field = f"spec.nodes.{i}"
        if body.image is None and node.image is None:
            why = "no image: give spec.image (url, sha256) or this node's image"
            problems.append((f"{field}.image", why))
        if not node.macs:
            why = "an Ironic node needs macs: (its NICs' MACs; Ironic's ports)"
            problems.append((f"{field}.macs", why))
        for j, mac in enumerate(node.macs or []):
            first = seen.setdefault(mac, f"{field}.macs.{j}")
            if first != f"{field}.macs.{j}":
                problems.append((f"{field}.macs.{j}", f"duplicate MAC '{mac}' (also {first})"))
        if node.bmc is None:
            why = "an Ironic node needs bmc: (driver: redfish, ipmi or fake-hardware, ...)"
            problems.append((f"{field}.bmc", why))
        else:
            problems += _check_bmc(f"{field}.bmc", node.bmc)
    return problems


def _check_ironic_section(ironic: Ironic) -> list[tuple[str, str]]:
    if (ironic.endpoint is None) == (ironic.cloud is None):
        why = "give exactly one of endpoint: URL (with auth: none) or cloud: NAME (clouds.yaml)"
        return [("spec.ironic", why)]
    if ironic.cloud is not None and ironic.auth is not None:
        why = "auth: is for an endpoint; a clouds.yaml cloud carries its own auth"
        return [("spec.ironic.auth", why)]
    return []


def _check_bmc(field: str, bmc: Bmc) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if bmc.password_file and bmc.password_env:
        why = "give one of passwordFile or passwordEnv, not both"
        problems.append((f"{field}.passwordEnv", why))
    if bmc.driver == "fake-hardware":
        return problems
    if bmc.address is None:
        problems.append((f"{field}.address", f"a {bmc.driver} BMC needs its address"))
    elif bmc.driver == "redfish":
        try:
            _check_http_url(bmc.address)
        except ValueError as exc:
            problems.append((f"{field}.address", f"{exc} (a Redfish BMC's URL)"))
    elif not re.fullmatch(_BMC_HOST, bmc.address):
        why = f"{_quote(bmc.address)} is not a host name or IP address (an IPMI BMC)"
        problems.append((f"{field}.address", why))
    if bmc.username is None:
        problems.append((f"{field}.username", f"a {bmc.driver} BMC needs a username"))
    if not (bmc.password_file or bmc.password_env):
        why = (
            "give passwordFile: (a 0600 file) or passwordEnv: (a variable name); never the password"
        )
        problems.append((f"{field}.passwordFile", why))
    if bmc.system_id is not None and bmc.driver != "redfish":
        problems.append((f"{field}.systemId", "only a redfish BMC has systems"))
    return problems


def _ironic_fields_elsewhere(spec: ClusterSpec) -> list[tuple[str, str]]:
    body, problems = spec.spec, []
    other = f"provisioner '{body.provisioner}' does not use it (only 'ironic' does)"
    for name in ("ironic", "image"):
        if getattr(body, name) is not None:
            problems.append((f"spec.{name}", other))
    for i, node in enumerate(spec.nodes):
        for name in ("macs", "bmc", "image"):
            if getattr(node, name) is not None:
                problems.append((f"spec.nodes.{i}.{name}", other))
    return problems


def _check_pxe(spec: ClusterSpec) -> list[tuple[str, str]]:
    """PXE provisioners: a pxe: section, a machine identity per node, node addresses in
    the provisioning network, no identity claimed by two nodes."""
    pxe = spec.spec.pxe
    if spec.spec.provisioner not in PXE_PROVISIONERS:
        return []
    if pxe is None:
        why = f"provisioner '{spec.spec.provisioner}' needs a pxe: section (network, image)"
        return [("spec.pxe", why)]
    try:
        network = ipaddress.IPv4Network(pxe.network, strict=True)
    except ValueError as exc:
        return [("spec.pxe.network", f"{_quote(pxe.network)} is not a network: {exc}")]
    problems: list[tuple[str, str]] = []
    seen: dict[tuple[str, str], int] = {}
    for i, node in enumerate(spec.nodes):
        ids = [
            (k, v)
            for k, v in (("mac", node.mac), ("serial", node.serial), ("uuid", node.uuid))
            if v
        ]
        if not ids:
            why = "a PXE node needs mac:, serial: or uuid: to find its machine"
            problems.append((f"spec.nodes.{i}", why))
        for key, value in ids:
            first = seen.setdefault((key, value), i)
            if first != i:
                why = f"duplicate {key} '{value}' (also spec.nodes.{first})"
                problems.append((f"spec.nodes.{i}.{key}", why))
        if ipaddress.IPv4Address(node.address) not in network:
            why = f"{node.address} is not in the provisioning network {network}"
            problems.append((f"spec.nodes.{i}.address", why))
    return problems


def _check_ports(spec: ClusterSpec) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    port = spec.spec.swarm.docker_api_port
    if port == PLAIN_DOCKER_PORT:
        problems.append(
            (
                "spec.swarm.dockerApiPort",
                "2375 is Docker's plain-text port; metalctl only serves the API over "
                "mutual TLS (use 2376)",
            )
        )
    elif port in SERVICE_PORTS:
        problems.append(
            (
                "spec.swarm.dockerApiPort",
                f"{port} is the port of {SERVICE_PORTS[port]} on every node; the Docker API "
                "needs a port of its own (use 2376)",
            )
        )
    for i, node in enumerate(spec.nodes):
        ssh = node.ssh.port
        if ssh == port and port not in SERVICE_PORTS:
            why = f"{ssh} is also spec.swarm.dockerApiPort; sshd and Docker need different ports"
            problems.append((f"spec.nodes.{i}.ssh.port", why))
        elif ssh != 22 and ssh in SERVICE_PORTS:
            why = f"{ssh} is the port of {SERVICE_PORTS[ssh]} on every node; sshd cannot have it"
            problems.append((f"spec.nodes.{i}.ssh.port", why))
    return problems


def _check_nodes(nodes: list[Node]) -> list[tuple[str, str]]:
    """Duplicate names and addresses (each address is already a canonical IPv4 address);
    loopback only for a one-node cluster (the admin host itself: other nodes could not
    reach it there)."""
    problems: list[tuple[str, str]] = []
    if len(nodes) > 1:
        problems += [
            (
                f"spec.nodes.{i}.address",
                f"{n.address} is a loopback address, which only a one-node cluster on the "
                "admin host may use; give an address the other nodes reach",
            )
            for i, n in enumerate(nodes)
            if ipaddress.ip_address(n.address).is_loopback
        ]
    seen_names: dict[str, int] = {}
    seen_addrs: dict[str, int] = {}
    for i, node in enumerate(nodes):
        field = f"spec.nodes.{i}"
        first = seen_names.setdefault(node.name, i)
        if first != i:
            problems.append(
                (f"{field}.name", f"duplicate node name '{node.name}' (also spec.nodes.{first})")
            )
        first = seen_addrs.setdefault(node.address, i)
        if first != i:
            problems.append(
                (
                    f"{field}.address",
                    f"duplicate address '{node.address}' (also spec.nodes.{first})",
                )
            )
    return problems


def _check_members(field: str, members: list[str], names: set[str]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    count = len(members)
    if count == 0:
        problems.append((field, "needs at least one node"))
    if len(set(members)) != count:
        problems.append((field, "lists a node more than once"))
    unknown = [m for m in members if m not in names]
    if unknown:
        listed = ", ".join(_quote(m) for m in unknown[:5])
        if len(unknown) > 5:
            listed += f" and {len(unknown) - 5} more"
        problems.append((field, f"names nodes not in spec.nodes: {listed}"))
    return problems
