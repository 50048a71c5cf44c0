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


def test_backoff_spaces_out_the_probes_up_to_the_longest_pause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pauses: list[float] = []
    monkeypatch.setattr("metalctl.wait.time.sleep", pauses.append)
    calls = iter([None] * 6 + ["done"])
    got = wait_for(
        lambda: next(calls), what="x", timeout=60, interval=0.1, backoff=2, max_interval=0.5
    )
    assert got == "done"
    assert pauses == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5, 0.5])


@pytest.mark.parametrize(("backoff", "longest"), [(0.5, None), (float("nan"), None), (2, -1)])
def test_backoff_out_of_range_is_refused(backoff: float, longest: float | None) -> None:
    from metalctl.errors import UsageError

    with pytest.raises(UsageError):
        wait_for(lambda: 1, what="x", timeout=1, backoff=backoff, max_interval=longest)
