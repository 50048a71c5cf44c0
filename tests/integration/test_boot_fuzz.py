"""Property-based fuzz of the discovery endpoint over real HTTP: whatever the body and
headers, the answer is a 201 or a 4xx with a JSON reason, a refusal writes nothing, and
the service is still up afterwards."""

from __future__ import annotations

import http.client
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from metalctl.boot import BootConfig
from tests.integration.boot_support import MAC_A, MAC_B, Running, facts, running

MACS = [MAC_A, MAC_B, "52:54:00:00:00:0c", "52:54:00:AA:00:0D"]

# Header values http.client will send (latin-1, no line breaks).
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=80,
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=25,
)


def _field(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a well-formed value, sometimes anything JSON."""
    return st.one_of(good, good, json_values)


nics = st.lists(
    st.fixed_dictionaries(
        {
            "mac": _field(st.sampled_from(MACS)),
            "name": _field(st.text(max_size=300)),
            "link": _field(st.booleans()),
        },
        optional={"speed_mbps": _field(st.integers(min_value=-1, max_value=2**64))},
    ),
    min_size=0,
    max_size=4,
)
facts_like = st.fixed_dictionaries(
    {
        "nics": _field(nics),
        "cpu": _field(
            st.fixed_dictionaries({"count": st.integers(0, 4), "model": st.text(max_size=20)})
        ),
        "memory_bytes": _field(st.integers(min_value=-1, max_value=2**64)),
        "disks": _field(st.just([])),
        "dmi": _field(st.fixed_dictionaries({}, optional={"uuid": st.uuids().map(str)})),
        "boot_mode": _field(st.sampled_from(["bios", "uefi", "efi"])),
    },
    optional={"extra": json_values},
)
VALID = b"valid facts for the booting MAC"
bodies = st.one_of(
    st.just(VALID),
    facts_like.map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=1024),
    st.text(max_size=300).map(str.encode),
)
authorizations = st.one_of(
    st.just("valid"), st.just("valid"), st.none(), header_text, header_text.map("Bearer ".__add__)
)
lengths = st.one_of(
    st.just("exact"), st.just("exact"), st.none(), header_text, st.integers(0, 70_000).map(str)
)
extra_headers = st.dictionaries(
    st.sampled_from(["Content-Type", "X-Metalctl", "Accept", "Transfer-Encoding", "Expect"]),
    header_text,
    max_size=3,
)


def _post(boot: Running, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", boot.service.port, timeout=15)
    try:
        conn.putrequest("POST", "/v1/discovery", skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        conn.send(body)
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def test_discovery_endpoint_never_fails_with_5xx_or_dies(tmp_path: Path) -> None:
    # Short socket timeout: a declared length longer than the body costs 0.3 s, not 10.
    with running(tmp_path, BootConfig(request_timeout=0.3)) as boot:

        @settings(
            max_examples=200,
            deadline=timedelta(seconds=5),
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(
            mac=st.sampled_from(MACS[:3]),
            body=bodies,
            authorization=authorizations,
            length=lengths,
            headers=extra_headers,
        )
        def one_request(
            mac: str,
            body: bytes,
            authorization: str | None,
            length: str | None,
            headers: dict[str, str],
        ) -> None:
            token = boot.token_for(mac)
            if body == VALID:
                body = json.dumps(facts(mac, uuid=None)).encode()
            sent = dict(headers)
            if authorization is not None:
                sent["Authorization"] = (
                    f"Bearer {token}" if authorization == "valid" else authorization
                )
            if length is not None:
                sent["Content-Length"] = str(len(body)) if length == "exact" else length
            before = boot.snapshot()
            status, reply = _post(boot, body, sent)
            assert status == 201 or 400 <= status < 500, (status, reply)
            event(f"status {status}")  # shown by --hypothesis-show-statistics
            answer = json.loads(reply)
            if status == 201:
                assert answer["state"] == "discovered"
            else:
                assert isinstance(answer["error"], str) and answer["error"]
                assert not boot.written_since(before), (status, answer)

        one_request()
        assert boot.request("GET", "/healthz").status == 200
        assert boot.service.alive()
