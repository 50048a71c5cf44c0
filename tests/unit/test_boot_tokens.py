"""Per-boot tokens: random, stored only as a hash, bound to one MAC, short-lived, single-use."""

from __future__ import annotations

import base64
import sqlite3

import pytest

from metalctl.boot import tokens
from metalctl.boot.discovery import precheck, redeem
from metalctl.boot.facts import Facts
from metalctl.boot.refused import Refused
from metalctl.store import Store
from tests.integration.boot_support import MAC_A, MAC_B, facts

T0 = 1_800_000_000.0


def _facts(*macs: str) -> Facts:
    return Facts.model_validate(facts(*macs), strict=True)


def test_token_is_32_random_urlsafe_bytes_and_only_its_hash_is_stored(store: Store) -> None:
    issued = tokens.issue(store, MAC_A.upper(), ttl=60, now=T0)
    assert len(base64.urlsafe_b64decode(issued.token + "=")) == 32
    assert issued.mac == MAC_A and issued.expires_at == T0 + 60
    assert tokens.issue(store, MAC_A, now=T0).token != issued.token
    with sqlite3.connect(store.path) as db:
        rows = db.execute("SELECT * FROM boot_tokens").fetchall()
    assert len(rows) == 2
    assert not any(issued.token in str(value) for row in rows for value in row)
    record = store.get_boot_token(tokens.token_hash(issued.token))
    assert record is not None and record.mac == MAC_A and record.used_at is None


def test_default_lifetime_is_fifteen_minutes(store: Store) -> None:
    issued = tokens.issue(store, MAC_A, now=T0)
    assert issued.expires_at == T0 + 15 * 60


def test_fresh_token_passes(store: Store) -> None:
    issued = tokens.issue(store, MAC_A, ttl=60, now=T0)
    assert tokens.check_token(tokens.lookup(store, issued.token), T0 + 59) is None
    machine = redeem(store, issued.token, _facts(MAC_A), now=T0 + 1)
    assert machine.primary_mac == MAC_A and machine.state == "discovered"


@pytest.mark.parametrize("token", ["", "short", "A" * 43, "A" * 42 + "!", "x" * 10_000])
def test_unknown_or_malformed_token_refused(store: Store, token: str) -> None:
    refusal = tokens.check_token(tokens.lookup(store, token), T0)
    assert refusal is not None and refusal.code == "unknown"


def test_expired_token_refused(store: Store) -> None:
    issued = tokens.issue(store, MAC_A, ttl=60, now=T0)
    refusal = tokens.check_token(tokens.lookup(store, issued.token), T0 + 60)
    assert refusal is not None and refusal.code == "expired"
    assert MAC_A in refusal.message and "reboot" in refusal.message
    with pytest.raises(Refused) as err:
        precheck(store, issued.token, now=T0 + 61)
    assert err.value.status == 403


def test_token_is_single_use(store: Store) -> None:
    issued = tokens.issue(store, MAC_A, ttl=60, now=T0)
    redeem(store, issued.token, _facts(MAC_A), now=T0 + 1)
    refusal = tokens.check_token(tokens.lookup(store, issued.token), T0 + 2)
    assert refusal is not None and refusal.code == "used"
    with pytest.raises(Refused, match="already used"):
        redeem(store, issued.token, _facts(MAC_A), now=T0 + 2)


def test_token_only_vouches_for_the_mac_that_booted(store: Store) -> None:
    issued = tokens.issue(store, MAC_B, ttl=60, now=T0)
    with pytest.raises(Refused, match=f"issued to MAC {MAC_B}") as err:
        redeem(store, issued.token, _facts(MAC_A), now=T0 + 1)
    assert err.value.status == 403
    assert store.list_machines() == []
    # Still unused: the refusal changed nothing.
    record = store.get_boot_token(tokens.token_hash(issued.token))
    assert record is not None and record.used_at is None
    # The booting NIC may be any of the machine's NICs, and becomes its primary MAC.
    assert redeem(store, issued.token, _facts(MAC_A, MAC_B), now=T0 + 1).primary_mac == MAC_B


@pytest.mark.parametrize("state", ["enrolled", "provisioned"])
def test_token_refused_once_the_machine_left_discovered(store: Store, state: str) -> None:
    redeem(store, tokens.issue(store, MAC_A, now=T0).token, _facts(MAC_A), now=T0)
    later = tokens.issue(store, MAC_A, now=T0)
    store.set_machine_state(MAC_A, state, "test")
    with pytest.raises(Refused, match=f"is {state}"):
        redeem(store, later.token, _facts(MAC_A), now=T0 + 1)
    assert store.get_machine(MAC_A).state == state


def test_spent_tokens_are_deleted_after_the_retention_period(store: Store) -> None:
    old = tokens.issue(store, MAC_A, ttl=60, now=T0)
    late = T0 + 60 + tokens.KEEP_SPENT_SECONDS + 1
    tokens.issue(store, MAC_B, ttl=60, now=late)
    assert store.get_boot_token(tokens.token_hash(old.token)) is None
