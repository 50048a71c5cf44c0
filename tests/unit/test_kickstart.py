"""The EL9 kickstart (metalctl/boot/templates/el9.ks.j2) and its iPXE installer script.

No EL9 mirror is reachable here, so nothing is installed: every variant is rendered and
checked by pykickstart's ksvalidator for RHEL9 (and a broken kickstart is shown to fail it),
the disk-finding %pre is run against a fake lsblk, and the content a user relies on is
asserted line by line.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from metalctl.boot import installer
from metalctl.boot.kickstart import KickstartParams, render_kickstart
from metalctl.errors import UsageError
from metalctl.sshkeys import public_key

MAC = "52:54:00:12:34:56"
MIRROR = "http://10.0.0.1/rocky/9"
BASE = "http://10.0.0.1:8080"
TOKEN = "Tok3n_-" + "x" * 36
SERIAL = "QM00001-ABC"
BY_ID = "/dev/disk/by-id/ata-QEMU_HARDDISK_QM00001"


@pytest.fixture(scope="module")
def key() -> str:
    with tempfile.TemporaryDirectory() as home:
        return public_key(Path(home)).strip()


@pytest.fixture(scope="module")
def ksvalidator() -> str:
    beside = Path(sys.executable).parent / "ksvalidator"
    found = str(beside) if beside.exists() else shutil.which("ksvalidator")
    if found is None:
        pytest.fail("ksvalidator not found: install the dev extras (pykickstart>=3.48)")
    return found


def _params(key: str, **changes: Any) -> KickstartParams:
    values: dict[str, Any] = {
        "hostname": "node1",
        "ssh_public_key": key,
        "mirror_url": MIRROR,
        "mac": MAC,
        "token": TOKEN,
        "base_url": BASE,
    }
    values.update(changes)
    return KickstartParams(**values)


def _validate(ksvalidator: str, text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "ks.cfg"
    path.write_text(text)
    return subprocess.run(
        [ksvalidator, "-v", "RHEL9", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _commands(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def _command(text: str, name: str) -> str:
    (line,) = [ln for ln in _commands(text) if ln.split()[0] == name]
    return line


def _section(text: str, header: str) -> str:
    """The body of the one %pre/%post whose header line starts with *header*."""
    match = re.search(rf"^{re.escape(header)}[^\n]*\n(.*?)^%end$", text, re.M | re.S)
    assert match, f"no {header} section"
    return match.group(1)


STATIC: dict[str, Any] = {
    "address": "10.0.0.11",
    "prefix": 24,
    "gateway": "10.0.0.1",
    "nameservers": ("10.0.0.1",),
}

VARIANTS: dict[str, dict[str, Any]] = {
    "rocky-dhcp-first-disk": {},
    "rocky-static-disk-name": {**STATIC, "root_device": "sda"},
    "alma-dhcp-serial": {"flavour": "alma", "root_device": f"serial:{SERIAL}"},
    "alma-static-by-id": {"flavour": "alma", **STATIC, "root_device": BY_ID},
    "stream-dhcp-nvme-ntp": {
        "flavour": "centos-stream",
        "mirror_url": "https://mirror.stream.centos.org/9-stream/",
        "root_device": "nvme0n1",
        "ntp_servers": ("10.0.0.1", "ntp.example.org"),
    },
    "stream-static-no-gateway-by-path": {
        "flavour": "centos-stream",
        "address": "192.168.10.5",
        "prefix": 26,
        "root_device": "/dev/disk/by-path/pci-0000:00:1f.2-ata-1",
    },
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_is_a_valid_rhel9_kickstart(
    variant: str, key: str, ksvalidator: str, tmp_path: Path
) -> None:
    params = _params(key, **VARIANTS[variant])
    text = render_kickstart(params)
    result = _validate(ksvalidator, text, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # Nothing the validator only warned about either.
    assert "warning" not in (result.stdout + result.stderr).lower()

    mirror = params.mirror_url.rstrip("/")
    assert _command(text, "url") == f"url --url={mirror}/BaseOS/x86_64/os"
    assert f"--baseurl={mirror}/AppStream/x86_64/os" in _command(text, "repo")
    network = _command(text, "network")
    assert f"--device={MAC}" in network and "--hostname=node1" in network.split()
    assert _command(text, "sshkey") == f'sshkey --username=root "{key}"'
    assert _command(text, "rootpw") == "rootpw --lock"
    assert _command(text, "selinux") == "selinux --enforcing"
    assert _command(text, "firewall") == "firewall --enabled --service=ssh"
    assert _command(text, "reboot") == "reboot"
    # BIOS and UEFI alike: the platform's partitions come from reqpart, none are spelt out.
    assert "reqpart" in _commands(text)
    assert not [ln for ln in _commands(text) if "biosboot" in ln or "/boot/efi" in ln]


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_token_is_only_in_the_result_report(variant: str, key: str) -> None:
    text = render_kickstart(_params(key, **VARIANTS[variant]))
    assert text.count(TOKEN) == 1
    (line,) = [ln for ln in text.splitlines() if TOKEN in ln]
    assert line.startswith("curl -fsS ")
    assert f'-X POST -H "Authorization: Bearer {TOKEN}"' in line
    assert '--data "status=ok"' in line
    assert line.endswith(f" {BASE}/v1/deploy/result")
    assert line in _section(text, "%post --nochroot")


def test_static_address_on_the_nic_matched_by_mac(key: str) -> None:
    text = render_kickstart(_params(key, **STATIC, mac="52:54:00:AB:CD:EF"))
    assert _command(text, "network") == (
        "network --device=52:54:00:ab:cd:ef --bootproto=static --ip=10.0.0.11 "
        "--netmask=255.255.255.0 --gateway=10.0.0.1 --nameserver=10.0.0.1 --ipv6=auto "
        "--onboot=yes --no-activate --hostname=node1"
    )


def test_dhcp_when_no_address(key: str) -> None:
    assert _command(render_kickstart(_params(key)), "network") == (
        f"network --device={MAC} --bootproto=dhcp --onboot=yes --no-activate --hostname=node1"
    )


@pytest.mark.parametrize(
    ("hint", "device"),
    [("sda", "sda"), ("nvme0n1", "nvme0n1"), (BY_ID, BY_ID.removeprefix("/dev/"))],
)
def test_a_named_disk_is_the_only_one_used_and_cleared(key: str, hint: str, device: str) -> None:
    text = render_kickstart(_params(key, root_device=hint))
    assert _command(text, "ignoredisk") == f"ignoredisk --only-use={device}"
    assert _command(text, "clearpart") == f"clearpart --all --initlabel --drives={device}"
    assert "%pre" not in text and "%include" not in text


def test_ntp_servers_become_chrony_sources(key: str) -> None:
    text = render_kickstart(_params(key, ntp_servers=("10.0.0.1", "ntp.example.org")))
    sources = [ln for ln in _commands(text) if ln.startswith("timesource ")]
    assert sources == [
        "timesource --ntp-server=10.0.0.1",
        "timesource --ntp-server=ntp.example.org",
    ]
    assert not [ln for ln in _commands(render_kickstart(_params(key))) if "timesource" in ln]


@pytest.mark.parametrize(
    ("flavour", "os_id"), [("rocky", "rocky"), ("alma", "almalinux"), ("centos-stream", "centos")]
)
def test_post_checks_the_installed_distribution(key: str, flavour: str, os_id: str) -> None:
    post = _section(render_kickstart(_params(key, flavour=flavour)), "%post --interpreter")
    assert f'[ "$ID" != "{os_id}" ]' in post


# --- the %pre that finds the disk, run against a fake lsblk ---

LSBLK = """\
sda disk 1 0 USBSTICK1
sdb disk 0 0 QM00002
sdc disk 0 0 QM00001-ABC
sr0 rom 1 0 QM00003
vda disk 0 1 RO-DISK
zram0 disk 0 0
"""


def _run_pre(
    text: str, tmp_path: Path, lsblk: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    fake = tmp_path / "bin" / "lsblk"
    fake.parent.mkdir()
    # Only the machine-readable listing is faked; the diagnostic listing prints nothing.
    fake.write_text('#!/bin/bash\ncase "$*" in *--raw*) cat <<"EOF"\n' + lsblk + "EOF\n;; esac\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    out = tmp_path / "disk.ks"
    script = _section(text, "%pre").replace("/tmp/metalctl-disk.ks", str(out))
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=env, timeout=30, check=False
    )
    return result, out


@pytest.mark.parametrize(("hint", "disk"), [(None, "sdb"), (f"serial:{SERIAL}", "sdc")])
def test_pre_finds_the_disk_and_the_result_validates(
    key: str, ksvalidator: str, tmp_path: Path, hint: str | None, disk: str
) -> None:
    text = render_kickstart(_params(key, root_device=hint))
    result, out = _run_pre(text, tmp_path, LSBLK)
    assert result.returncode == 0, result.stderr
    assert f"metalctl: installing on {disk}" in result.stdout
    included = out.read_text()
    assert included == (
        f"ignoredisk --only-use={disk}\nclearpart --all --initlabel --drives={disk}\n"
    )
    merged = text.replace("%include /tmp/metalctl-disk.ks\n", included)
    assert merged != text
    checked = _validate(ksvalidator, merged, tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("hint", [None, "serial:NOSUCHDISK"])
def test_pre_stops_the_install_when_no_disk_fits(
    key: str, tmp_path: Path, hint: str | None
) -> None:
    text = render_kickstart(_params(key, root_device=hint))
    assert "%pre --interpreter=/bin/bash --erroronfail" in text
    lsblk = "sda disk 1 0 USB\nsr0 rom 1 0 X\nzram0 disk 0 0\n"
    result, out = _run_pre(text, tmp_path, lsblk if hint is None else LSBLK)
    assert result.returncode == 1
    assert "metalctl: no disk found" in result.stderr
    assert not out.exists()


# --- the check can fail ---


@pytest.mark.parametrize(
    ("good", "bad"),
    [
        ("selinux --enforcing", "selinx --enforcing"),  # misspelled command
        ("rootpw --lock", "rootpw --locked"),  # unknown option
        ("%packages\n", "%pakages\n"),  # misspelled section
    ],
)
def test_a_broken_kickstart_fails_ksvalidator(
    key: str, ksvalidator: str, tmp_path: Path, good: str, bad: str
) -> None:
    text = render_kickstart(_params(key, root_device="sda"))
    assert good in text
    result = _validate(ksvalidator, text.replace(good, bad, 1), tmp_path)
    assert result.returncode != 0, result.stdout


# --- hostile or wrong values are refused, naming the field ---

HOSTILE = [
    ("hostname", "node1\nrootpw --plaintext x"),
    ("hostname", "Node_1"),
    ("hostname", "node1 --bootproto=dhcp"),
    ("ssh_public_key", "ssh-ed25519 AAAA\nrootpw --plaintext x"),
    ("ssh_public_key", "not a key"),
    ("ssh_public_key", "ssh-ed25519 AAAAC3NzaC1yc2EAAAA= x"),  # ssh-rsa data under ed25519
    ("mirror_url", "ftp://10.0.0.1/rocky/9"),
    ("mirror_url", "http://10.0.0.1/rocky 9"),
    ("mirror_url", "http://10.0.0.1/rocky/9?x=$(reboot)"),
    ("mirror_url", 'http://10.0.0.1/"rocky'),
    ("mirror_url", "http:///rocky/9"),
    ("mac", "52:54:00:12:34"),
    ("mac", "52:54:00:12:34:56\n"),
    ("token", 'abc"def' * 4),
    ("token", "short"),
    ("base_url", "http://10.0.0.1:8080/`reboot`"),
    ("base_url", "10.0.0.1:8080"),
    ("flavour", "rhel"),
    ("root_device", "/dev/sda"),
    ("root_device", "sda;reboot"),
    ("root_device", "/dev/disk/by-id/../../sda"),
    ("root_device", "serial:a b"),
    ("root_device", 'serial:a"b'),
    ("console", "console=ttyS0\nreboot"),
    ("console", 'console=ttyS0" x'),
    ("ntp_servers", ("ntp.example.org;reboot",)),
]


@pytest.mark.parametrize(("field", "value"), HOSTILE)
def test_hostile_values_are_refused_naming_the_field(key: str, field: str, value: object) -> None:
    with pytest.raises(UsageError) as caught:
        _params(key, **{field: value})
    assert field in str(caught.value)


def test_a_key_comment_with_a_quote_is_refused(key: str) -> None:
    with pytest.raises(UsageError, match="ssh_public_key: the key's comment"):
        _params(key, ssh_public_key=key + '" --username=other')


def test_a_key_with_its_trailing_newline_is_refused_with_a_hint(key: str) -> None:
    with pytest.raises(UsageError, match="ssh_public_key must be one line"):
        _params(key, ssh_public_key=key + "\n")


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"address": "10.0.0.11"}, "prefix"),
        ({"address": "10.0.0.0", "prefix": 24}, "address 10.0.0.0"),
        ({"address": "10.0.0.300", "prefix": 24}, "address"),
        ({"address": "10.0.0.11", "prefix": 24, "gateway": "10.0.1.1"}, "gateway"),
        ({"address": "10.0.0.11", "prefix": 24, "nameservers": ("x",)}, "nameservers[0]"),
        ({"prefix": 24}, "prefix is set but address is not"),
        ({"nameservers": ["10.0.0.1"]}, "nameservers must be a tuple"),
    ],
)
def test_inconsistent_network_settings_are_refused(
    key: str, changes: dict[str, Any], words: str
) -> None:
    with pytest.raises(UsageError, match=re.escape(words)):
        _params(key, **changes)


def test_params_are_frozen(key: str) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        _params(key).hostname = "other"  # type: ignore[misc]


# --- the iPXE script that boots the installer ---


def test_installer_script_boots_the_mirrors_installer_with_the_kickstart() -> None:
    script = installer.render_el9_installer(
        installer.El9InstallerScript(
            mac="52:54:00:AB:CD:EF",
            mirror_url=MIRROR + "/",
            base_url=BASE,
            machine_id="m-0123456789ab",
        )
    )
    assert script.startswith("#!ipxe\n")
    kernel, initrd, boot = _commands(script)
    tree = f"{MIRROR}/BaseOS/x86_64/os"
    assert kernel == (
        f"kernel {tree}/images/pxeboot/vmlinuz initrd=initrd.img inst.repo={tree} "
        f"inst.ks={BASE}/v1/deploy/kickstart?mac=52:54:00:ab:cd:ef ip=dhcp "
        "BOOTIF=01-52-54-00-ab-cd-ef console=tty0 console=ttyS0,115200n8"
    )
    assert initrd == f"initrd --name initrd.img {tree}/images/pxeboot/initrd.img"
    assert boot == "boot"
    assert "machine m-0123456789ab" in script and "Rocky Linux 9" in script


def test_installer_script_follows_flavour_and_console() -> None:
    script = installer.render_el9_installer(
        installer.El9InstallerScript(
            mac=MAC,
            mirror_url="https://repo.almalinux.org/almalinux/9",
            base_url=BASE,
            flavour="alma",
            kernel_args="console=ttyS1,9600",
        )
    )
    kernel = _commands(script)[0]
    assert kernel.startswith(
        "kernel https://repo.almalinux.org/almalinux/9/BaseOS/x86_64/os/images/pxeboot/vmlinuz "
    )
    assert kernel.endswith(" console=ttyS1,9600")
    assert "AlmaLinux 9" in script


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mac", "nope"),
        ("mirror_url", "http://10.0.0.1/x y"),
        ("base_url", "http://10.0.0.1/$x"),
        ("flavour", "fedora"),
        ("kernel_args", "console=ttyS0\nshell"),
        ("machine_id", "m 1"),
    ],
)
def test_installer_script_refuses_bad_values(field: str, value: str) -> None:
    values: dict[str, Any] = {"mac": MAC, "mirror_url": MIRROR, "base_url": BASE, field: value}
    with pytest.raises(UsageError) as caught:
        installer.El9InstallerScript(**values)
    assert field in str(caught.value)
