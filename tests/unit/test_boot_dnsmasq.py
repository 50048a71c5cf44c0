"""dnsmasq configuration for the boot service: full and proxy DHCP, the architecture
mapping, IPv6 router advertisements, refused settings; dnsmasq itself checks the files."""

from __future__ import annotations

import shutil
import subprocess
from ipaddress import IPv4Address, IPv4Interface, IPv6Network
from pathlib import Path
from typing import Any

import pytest

from metalctl.boot.dnsmasq import DnsmasqConfig, loader_for, render, stage_tftp_root
from metalctl.errors import HostSetupError, UsageError

STATE = Path("/var/lib/metalctl/boot")
URL = "http://10.66.0.1:8080/boot.ipxe?mac=${net0/mac}&platform=${platform}"


def config(**changes: Any) -> DnsmasqConfig:
    settings: dict[str, Any] = {
        "interface": "br-prov",
        "address": IPv4Interface("10.66.0.1/24"),
        "http_port": 8080,
        "state_dir": STATE,
        "dhcp_range": (IPv4Address("10.66.0.100"), IPv4Address("10.66.0.199")),
    }
    settings.update(changes)
    return DnsmasqConfig(**settings)


def lines(cfg: DnsmasqConfig) -> list[str]:
    return [ln for ln in render(cfg).splitlines() if ln and not ln.startswith("#")]


def test_full_mode_hands_out_the_range_with_authority_on_one_interface_only() -> None:
    got = lines(config())
    for expected in [
        "dhcp-range=10.66.0.100,10.66.0.199,255.255.255.0,1h",
        "dhcp-authoritative",
        "interface=br-prov",
        "except-interface=lo",
        "bind-interfaces",
        "port=0",
        "log-dhcp",
        "dhcp-leasefile=/var/lib/metalctl/boot/dnsmasq.leases",
        "enable-tftp",
        "tftp-root=/var/lib/metalctl/boot/tftp",
        "dhcp-option=option:router",  # no default gateway handed out
    ]:
        assert expected in got
    assert not [ln for ln in got if ln.startswith("pxe-service")]


def test_full_mode_boot_files_by_architecture_and_the_ipxe_chain() -> None:
    got = lines(config())
    assert "dhcp-match=set:bios,option:client-arch,0" in got
    assert "dhcp-match=set:efi64,option:client-arch,7" in got
    assert "dhcp-match=set:efi64,option:client-arch,9" in got
    assert "dhcp-userclass=set:ipxe,iPXE" in got
    assert "dhcp-match=set:ipxe,175" in got
    boots = sorted(ln for ln in got if ln.startswith("dhcp-boot="))
    assert boots == [
        "dhcp-boot=tag:!ipxe,tag:bios,undionly.kpxe",
        "dhcp-boot=tag:!ipxe,tag:efi64,snponly.efi",
        f"dhcp-boot=tag:ipxe,{URL}",
    ]


def test_ipxe_efi_can_replace_snponly() -> None:
    got = lines(config(efi_loader="ipxe.efi"))
    assert "dhcp-boot=tag:!ipxe,tag:efi64,ipxe.efi" in got
    assert not [ln for ln in got if "snponly" in ln]


def test_proxy_mode_answers_pxe_only_without_authority() -> None:
    got = lines(config(dhcp_range=None))
    assert "dhcp-range=10.66.0.0,proxy,255.255.255.0" in got
    assert "dhcp-authoritative" not in got
    assert not [ln for ln in got if ln.startswith("dhcp-boot")]
    services = [ln for ln in got if ln.startswith("pxe-service=")]
    assert services == [
        'pxe-service=tag:!ipxe,x86PC,"metalctl: iPXE",undionly.kpxe',
        f'pxe-service=tag:ipxe,x86PC,"metalctl: boot",{URL}',
        'pxe-service=tag:!ipxe,BC_EFI,"metalctl: iPXE",snponly.efi',
        f'pxe-service=tag:ipxe,BC_EFI,"metalctl: boot",{URL}',
        'pxe-service=tag:!ipxe,X86-64_EFI,"metalctl: iPXE",snponly.efi',
        f'pxe-service=tag:ipxe,X86-64_EFI,"metalctl: boot",{URL}',
    ]


def test_router_advertisements_only_with_a_ula_prefix() -> None:
    assert "enable-ra" not in lines(config())
    got = lines(config(ra_prefix=IPv6Network("fd12:3456:789a::/64")))
    assert "enable-ra" in got
    assert "dhcp-range=fd12:3456:789a::,ra-only,64" in got
    assert "ra-param=br-prov,0,0" in got  # router lifetime 0: no IPv6 default route


@pytest.mark.parametrize(
    ("arch", "ipxe", "efi", "expected"),
    [
        (0, False, "snponly.efi", "undionly.kpxe"),
        (7, False, "snponly.efi", "snponly.efi"),
        (9, False, "snponly.efi", "snponly.efi"),
        (9, False, "ipxe.efi", "ipxe.efi"),
        (0, True, "snponly.efi", URL),
        (9, True, "snponly.efi", URL),
        (6, False, "snponly.efi", None),  # 32-bit UEFI: nothing to give it
        (11, False, "snponly.efi", None),  # ARM64 UEFI
    ],
)
def test_architecture_mapping(arch: int, ipxe: bool, efi: str, expected: str | None) -> None:
    assert loader_for(arch, ipxe=ipxe, chain_url=URL, efi_loader=efi) == expected


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        (
            {"dhcp_range": (IPv4Address("10.66.1.10"), IPv4Address("10.66.1.20"))},
            "not inside 10.66.0.0/24",
        ),
        ({"dhcp_range": (IPv4Address("10.66.0.0"), IPv4Address("10.66.0.20"))}, "not inside"),
        (
            {"dhcp_range": (IPv4Address("10.66.0.20"), IPv4Address("10.66.0.10"))},
            "ends before it starts",
        ),
        (
            {"dhcp_range": (IPv4Address("10.66.0.1"), IPv4Address("10.66.0.9"))},
            "own address 10.66.0.1",
        ),
        ({"interface": "br0\nport=53"}, "not an interface name"),
        ({"interface": "a-very-long-interface"}, "not an interface name"),
        ({"state_dir": Path("relative/dir")}, "absolute path"),
        ({"state_dir": Path("/srv/a,b")}, "absolute path"),
        ({"efi_loader": "grubx64.efi"}, "grubx64.efi"),
        ({"http_port": 0}, "HTTP port 0"),
        ({"lease_time": "1h\nport=53"}, "lease time"),
    ],
)
def test_bad_settings_are_refused_naming_the_problem(changes: dict[str, Any], named: str) -> None:
    with pytest.raises(UsageError) as err:
        config(**changes)
    assert named in str(err.value)


def test_stage_tftp_root_copies_world_readable_binaries(tmp_path: Path) -> None:
    ipxe = tmp_path / "ipxe"
    ipxe.mkdir()
    for name in ("undionly.kpxe", "snponly.efi", "ipxe.efi"):
        (ipxe / name).write_bytes(name.encode() * 10)
    cfg = config(state_dir=tmp_path / "state")
    staged = stage_tftp_root(cfg, ipxe)
    assert sorted(p.name for p in staged) == ["ipxe.efi", "snponly.efi", "undionly.kpxe"]
    for path in staged:
        assert path.parent == cfg.tftp_root
        assert path.read_bytes() == (ipxe / path.name).read_bytes()
        assert path.stat().st_mode & 0o777 == 0o644


def test_stage_tftp_root_names_the_missing_package(tmp_path: Path) -> None:
    with pytest.raises(HostSetupError) as err:
        stage_tftp_root(config(state_dir=tmp_path / "state"), tmp_path / "no-ipxe")
    assert "undionly.kpxe" in str(err.value)
    assert "apt-get install ipxe" in str(err.value)


DNSMASQ = shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin")


@pytest.mark.skipif(DNSMASQ is None, reason="needs dnsmasq (Debian: dnsmasq-base; make setup)")
@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"dhcp_range": None},
        {"efi_loader": "ipxe.efi", "lease_time": "infinite"},
        {"ra_prefix": IPv6Network("fd12:3456:789a::/64")},
        {"dhcp_range": None, "ra_prefix": IPv6Network("fd12:3456:789a::/64")},
    ],
    ids=["full", "proxy", "full-ipxe-efi", "full-ra", "proxy-ra"],
)
def test_dnsmasq_accepts_the_rendered_config(tmp_path: Path, changes: dict[str, Any]) -> None:
    assert DNSMASQ is not None
    cfg = config(state_dir=tmp_path, **changes)
    cfg.config_path.write_text(render(cfg))
    done = subprocess.run(
        [DNSMASQ, "--test", "-C", str(cfg.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "syntax check OK" in done.stderr + done.stdout


@pytest.mark.skipif(DNSMASQ is None, reason="needs dnsmasq (Debian: dnsmasq-base; make setup)")
def test_dnsmasq_test_catches_a_broken_file(tmp_path: Path) -> None:
    """The check the server runs before starting dnsmasq really refuses bad files."""
    from metalctl.boot.dnsmasq_process import check_config

    broken = tmp_path / "bad.conf"
    broken.write_text(render(config(state_dir=tmp_path)) + "dhcp-range=not-an-address\n")
    with pytest.raises(UsageError) as err:
        check_config(broken)
    assert "dnsmasq refuses the configuration" in str(err.value)
