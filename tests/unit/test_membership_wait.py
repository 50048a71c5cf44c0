"""When the controller wakes up: the nearest timer, never a timer it already decided on."""

from __future__ import annotations

from typing import Any

from metalctl.membership.controller import Controller, ControllerOptions
from metalctl.membership.plan import Memory, NodeMemory


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def controller(clock: Clock, memory: Memory) -> Controller:
    # _next_wait needs neither Consul, Swarm nor the lock.
    unused: Any = None
    ctl = Controller("c", unused, unused, unused, lambda _: None, ControllerOptions(), clock)
    ctl.memory, ctl.last_full = memory, clock.now
    return ctl


def test_waits_until_the_nearest_timer() -> None:
    clock = Clock(1000.0)
    ctl = controller(clock, Memory({"w1": NodeMemory(critical_since=990.0)}))  # grace 300
    ctl.decided_at = 1000.0
    assert ctl._next_wait() == 60.0  # 290 s away: capped by the longest wait
    ctl.memory = Memory({"w1": NodeMemory(absent_since=995.0)})  # absent-wait 15
    assert ctl._next_wait() == 10.0


def test_a_timer_that_fell_due_during_the_pass_wakes_it_at_once() -> None:
    """The pass saw 14.99 s of 15; by the time it computes its wait the timer is due.
    Waiting out the longest wait here delayed a removal by a minute."""
    clock = Clock(1000.0)
    ctl = controller(clock, Memory({"w1": NodeMemory(absent_since=985.01)}))
    ctl.decided_at = 999.99  # absent for 14.98 s when the planner looked: not yet
    clock.now = 1000.05  # due since 0.04 s
    assert ctl._next_wait() <= 0.1


def test_a_timer_already_due_when_decided_is_no_reason_to_wake() -> None:
    """A removal refused for quorum stays overdue; it must not cause a pass every second."""
    clock = Clock(1000.0)
    ctl = controller(clock, Memory({"m2": NodeMemory(critical_since=500.0)}))
    ctl.decided_at = 1000.0
    assert ctl._next_wait() == ControllerOptions().max_wait
