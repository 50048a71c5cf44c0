"""The facts model: strict, closed, bounded; 400 for what is not JSON, 422 naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metalctl.boot.facts import MAX_ITEMS, MAX_TEXT, Facts, decode_facts
from metalctl.boot.refused import Refused
from tests.integration.boot_support import MAC_A, facts


def _decode(doc: Any) -> Facts:
    return decode_facts(json.dumps(doc).encode())


def _problem_fields(doc: Any) -> list[str]:
    with pytest.raises(Refused) as err:
        _decode(doc)
    assert err.value.status == 422
    return [field for field, _ in err.value.problems]


def test_valid_facts_accepted_and_macs_lowercased() -> None:
    parsed = _decode(facts(MAC_A.upper()))
    assert parsed.macs == [MAC_A]
    assert parsed.cpu.count == 4 and parsed.boot_mode == "bios"
    minimal = facts(MAC_A, dmi={}, disks=[])
    minimal["nics"] = [{"mac": MAC_A, "name": "eth0", "link": False}]
    assert _decode(minimal).nics[0].speed_mbps is None


def _nic(i: int) -> dict[str, Any]:
    return {"mac": f"52:54:00:00:{i // 256:02x}:{i % 256:02x}", "name": f"e{i}", "link": True}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"memory_bytes": 8.0}, "memory_bytes"),
        ({"memory_bytes": True}, "memory_bytes"),
        ({"memory_bytes": -1}, "memory_bytes"),
        ({"memory_bytes": 2**63}, "memory_bytes"),
        ({"cpu": {"count": "4", "model": "x"}}, "cpu.count"),
        ({"cpu": {"count": 0, "model": "x"}}, "cpu.count"),
        ({"cpu": {"count": 1}}, "cpu.model"),
        ({"boot_mode": "UEFI"}, "boot_mode"),
        ({"nics": []}, "nics"),
        ({"nics": [_nic(i) for i in range(MAX_ITEMS + 1)]}, "nics"),
        ({"nics": [_nic(1), _nic(1)]}, "nics"),
        ({"nics": [{**_nic(1), "mac": "52:54:00:00:00"}]}, "nics.0.mac"),
        ({"nics": [{**_nic(1), "mac": "5254.0000.000a"}]}, "nics.0.mac"),
        ({"nics": [{**_nic(1), "link": "up"}]}, "nics.0.link"),
        ({"nics": [{**_nic(1), "speed_mbps": -10}]}, "nics.0.speed_mbps"),
        ({"disks": [{"name": "d", "size_bytes": 1}] * (MAX_ITEMS + 1)}, "disks"),
        ({"disks": [{"name": "d", "size_bytes": 1, "rotational": 0}]}, "disks.0.rotational"),
        ({"disks": [{"name": "d" * (MAX_TEXT + 1), "size_bytes": 1}]}, "disks.0.name"),
        ({"dmi": {"uuid": 42}}, "dmi.uuid"),
        ({"dmi": {"asset_tag": "x"}}, "dmi.asset_tag"),
        ({"extra": 1}, "extra"),
    ],
)
def test_invalid_facts_name_the_field(change: dict[str, Any], field: str) -> None:
    assert field in _problem_fields({**facts(MAC_A), **change})


def test_missing_fields_and_a_non_object_body_are_named() -> None:
    assert sorted(_problem_fields({})) == [
        "boot_mode",
        "cpu",
        "disks",
        "dmi",
        "memory_bytes",
        "nics",
    ]
    assert _problem_fields([facts(MAC_A)]) == ["(body)"]


def test_long_lists_of_problems_are_capped_in_the_message() -> None:
    nics = [{"mac": "bad", "name": 1, "link": "x"} for _ in range(MAX_ITEMS)]
    with pytest.raises(Refused) as err:
        _decode({**facts(MAC_A), "nics": nics})
    assert len(err.value.problems) == 20 and "more" in err.value.message


@pytest.mark.parametrize(
    "body", [b"", b"{", b"nul", b'{"a": NaN}', b"[Infinity]", b"\xc3\x28", b"[" * 100_000]
)
def test_what_is_not_json_is_400(body: bytes) -> None:
    with pytest.raises(Refused) as err:
        decode_facts(body)
    assert err.value.status == 400 and err.value.message.startswith("body is not")


@settings(max_examples=300, deadline=None, database=None)
@given(st.one_of(st.binary(max_size=512), st.text(max_size=512).map(str.encode)))
def test_any_bytes_are_facts_or_a_4xx_refusal(body: bytes) -> None:
    try:
        decode_facts(body)
    except Refused as exc:
        assert exc.status in (400, 422)
