"""A request the boot service refuses: an HTTP 4xx status and a reason the client can act on."""

from __future__ import annotations

from collections.abc import Sequence

from metalctl.errors import MetalctlError


class Refused(MetalctlError):
    """Raised by the request steps; the HTTP layer answers ``status`` + {"error": message}.

    ``problems`` lists (field, message) for facts that fail validation (422).
    """

    def __init__(
        self, status: int, message: str, *, problems: Sequence[tuple[str, str]] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.problems = list(problems)
