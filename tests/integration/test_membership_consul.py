"""The controller's Consul side against a real Consul 1.8 agent (dev mode, loopback):
registrations and health, blocking queries, the leader lock, and whole passes whose Swarm
side is the in-memory stand-in (the real swarm is exercised by the e2e tests)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from metalctl.clients.consul import ConsulApi, ConsulEndpoint
from metalctl.conventions import kv_prefix
from metalctl.membership.controller import (
    Controller,
    ControllerOptions,
    Record,
    stop_handler,
)
from metalctl.membership.election import LeaderLock, LockTimings
from tests.integration.consul_dev import MEMBER_CHECK, consul_dev_agent, deregister, register
from tests.integration.memory_swarm import InMemorySwarm, member

FAST_LOCK = LockTimings(ttl=10, lock_delay=1)


@pytest.fixture(scope="module")
def consul_url() -> Iterator[str]:
    with consul_dev_agent() as url:
        yield url


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def api(url: str) -> ConsulApi:
    return ConsulApi(ConsulEndpoint(url=url, token=""), member_check=MEMBER_CHECK)


def test_registrations_carry_role_address_and_worst_check(
    consul_url: str, http: requests.Session
) -> None:
    register(consul_url, "r-pass", "10.9.0.1", "manager", "passing", http)
    register(consul_url, "r-crit", "10.9.0.2", "worker", "critical", http)
    register(consul_url, "r-warn", "10.9.0.3", "worker", "warning", http)
    register(consul_url, "r-bad", "10.9.0.4", "boss", "passing", http)
    try:
        _, regs, problems = api(consul_url).swarm_nodes()
        got = {r.node: (r.address, r.role, r.status) for r in regs if r.node.startswith("r-")}
        assert got == {
            "r-pass": ("10.9.0.1", "manager", "passing"),
            "r-crit": ("10.9.0.2", "worker", "critical"),
            "r-warn": ("10.9.0.3", "worker", "warning"),
        }
        assert any("r-bad" in p and "'boss'" in p for p in problems)
    finally:
        for n in ("r-pass", "r-crit", "r-warn", "r-bad"):
            deregister(consul_url, n, http)


def test_a_leaving_agents_stale_entry_does_not_hold_up_its_removal(
    consul_url: str, http: requests.Session
) -> None:
    """Consul's leader deregisters a node that left, but the leaving agent's last sync can
    write it back (no serfHealth) until the leader's next reconcile, up to a minute."""
    with worker_joined(consul_url, "s", http) as (ctl, swarm, records):
        deregister(consul_url, "s-w1", http, whole_node=True)  # the leader, at the leave
        ctl.step(blocking=True)
        assert ctl.memory.get("s-w1").absent_since is not None
        register(consul_url, "s-w1", "10.9.0.2", "worker", "passing", http, member=False)
        _, regs, _ = api(consul_url).swarm_nodes()
        assert "s-w1" not in {r.node for r in regs}  # in the catalog, but not a member
        step_until(ctl, lambda: "s-w1" not in swarm.nodes)  # while the stale entry lingers
    assert [r.kind for r in records if r.node == "s-w1"] == [
        "join",
        "absent_wait",
        "drain",
        "remove",
    ]


def test_blocking_query_wakes_up_with_the_change(consul_url: str, http: requests.Session) -> None:
    register(consul_url, "b-1", "10.9.1.1", "worker", "passing", http)
    consul = api(consul_url)
    index, regs, _ = consul.swarm_nodes()
    assert ("b-1", "passing") in {(r.node, r.status) for r in regs}
    timer = threading.Timer(
        1.0, register, (consul_url, "b-1", "10.9.1.1", "worker", "critical", http)
    )
    timer.start()
    try:
        new_index, regs, _ = consul.swarm_nodes(index, wait=30)
    finally:
        timer.join()
        deregister(consul_url, "b-1", http)
    assert new_index > index
    assert ("b-1", "critical") in {(r.node, r.status) for r in regs}


def test_one_lock_holder_and_clean_handover(consul_url: str) -> None:
    ep = ConsulEndpoint(url=consul_url, token="")
    a = LeaderLock(ep, "metalctl/locktest/leader", "a", FAST_LOCK)
    b = LeaderLock(ep, "metalctl/locktest/leader", "b", FAST_LOCK)
    try:
        assert a.try_acquire()
        assert not b.try_acquire()
        assert b.current_holder() == "a"
        assert a.confirm()
        a.release()
        assert b.try_acquire()  # a release has no lock delay
        assert b.current_holder() == "b"
    finally:
        a.release()
        b.release()


def test_a_dead_session_loses_the_lock_to_the_standby(consul_url: str) -> None:
    ep = ConsulEndpoint(url=consul_url, token="")
    a = LeaderLock(ep, "metalctl/locktest2/leader", "a", FAST_LOCK)
    b = LeaderLock(ep, "metalctl/locktest2/leader", "b", FAST_LOCK)
    try:
        assert a.try_acquire()
        assert a._session is not None
        api(consul_url).session_destroy(a._session)  # as if its node had died
        assert not a.confirm()
        deadline = time.monotonic() + 15  # lock delay 1 s; bounded
        while not b.try_acquire() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert b.held and b.current_holder() == "b"
    finally:
        a.release()
        b.release()


def controller(url: str, cluster: str, swarm: InMemorySwarm, records: list[Record]) -> Controller:
    ep = ConsulEndpoint(url=url, token="")
    lock = LeaderLock(ep, f"{kv_prefix(cluster)}/leader", f"test-{cluster}", FAST_LOCK)
    options = ControllerOptions(grace=2, absent=1, rejoin_after=0, drain_poll=1, max_wait=5)
    return Controller(cluster, api(url), swarm, lock, records.append, options)


@contextlib.contextmanager
def worker_joined(
    url: str, prefix: str, http: requests.Session
) -> Iterator[tuple[Controller, InMemorySwarm, list[Record]]]:
    """A leading controller of cluster ``prefix`` that has joined ``<prefix>-w1`` to a
    swarm of ``<prefix>-m1``; everything deregistered afterwards."""
    manager, worker = f"{prefix}-m1", f"{prefix}-w1"
    register(url, manager, "10.9.0.1", "manager", "passing", http)
    register(url, worker, "10.9.0.2", "worker", "passing", http)
    swarm = InMemorySwarm([member(manager, "manager", leader=True)])
    records: list[Record] = []
    ctl = controller(url, prefix, swarm, records)
    try:
        assert ctl.lock.try_acquire()
        step_until(ctl, lambda: worker in swarm.nodes)
        yield ctl, swarm, records
    finally:
        ctl.lock.release()
        deregister(url, worker, http, whole_node=True)
        deregister(url, manager, http, whole_node=True)


def step_until(ctl: Controller, done: object, passes: int = 10) -> None:
    for _ in range(passes):
        if callable(done) and done():
            return
        ctl.step(blocking=True)
    assert callable(done) and done(), "condition not reached in 10 passes"


def test_controller_joins_then_drains_and_removes_a_deregistered_node(
    consul_url: str, http: requests.Session
) -> None:
    with worker_joined(consul_url, "c", http) as (ctl, swarm, records):
        deregister(consul_url, "c-w1", http)
        step_until(ctl, lambda: "c-w1" not in swarm.nodes)
    moves = [(r.kind, r.node) for r in records if r.kind in ("join", "drain", "remove")]
    assert moves == [("join", "c-w1"), ("drain", "c-w1"), ("remove", "c-w1")]
    assert "c-m1" in swarm.nodes  # never touched


def test_a_new_leader_continues_from_the_timers_in_consul(
    consul_url: str, http: requests.Session
) -> None:
    register(consul_url, "d-m1", "10.9.3.1", "manager", "passing", http)
    register(consul_url, "d-w1", "10.9.3.2", "worker", "critical", http)
    swarm = InMemorySwarm([member("d-m1", "manager", leader=True), member("d-w1")])
    records: list[Record] = []
    first = controller(consul_url, "c2", swarm, records)
    try:
        assert first.lock.try_acquire()
        first._take_over()
        first.step(blocking=False)  # starts the grace timer for d-w1, stored in Consul
        assert [r.kind for r in records if r.node == "d-w1"] == ["grace"]
        first.lock.release()
        second = controller(consul_url, "c2", swarm, records)
        assert second.lock.try_acquire()
        second._take_over()
        assert second.memory.get("d-w1").critical_since is not None
        step_until(second, lambda: "d-w1" not in swarm.nodes)
        second.lock.release()
    finally:
        deregister(consul_url, "d-m1", http)
        deregister(consul_url, "d-w1", http)
    removal = [r for r in records if r.kind == "remove"]
    assert removal and "critical for" in removal[0].reason


def test_sigterm_interrupts_the_blocking_wait_and_hands_the_lock_over(
    consul_url: str, http: requests.Session
) -> None:
    """An operator's stop (systemd, Ctrl-C) must not sit out a blocking query of minutes."""
    register(consul_url, "e-m1", "10.9.4.1", "manager", "passing", http)
    swarm = InMemorySwarm([member("e-m1", "manager", leader=True)])
    ep = ConsulEndpoint(url=consul_url, token="")
    lock = LeaderLock(ep, f"{kv_prefix('c3')}/leader", "test-c3", FAST_LOCK)
    options = ControllerOptions(max_wait=300, resync=3600)  # one wait would last 5 minutes
    ctl = Controller("c3", api(consul_url), swarm, lock, lambda _: None, options)
    stop = threading.Event()

    def stop_when_waiting() -> None:
        deadline = time.monotonic() + 30  # bounded
        while not (ctl.index and ctl.waiting) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # well inside the blocking query now
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, stop_handler(ctl, stop))
    killer = threading.Thread(target=stop_when_waiting)
    killer.start()
    started = time.monotonic()
    try:
        ctl.run(stop)
        elapsed = time.monotonic() - started
    finally:
        signal.signal(signal.SIGTERM, previous)
        killer.join()
        deregister(consul_url, "e-m1", http)
    assert elapsed < 60, f"the stop waited out the blocking query ({elapsed:.0f} s)"
    other = LeaderLock(ep, f"{kv_prefix('c3')}/leader", "other", FAST_LOCK)
    assert other.current_holder() == ""  # released on the way out, no lock delay
    assert other.try_acquire()
    other.release()
