from __future__ import annotations

import pytest

from metalctl.errors import WaitTimeout
from metalctl.wait import wait_for


def test_returns_first_truthy_value() -> None:
    calls = iter([None, False, "up"])
    assert wait_for(lambda: next(calls), what="x", timeout=5, interval=0) == "up"


def test_timeout_names_what_and_last_error() -> None:
    def probe() -> None:
        raise ConnectionRefusedError("refused")

    with pytest.raises(WaitTimeout) as err:
        wait_for(probe, what="node n1: sshd", timeout=0.05, interval=0.01)
    assert "node n1: sshd" in str(err.value) and "refused" in str(err.value)


def test_abort_stops_early() -> None:
    with pytest.raises(WaitTimeout) as err:
        wait_for(lambda: None, what="n1", timeout=60, interval=0, abort=lambda: "container exited")
    assert "container exited" in str(err.value)
