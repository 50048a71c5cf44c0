"""The facts a discovery image reports about its machine, and how a request body becomes them.

Strict (no coercion: "4" is not a count, 1 is not a bool) and closed (unknown keys are
refused), with bounds on every list, string and number so that a body of at most
MAX_BODY_BYTES is also small once parsed.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from metalctl.boot.refused import Refused

MAX_BODY_BYTES = 64 * 1024
MAX_ITEMS = 64
MAX_TEXT = 256
MAX_PROBLEMS_REPORTED = 20

MAC_PATTERN = r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$"

Text = Annotated[str, StringConstraints(max_length=MAX_TEXT)]
Size = Annotated[int, Field(ge=0, lt=2**63)]
# Stored and compared in lowercase colon form, whatever case the agent sends.
Mac = Annotated[str, StringConstraints(pattern=MAC_PATTERN), AfterValidator(str.lower)]


class _Closed(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Nic(_Closed):
    mac: Mac
    name: Text
    link: bool
    speed_mbps: Size | None = None


class Cpu(_Closed):
    count: Annotated[int, Field(ge=1, lt=2**63)]
    model: Text


class Disk(_Closed):
    name: Text
    size_bytes: Size
    model: Text | None = None
    serial: Text | None = None
    wwn: Text | None = None
    rotational: bool | None = None


class Dmi(_Closed):
    vendor: Text | None = None
    product: Text | None = None
    serial: Text | None = None
    uuid: Text | None = None


class Facts(_Closed):
    nics: Annotated[list[Nic], Field(min_length=1, max_length=MAX_ITEMS)]
    cpu: Cpu
    memory_bytes: Size
    disks: Annotated[list[Disk], Field(max_length=MAX_ITEMS)]
    dmi: Dmi
    boot_mode: Literal["bios", "uefi"]

    @field_validator("nics")
    @classmethod
    def _macs_unique(cls, nics: list[Nic]) -> list[Nic]:
        # A machine is recognised by its MACs: one listed twice is a broken report.
        macs = [n.mac for n in nics]
        dups = sorted({m for m in macs if macs.count(m) > 1})
        if dups:
            raise ValueError(f"MAC listed on more than one NIC: {', '.join(dups)}")
        return nics

    @property
    def macs(self) -> list[str]:
        return [n.mac for n in self.nics]


def decode_facts(body: bytes) -> Facts:
    """The facts in a request body; Refused(400) when it is not JSON, 422 when not facts."""
    data = _json(body)
    try:
        return Facts.model_validate(data, strict=True)
    except ValidationError as exc:
        problems = [
            (".".join(str(p) for p in err["loc"]) or "(body)", err["msg"])
            for err in exc.errors(include_url=False, include_input=False)
        ]
        shown = problems[:MAX_PROBLEMS_REPORTED]
        more = len(problems) - len(shown)
        text = "; ".join(f"{field}: {msg}" for field, msg in shown)
        if more:
            text += f"; and {more} more"
        raise Refused(422, f"invalid facts: {text}", problems=shown) from None


def _json(body: bytes) -> object:
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise Refused(400, "body is not UTF-8 text: facts are a JSON object") from None
    except RecursionError:
        raise Refused(400, "body is not usable JSON: nested too deeply") from None
    except ValueError as exc:
        raise Refused(400, f"body is not JSON: {exc}") from None


def _no_constant(name: str) -> object:
    # Python's json accepts NaN and Infinity, which are not JSON.
    raise ValueError(f"{name} is not a JSON value")
