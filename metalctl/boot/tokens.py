"""Per-boot discovery tokens: issued with each discovery iPXE script, redeemed by one facts POST.

A token is 32 random bytes (urlsafe base64); only its SHA-256 is stored (a stolen database
reveals no usable token; a plain hash suffices because the token is random, not a password).
It is bound to the MAC that booted, expires after a short TTL and works once. Each refusal
has its own reason so that an operator can tell a late agent from a replay.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

from metalctl.boot.config import DEFAULT_TOKEN_TTL
from metalctl.store import MACHINE_DISCOVERED, BootTokenRecord, DiscoveryAttempt, Store

TOKEN_BYTES = 32
# Used and expired tokens are kept this long, so that a late or repeated POST hears
# "expired" or "already used" rather than "unknown"; older ones are deleted on issue.
KEEP_SPENT_SECONDS = 3600.0
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")  # token_urlsafe(32): 43 characters


@dataclass(frozen=True)
class TokenRefusal:
    code: str  # unknown | used | expired | other-mac | closed
    message: str


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Issued:
    token: str
    mac: str
    expires_at: float


def issue(
    store: Store, mac: str, *, ttl: float = DEFAULT_TOKEN_TTL, now: float | None = None
) -> Issued:
    """A new token for the machine booting with ``mac``; the store keeps only its hash."""
    at = time.time() if now is None else now
    token = new_token()
    store.add_boot_token(
        token_hash(token),
        mac,
        issued_at=at,
        expires_at=at + ttl,
        forget_before=at - KEEP_SPENT_SECONDS,
    )
    return Issued(token, mac.lower(), at + ttl)


def looks_like_token(token: str) -> bool:
    return bool(_TOKEN_SHAPE.fullmatch(token))


def lookup(store: Store, token: str) -> BootTokenRecord | None:
    """The stored record of ``token``; None for anything this service did not issue."""
    if not looks_like_token(token):
        return None
    return store.get_boot_token(token_hash(token))


def check_token(record: BootTokenRecord | None, now: float) -> TokenRefusal | None:
    """Refusals that need no facts: unknown, already used, expired."""
    if record is None:
        return TokenRefusal(
            "unknown",
            "boot token not recognised: it was not issued by this boot service "
            "(or so long ago that it was deleted); reboot the machine for a new one",
        )
    if record.used_at is not None:
        return TokenRefusal(
            "used",
            f"boot token for {record.mac} was already used for a discovery at "
            f"{_stamp(record.used_at)}; each boot's token is good for one report, "
            "reboot the machine to report again",
        )
    if now >= record.expires_at:
        return TokenRefusal(
            "expired",
            f"boot token for {record.mac} expired at {_stamp(record.expires_at)} "
            f"(issued {_stamp(record.issued_at)}); reboot the machine for a new one",
        )
    return None


def check_discovery(attempt: DiscoveryAttempt) -> TokenRefusal | None:
    """All refusals, read inside the discovery transaction: the token's own, then whether
    it was issued to one of the reporting machine's NICs and whether that machine is still
    open to discovery."""
    refusal = check_token(attempt.token, attempt.now)
    if refusal is not None or attempt.token is None:
        return refusal
    if attempt.token.mac not in attempt.macs:
        return TokenRefusal(
            "other-mac",
            f"boot token was issued to MAC {attempt.token.mac}, which is not among the "
            f"NICs in these facts ({', '.join(attempt.macs)}): a token only vouches for "
            "the machine that booted with it",
        )
    machine = attempt.machine
    if machine is not None and machine.state != MACHINE_DISCOVERED:
        return TokenRefusal(
            "closed",
            f"machine {machine.id} ({machine.primary_mac}) is {machine.state}: discovery "
            "reports are taken only from machines not yet enrolled or provisioned",
        )
    return None


def _stamp(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
