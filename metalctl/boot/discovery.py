"""The steps of a discovery POST, free of HTTP plumbing, in the order the server runs them:

    bearer_token -> precheck (token known, unused, unexpired) -> body_length
    -> (read the body) -> facts.decode_facts -> redeem (one transaction)

Every step refuses with Refused(4xx, reason); nothing is written before ``redeem``, and
``redeem`` writes all (token used, machine, event) or nothing.
"""

from __future__ import annotations

import time

from metalctl.boot import tokens
from metalctl.boot.facts import MAX_BODY_BYTES, Facts
from metalctl.boot.refused import Refused
from metalctl.store import MachineRecord, Store

# More digits than any length we accept: refuse before int() (which caps digits at 4300).
_MAX_LENGTH_DIGITS = 20


def bearer_token(authorization: str | None) -> str:
    if not authorization or not authorization.strip():
        raise Refused(
            401,
            "no boot token: send 'Authorization: Bearer TOKEN' with the metalctl.token= "
            "of this boot's kernel command line",
        )
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Refused(401, "the Authorization header must be 'Bearer TOKEN' (a boot token)")
    return value.strip()


def precheck(store: Store, token: str, now: float | None = None) -> None:
    """Refuse a token that is unknown, used or expired before its body is even read."""
    at = time.time() if now is None else now
    refusal = tokens.check_token(tokens.lookup(store, token), at)
    if refusal is not None:
        raise Refused(403, refusal.message)


def body_length(
    content_lengths: list[str], transfer_encoding: str | None, limit: int = MAX_BODY_BYTES
) -> int:
    """The body's size from its Content-Length header(s), refused when absent, unclear or
    over ``limit``: the limit holds before a byte of the body is read."""
    if transfer_encoding is not None:
        raise Refused(411, "send the facts with a Content-Length, not a Transfer-Encoding")
    if not content_lengths:
        raise Refused(411, f"Content-Length is required (facts are at most {limit} bytes)")
    values = {v.strip() for v in content_lengths}
    if len(values) > 1:
        raise Refused(400, f"conflicting Content-Length headers: {', '.join(sorted(values))}")
    text = values.pop()
    if not (text.isascii() and text.isdigit()):
        raise Refused(400, f"Content-Length {text[:40]!r} is not a number of bytes")
    if len(text) > _MAX_LENGTH_DIGITS or int(text) > limit:
        raise Refused(413, f"body of {text[:40]} bytes is over the {limit}-byte limit for facts")
    return int(text)


def redeem(store: Store, token: str, facts: Facts, now: float | None = None) -> MachineRecord:
    """Use ``token`` for ``facts``: the machine discovered (new or updated), or Refused(403)
    with the reason; a report that matches two machines is a ConflictError (409)."""
    with store.discovery(
        facts.model_dump(mode="json"), token_hash=tokens.token_hash(token), now=now
    ) as attempt:
        refusal = tokens.check_discovery(attempt)
        if refusal is not None:
            raise Refused(403, refusal.message)
    assert attempt.result is not None  # discovery() sets it when the body did not raise
    return attempt.result
