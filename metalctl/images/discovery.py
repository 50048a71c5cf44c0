"""The discovery image: Debian's kernel and a small initramfs holding the agent.

One image serves both agent modes (``metalctl.mode=discover|deploy``, see
docs/pxe-provisioning.md). It is built offline, as root, from what the host's package
manager already knows:

- the kernel: the package ``linux-image-amd64`` depends on (``linux-image-6.x-amd64``),
  fetched with ``apt-get download`` into ``downloads/`` and unpacked with ``dpkg -x``;
  ``vmlinuz`` plus only the modules the agent needs (``MODULES`` and what they depend on,
  read from each module's own ``.modinfo`` ``depends=``: the package ships no modules.dep);
- busybox from ``busybox-static`` (every applet a symlink), the ``zstd`` binary and a few
  GNU coreutils (``GNU_TOOLS``: the image stream's tee/sha256sum/dd) with the shared
  libraries ``ldd`` lists;
- the agent: ``metalctl/images/agent/{init,agent.sh,udhcpc.script}`` (package data).

The result lives in ``cache_root()/discovery/RECIPE/{vmlinuz,initrd.img,recipe.json}``.
RECIPE hashes the kernel package and version, the busybox, zstd and coreutils versions, the agent
files' bytes, the module list and ``BUILD_FORMAT``: a change to any of them builds anew,
nothing else does. A build happens in a temporary directory renamed into place, so a crash
leaves no half image behind.
"""

from __future__ import annotations

import gzip
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from metalctl.errors import HostSetupError
from metalctl.images.cache import cache_root, recipe_hash, write_json_atomic

Say = Callable[[str], None]

# Bump when the build procedure changes in a way the other inputs do not show.
BUILD_FORMAT = "1"
KERNEL_META_PACKAGE = "linux-image-amd64"
AGENT_FILES = ("init", "agent.sh", "udhcpc.script")
# From coreutils (Essential in Debian), for the image stream (_stage_binaries).
GNU_TOOLS = ("cat", "dd", "head", "sha256sum", "tee")
GNU_DIR = "lib/metalctl/gnu"
# Loaded in this order (each after what it depends on). crc32c is a soft dependency of
# ext4/jbd2 (the kernel asks for it at mount time, and there is no modprobe to answer).
MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
    "virtio_blk",
    "virtio_scsi",
    "e1000",
    "e1000e",
    "scsi_mod",
    "sd_mod",
    "libata",
    "libahci",
    "ahci",
    "nvme_core",
    "nvme",
    # Common server NICs and HBAs (real machines; none needs firmware files to probe).
    "igb",
    "ixgbe",
    "i40e",
    "bnxt_en",
    "tg3",
    "r8169",
    "megaraid_sas",
    "mpt3sas",
    "crc32c_generic",
    "crc32c_intel",
    "crc16",
    "mbcache",
    "jbd2",
    "ext4",
)
# Not in every kernel build (built in, or renamed): leave them out rather than fail.
OPTIONAL_MODULES = frozenset(
    {"virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_ring", "crc32c_intel"}
)

_TOOL_SECONDS = 120.0
_DOWNLOAD_SECONDS = 900.0
_DEB_NAME = re.compile(r"linux-image-[0-9][A-Za-z0-9.+~-]*-amd64")
_MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst")


@dataclass(frozen=True)
class DiscoveryImage:
    recipe: str
    kernel: Path
    initrd: Path


@dataclass(frozen=True)
class _Inputs:
    kernel_package: str
    kernel_version: str
    busybox_version: str
    zstd_version: str
    coreutils_version: str
    agent: dict[str, bytes]

    def recipe(self) -> str:
        parts: list[str | bytes] = [
            f"format={BUILD_FORMAT}",
            f"kernel={self.kernel_package}={self.kernel_version}",
            f"busybox-static={self.busybox_version}",
            f"zstd={self.zstd_version}",
            f"coreutils={self.coreutils_version}:{GNU_DIR}:" + ",".join(GNU_TOOLS),
            "modules=" + ",".join(MODULES),
        ]
        for name in AGENT_FILES:
            parts += [f"agent/{name}", self.agent[name]]
        return recipe_hash(parts)


def discovery_dir() -> Path:
    return cache_root() / "discovery"


def find_discovery() -> DiscoveryImage | None:
    """The cached image for the current recipe; None when it is not built (or the host
    cannot say what the recipe is: ``build_discovery`` then says what is missing)."""
    try:
        inputs = _inputs()
    except HostSetupError:
        return None
    return _cached(inputs.recipe())


def build_discovery(say: Say, *, force: bool = False) -> DiscoveryImage:
    """Build (or reuse) the discovery image for the current recipe; root only."""
    inputs = _inputs()
    recipe = inputs.recipe()
    if not force:
        found = _cached(recipe)
        if found is not None:
            say(f"discovery image {recipe} is cached: {found.kernel.parent}")
            return found
    if os.geteuid() != 0:
        raise HostSetupError(
            "building the discovery image needs root (device nodes, ownership in the initramfs)",
            hint="run as root (sudo)",
        )
    for tool, package in (("cpio", "cpio"), ("dpkg", "dpkg"), ("ldd", "libc-bin")):
        _need(tool, package)
    started = time.monotonic()
    parent = discovery_dir()
    parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(parent)
    work = Path(tempfile.mkdtemp(prefix=f".build-{recipe}-{os.getpid()}-", dir=parent))
    try:
        deb = _download_kernel(inputs, say)
        say(f"unpacking {deb.name}")
        unpacked = work / "deb"
        _run(["dpkg", "-x", str(deb), str(unpacked)], "dpkg -x")
        kernel_release, vmlinuz = _kernel_in(unpacked)
        out = work / "out"
        out.mkdir()
        shutil.copyfile(vmlinuz, out / "vmlinuz")
        root = work / "root"
        modules = _stage_modules(unpacked / "lib" / "modules" / kernel_release, root)
        say(f"kernel {kernel_release}: {len(modules)} modules (the listed ones and what they need)")
        _stage_busybox(root)
        _stage_binaries(root)
        _stage_agent(root, inputs.agent)
        say("packing the initramfs (cpio newc, gzip)")
        _pack(root, out / "initrd.img")
        shutil.rmtree(unpacked)
        write_json_atomic(
            out / "recipe.json",
            {
                "recipe": recipe,
                "format": BUILD_FORMAT,
                "kernel_package": inputs.kernel_package,
                "kernel_version": inputs.kernel_version,
                "kernel_release": kernel_release,
                "busybox_version": inputs.busybox_version,
                "zstd_version": inputs.zstd_version,
                "coreutils_version": inputs.coreutils_version,
                "gnu_tools": list(GNU_TOOLS),
                "modules": modules,
                "initrd_bytes": (out / "initrd.img").stat().st_size,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )
        _install(out, parent / recipe, force=force)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    image = _cached(recipe)
    if image is None:  # renamed into place a moment ago
        raise HostSetupError(f"discovery image {recipe} vanished from {parent} after its build")
    size = image.initrd.stat().st_size / (1 << 20)
    say(
        f"discovery image {recipe} built in {time.monotonic() - started:.0f} s "
        f"(initramfs {size:.1f} MiB): {image.kernel.parent}"
    )
    return image


# --- what goes in ---------------------------------------------------------------------


def _inputs() -> _Inputs:
    package = _kernel_package()
    return _Inputs(
        kernel_package=package,
        kernel_version=_candidate_version(package),
        busybox_version=_installed_version("busybox-static"),
        zstd_version=_installed_version("zstd"),
        coreutils_version=_installed_version("coreutils"),
        agent=_agent_files(),
    )


def _agent_files() -> dict[str, bytes]:
    base = resources.files("metalctl.images") / "agent"
    found: dict[str, bytes] = {}
    for name in AGENT_FILES:
        entry = base / name
        if not entry.is_file():
            raise HostSetupError(
                f"the agent file metalctl/images/agent/{name} is missing from this installation",
                hint="reinstall metalctl (the agent files are package data)",
            )
        found[name] = entry.read_bytes()
    return found


def _kernel_package() -> str:
    """The real kernel package behind the meta package (linux-image-6.1.0-NN-amd64)."""
    _need("apt-cache", "apt")
    out = _run(["apt-cache", "depends", KERNEL_META_PACKAGE], "apt-cache depends")
    for line in out.splitlines():
        key, _, value = line.strip().partition(":")
        value = value.strip()
        if key == "Depends" and _DEB_NAME.fullmatch(value):
            return value
    raise HostSetupError(
        f"apt-cache does not know which kernel {KERNEL_META_PACKAGE} stands for",
        hint="run 'apt-get update' (the package lists may be missing)",
    )


def _candidate_version(package: str) -> str:
    out = _run(["apt-cache", "policy", package], "apt-cache policy")
    for line in out.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "Candidate" and value.strip() and value.strip() != "(none)":
            return value.strip()
    raise HostSetupError(
        f"no version of {package} can be downloaded",
        hint="run 'apt-get update' (the package lists may be missing)",
    )


def _installed_version(package: str) -> str:
    dpkg_query = shutil.which("dpkg-query")
    done = (
        subprocess.run(
            [dpkg_query, "-W", "-f=${Status}\t${Version}", package],
            capture_output=True,
            text=True,
            timeout=_TOOL_SECONDS,
            check=False,
        )
        if dpkg_query
        else None
    )
    if done is not None and done.returncode == 0:
        status, _, version = done.stdout.partition("\t")
        if status.endswith(" installed") and version:
            return version
    raise HostSetupError(
        f"the Debian package {package} is not installed (the discovery image takes its binary)",
        hint=f"apt-get install {package}",
    )


# --- the kernel and its modules --------------------------------------------------------


def _download_kernel(inputs: _Inputs, say: Say) -> Path:
    downloads = cache_root() / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    want = f"{inputs.kernel_package}_{inputs.kernel_version.replace(':', '%3a')}_amd64.deb"
    target = downloads / want
    if target.is_file() and _deb_ok(target):
        say(f"kernel package {want} is in the download cache")
        return target
    _need("apt-get", "apt")
    say(f"downloading {inputs.kernel_package} {inputs.kernel_version} (apt-get download)")
    fetch = Path(tempfile.mkdtemp(prefix=".fetch-", dir=downloads))
    try:
        fetch.chmod(0o755)  # apt's unprivileged _apt user writes here when it can
        _run(
            ["apt-get", "download", "-q", f"{inputs.kernel_package}={inputs.kernel_version}"],
            "apt-get download",
            cwd=fetch,
            timeout=_DOWNLOAD_SECONDS,
            hint="the host must reach Debian's archive (or a mirror) for the kernel package",
        )
        got = sorted(fetch.glob("*.deb"))
        if len(got) != 1 or not _deb_ok(got[0]):
            raise HostSetupError(f"apt-get download left no usable .deb for {want} in {fetch}")
        os.replace(got[0], target)
    finally:
        shutil.rmtree(fetch, ignore_errors=True)
    return target


def _deb_ok(path: Path) -> bool:
    done = subprocess.run(
        ["dpkg-deb", "--contents", str(path)],
        capture_output=True,
        timeout=_TOOL_SECONDS,
        check=False,
    )
    return done.returncode == 0


def _kernel_in(unpacked: Path) -> tuple[str, Path]:
    kernels = sorted((unpacked / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise HostSetupError(f"expected one vmlinuz in the kernel package, found {len(kernels)}")
    release = kernels[0].name.removeprefix("vmlinuz-")
    if not (unpacked / "lib" / "modules" / release).is_dir():
        raise HostSetupError(f"the kernel package has no lib/modules/{release}")
    return release, kernels[0]


def module_name(path: Path) -> str:
    name = path.name
    for suffix in _MODULE_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.replace("-", "_")


def _module_index(moddir: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for path in (moddir / "kernel").rglob("*.ko*"):
        if path.name.endswith(_MODULE_SUFFIXES):
            index.setdefault(module_name(path), path)
    return index


def _builtin(moddir: Path) -> set[str]:
    listed = moddir / "modules.builtin"
    if not listed.is_file():
        return set()
    return {module_name(Path(line.strip())) for line in listed.read_text().splitlines() if line}


def _module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".zst"):
        return subprocess.run(
            ["zstd", "-dc"], input=data, capture_output=True, check=True, timeout=_TOOL_SECONDS
        ).stdout
    return data


def modinfo(data: bytes) -> dict[str, list[str]]:
    """The ``.modinfo`` section of an ELF64 little-endian module: key -> values."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not an ELF64 little-endian object")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = []
    for i in range(shnum):
        name, _type, _flags, _addr, offset, size = struct.unpack_from(
            "<IIQQQQ", data, shoff + i * shentsize
        )
        sections.append((name, offset, size))
    _, str_off, str_size = sections[shstrndx]
    strtab = data[str_off : str_off + str_size]
    info: dict[str, list[str]] = {}
    for name, offset, size in sections:
        if strtab[name : strtab.index(b"\0", name)] != b".modinfo":
            continue
        for entry in data[offset : offset + size].split(b"\0"):
            key, sep, value = entry.decode("utf-8", "replace").partition("=")
            if sep:
                info.setdefault(key, []).append(value)
    return info


def _stage_modules(moddir: Path, root: Path) -> list[str]:
    """Copy MODULES and their dependencies into the initramfs, uncompressed; write the
    load order (dependencies first) to lib/metalctl/modules. Returns that order."""
    index = _module_index(moddir)
    builtin = _builtin(moddir)
    order: list[str] = []
    blobs: dict[str, bytes] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in blobs or name in builtin:
            return
        if name in chain:
            raise HostSetupError(f"module dependency loop: {' -> '.join((*chain, name))}")
        path = index.get(name)
        if path is None:
            if name in OPTIONAL_MODULES:
                return
            raise HostSetupError(
                f"kernel module {name} is neither a module nor built into {moddir.name}",
                hint="the discovery image expects a Debian amd64 kernel",
            )
        data = _module_bytes(path)
        for deps in modinfo(data).get("depends", []):
            for dep in filter(None, deps.split(",")):
                visit(dep.replace("-", "_"), (*chain, name))
        blobs[name] = data
        order.append(name)

    for name in MODULES:
        visit(name, ())
    target = root / "lib" / "modules"
    target.mkdir(parents=True)
    for name in order:
        (target / f"{name}.ko").write_bytes(blobs[name])
    meta = root / "lib" / "metalctl"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "modules").write_text("".join(f"{name}\n" for name in order))
    return order


# --- busybox, zstd, the agent, the archive ---------------------------------------------


def _stage_busybox(root: Path) -> None:
    busybox = Path("/bin/busybox")
    if not busybox.is_file():
        found = shutil.which("busybox")
        busybox = Path(found) if found else busybox
    if not busybox.is_file() or _shared_libraries(busybox):
        raise HostSetupError(
            "a static busybox is needed for the discovery image",
            hint="apt-get install busybox-static",
        )
    bindir = root / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(busybox, bindir / "busybox")
    (bindir / "busybox").chmod(0o755)
    applets = _run([str(busybox), "--list"], "busybox --list").split()
    for applet in applets:
        if applet != "busybox" and "/" not in applet:
            os.symlink("busybox", bindir / applet)
    (root / "sbin").symlink_to("bin")
    (root / "usr").mkdir(exist_ok=True)
    (root / "usr" / "bin").symlink_to("../bin")
    (root / "usr" / "sbin").symlink_to("../bin")


def _stage_binaries(root: Path) -> None:
    """zstd in /bin, and GNU coreutils in /lib/metalctl/gnu for the image stream: busybox's
    tee, sha256sum and head copy in small blocks, which under QEMU TCG made a 64 MiB write
    take 50 s instead of 7 s (and GNU dd counts the bytes it wrote). busybox's ash runs
    its own applets before anything on PATH, so the agent calls these by their path."""
    wanted = [("zstd", "zstd", root / "bin")]
    wanted += [(tool, "coreutils", root / GNU_DIR) for tool in GNU_TOOLS]
    for name, package, where in wanted:
        found = shutil.which(name)
        if found is None:
            raise HostSetupError(f"{name} not found", hint=f"apt-get install {package}")
        _stage_binary(root, Path(found).resolve(), where / name)


def _stage_binary(root: Path, binary: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    shutil.copyfile(binary, dest)
    dest.chmod(0o755)
    for lib in _shared_libraries(binary):
        target = root / lib.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            shutil.copyfile(lib.resolve(), target)
            target.chmod(0o755)


def _shared_libraries(binary: Path) -> list[Path]:
    """What ``ldd`` lists (the dynamic loader included); [] for a static binary."""
    done = subprocess.run(
        ["ldd", str(binary)], capture_output=True, text=True, timeout=_TOOL_SECONDS, check=False
    )
    if done.returncode != 0:  # "not a dynamic executable"
        return []
    libs: list[Path] = []
    for line in done.stdout.splitlines():
        words = line.split()
        if "=>" in words:
            after = words[words.index("=>") + 1 :]
            if after and after[0].startswith("/"):
                libs.append(Path(after[0]))
            elif after and after[0] == "not":
                raise HostSetupError(f"{binary} needs {words[0]}, which is not found")
        elif words and words[0].startswith("/"):
            libs.append(Path(words[0]))  # the loader: /lib64/ld-linux-x86-64.so.2
    return libs


def _stage_agent(root: Path, agent: dict[str, bytes]) -> None:
    for name in ("dev", "proc", "sys", "tmp", "run", "mnt", "etc", "root"):
        (root / name).mkdir(exist_ok=True)
    os.mknod(root / "dev" / "console", 0o600 | 0o020000, os.makedev(5, 1))
    os.mknod(root / "dev" / "null", 0o666 | 0o020000, os.makedev(1, 3))
    (root / "init").write_bytes(agent["init"])
    (root / "init").chmod(0o755)
    meta = root / "lib" / "metalctl"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "agent.sh").write_bytes(agent["agent.sh"])
    (meta / "udhcpc.script").write_bytes(agent["udhcpc.script"])
    (meta / "udhcpc.script").chmod(0o755)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")


def _pack(root: Path, target: Path) -> None:
    names = sorted(_relative_paths(root))
    listing = "".join(f"{name}\n" for name in names).encode()
    done = subprocess.run(
        ["cpio", "-o", "-H", "newc", "-R", "0:0", "--quiet", "--reproducible"],
        cwd=root,
        input=listing,
        capture_output=True,
        timeout=_TOOL_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        raise HostSetupError(f"cpio failed: {done.stderr.decode(errors='replace').strip()}")
    with open(target, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out:
        out.write(done.stdout)


def _relative_paths(root: Path) -> Iterable[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel != ".":
            yield rel
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            yield os.path.normpath(os.path.join(rel, name))


# --- the cache ---------------------------------------------------------------------------


def _cached(recipe: str) -> DiscoveryImage | None:
    where = discovery_dir() / recipe
    kernel, initrd, record = where / "vmlinuz", where / "initrd.img", where / "recipe.json"
    if not (kernel.is_file() and initrd.is_file() and record.is_file()):
        return None
    try:
        if json.loads(record.read_text()).get("recipe") != recipe:
            return None
    except (OSError, ValueError, AttributeError):
        return None
    return DiscoveryImage(recipe=recipe, kernel=kernel, initrd=initrd)


def _install(built: Path, final: Path, *, force: bool) -> None:
    """Rename the finished build into place; an image already there is kept unless
    ``force`` (then it is swapped out, and removed once the new one is in place)."""
    old: Path | None = None
    if final.exists():
        if not force:
            return  # another build of the same recipe finished first: identical inputs
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.rename(final, old)
    try:
        os.rename(built, final)
    except OSError:
        if not final.exists():
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_stale_builds(parent: Path) -> None:
    """Temporary directories of builds whose process is gone (killed mid-build)."""
    for entry in parent.iterdir():
        match = re.fullmatch(r"\.(?:build|old)-[0-9a-f]+-(\d+)(?:-.*)?", entry.name)
        if match and entry.is_dir() and not _alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- running tools ------------------------------------------------------------------------


def _need(tool: str, package: str) -> None:
    if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin:/sbin") is None:
        raise HostSetupError(
            f"{tool} not found (needed to build the discovery image)",
            hint=f"apt-get install {package}",
        )


def _run(
    argv: list[str],
    what: str,
    *,
    cwd: Path | None = None,
    timeout: float = _TOOL_SECONDS,
    hint: str | None = None,
) -> str:
    try:
        done = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise HostSetupError(f"{what} did not finish in {timeout:g} s", hint=hint) from exc
    except OSError as exc:
        raise HostSetupError(f"{what} could not run: {exc}", hint=hint) from exc
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise HostSetupError(
            f"{what} failed (exit {done.returncode}): {' / '.join(said)}", hint=hint
        )
    return done.stdout
