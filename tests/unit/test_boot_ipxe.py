"""iPXE scripts: discovery for unknown/discovered MACs, the local disk once provisioned."""

from __future__ import annotations

import pytest

from metalctl.boot import ipxe
from metalctl.boot.config import BootConfig
from metalctl.errors import UsageError
from metalctl.store import MachineRecord
from tests.integration.boot_support import MAC_A, facts

BASE = "http://10.0.0.1:8080"
TOKEN = "t" * 43


def _machine(state: str, boot_mode: str = "bios", cluster: str | None = None) -> MachineRecord:
    return MachineRecord(
        id="m-0123456789ab",
        primary_mac=MAC_A,
        macs=(MAC_A,),
        smbios_uuid=None,
        serial=None,
        facts=facts(MAC_A, boot_mode=boot_mode),
        state=state,
        cluster=cluster,
        node=None if cluster is None else "n1",
        first_seen=0.0,
        last_seen=0.0,
    )


def _discovery(config: BootConfig | None = None) -> str:
    script = ipxe.DiscoveryScript(MAC_A, TOKEN, 0.0, BASE)
    return ipxe.render_discovery(script, config or BootConfig())


def _commands(script: str) -> list[str]:
    """The script's commands: what is left without the #!ipxe line and comments."""
    return [ln for ln in script.splitlines() if ln.strip() and not ln.startswith("#")]


def test_what_each_state_boots() -> None:
    assert ipxe.boot_action(None) == "discovery"
    assert ipxe.boot_action(_machine("discovered")) == "discovery"
    assert ipxe.boot_action(_machine("provisioned")) == "local"
    assert ipxe.boot_action(_machine("enrolled")) == "wait"


def test_discovery_script_boots_the_discovery_image_with_token_and_mac() -> None:
    script = _discovery()
    assert script.startswith("#!ipxe\n")
    kernel, initrd, boot = _commands(script)
    assert kernel.startswith(f"kernel {BASE}/files/discovery/vmlinuz initrd=initrd.img ")
    assert kernel.endswith(f"metalctl.url={BASE} metalctl.token={TOKEN} metalctl.mac={MAC_A}")
    assert initrd == f"initrd --name initrd.img {BASE}/files/discovery/initrd.img"
    assert boot == "boot"


def test_discovery_script_follows_the_settings() -> None:
    config = BootConfig(discovery_kernel="d/k", discovery_initrd="d/i", kernel_args="quiet")
    kernel, initrd, _ = _commands(_discovery(config))
    assert kernel.startswith(
        f"kernel {BASE}/files/d/k initrd=initrd.img quiet metalctl.mode=discover metalctl.url="
    )
    assert initrd.endswith(f"{BASE}/files/d/i")


@pytest.mark.parametrize(("mode", "platform"), [("bios", None), ("uefi", "pcbios")])
def test_provisioned_bios_machine_boots_its_local_disk_not_discovery(
    mode: str, platform: str | None
) -> None:
    machine = _machine("provisioned", mode)
    script = ipxe.render_local(MAC_A, machine, ipxe.firmware(machine, platform))
    assert _commands(script) == ["sanboot --no-describe --drive 0x80 || exit"]
    assert "kernel" not in script and "token" not in script


@pytest.mark.parametrize(("mode", "platform"), [("uefi", None), ("bios", "efi")])
def test_provisioned_uefi_machine_exits_to_the_firmware(mode: str, platform: str | None) -> None:
    machine = _machine("provisioned", mode)
    script = ipxe.render_local(MAC_A, machine, ipxe.firmware(machine, platform))
    assert _commands(script) == ["exit"]


def test_enrolled_machine_waits_and_asks_again_without_discovery() -> None:
    machine = _machine("enrolled", cluster="rack1")
    script = ipxe.render_wait(MAC_A, machine, BASE, BootConfig(wait_retry_seconds=7))
    commands = _commands(script)
    assert commands[1:] == [
        "sleep 7",
        f"chain --replace --autofree {BASE}/boot.ipxe?mac={MAC_A}&platform=${{platform}}",
    ]
    assert "cluster rack1, node n1" in script
    assert "kernel" not in script and "token" not in script


@pytest.mark.parametrize(
    "settings",
    [
        {"token_ttl": 0},
        {"token_ttl": float("nan")},
        {"request_timeout": -1},
        {"base_url": "http://host:80/ x"},
        {"base_url": "ftp://host"},
        {"kernel_args": "quiet\nshell"},
        {"discovery_kernel": "../vmlinuz"},
        {"discovery_initrd": "/abs/initrd"},
    ],
)
def test_settings_that_would_break_a_script_are_refused(settings: dict[str, object]) -> None:
    with pytest.raises(UsageError, match=next(iter(settings))):
        BootConfig(**settings)  # type: ignore[arg-type]
