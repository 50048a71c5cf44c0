"""The membership controller: Consul's ``swarm-node`` registrations drive the swarm.

One pass = read Consul (a blocking query: it returns when the registrations or their health
change, or when the next timer is due), read Swarm, ``plan()``, execute, record. Passes are
level-triggered: the first pass after start or leadership, and one every ``resync`` seconds,
compare everything; the passes in between look only at the nodes that changed plus those
with a running timer, so the work per change does not grow with the cluster.

Only the holder of the Consul lock acts (see ``election``). The planner's timers live in
Consul KV next to the lock, so a new leader continues where the old one stopped.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from metalctl.clients.consul import UNHEALTHY, ConsulApi, only_nodes
from metalctl.conventions import Registration, kv_prefix
from metalctl.errors import ClusterAccessError, ConflictError
from metalctl.membership.election import LeaderLock
from metalctl.membership.plan import Action, Event, Memory, Policy, plan
from metalctl.membership.swarm_api import SwarmOps

_SECONDS = re.compile(r"\d+s\b")


@dataclass(frozen=True)
class ControllerOptions:
    grace: float = 300.0
    absent: float = 15.0
    rejoin_after: float = 30.0
    drain_timeout: float = 300.0
    max_wait: float = 60.0  # longest blocking query; also how often the lock is re-checked
    resync: float = 300.0  # a full comparison at least this often
    drain_poll: float = 2.0  # task moves are not Consul events: look again this often


@dataclass(frozen=True)
class Record:
    """Something for the event log: ``kind`` is an action, a note kind, leader or error."""

    kind: str
    node: str | None
    reason: str


@dataclass
class PassReport:
    full: bool
    scope: int  # nodes decided in this pass
    registrations: int
    actions: list[tuple[Action, str]] = field(default_factory=list)  # (action, outcome)
    errors: list[str] = field(default_factory=list)
    read: str = ""  # how Consul was read: all, or only the changes
    waited: float = 0.0  # seconds spent in the blocking query before this pass
    asked: float = 0.0  # the longest wait it asked Consul for (the nearest timer)


@dataclass(frozen=True)
class _Read:
    index: int
    registrations: dict[str, Registration]
    unhealthy: set[str]
    changed: set[str] | None  # None: a full read, decide every node
    how: str
    waited: float = 0.0
    asked: float = 0.0


Recorder = Callable[[Record], None]


class StopWaiting(BaseException):
    """Raised by a stop signal while the controller sits in a Consul blocking query.

    A BaseException, so that the loop's broad ``except Exception`` does not swallow it.
    Nothing is half-done during such a wait, so stopping there loses nothing; a stop that
    arrives during a pass lets the pass finish.
    """


def stop_handler(controller: Controller, stop: threading.Event) -> Callable[..., None]:
    """A signal handler for SIGTERM/SIGINT: ask the loop to end, at once if it is waiting."""

    def handle(*_: object) -> None:
        stop.set()
        if controller.waiting:
            # Once: a second signal (say, during the lock release on the way out) must
            # not interrupt that too.
            controller.waiting = False
            raise StopWaiting

    return handle


class Controller:
    def __init__(
        self,
        cluster: str,
        consul: ConsulApi,
        swarm: SwarmOps,
        lock: LeaderLock,
        record: Recorder,
        options: ControllerOptions,
        clock: Callable[[], float] = time.time,
        on_pass: Callable[[PassReport], None] | None = None,
    ) -> None:
        self.cluster = cluster
        self.consul = consul
        self.swarm = swarm
        self.lock = lock
        self.record = record
        self.options = options
        self.clock = clock
        self.on_pass = on_pass  # e.g. the CLI's --verbose: one line per pass
        self.index = 0
        self.regs: dict[str, Registration] = {}
        self.unhealthy: set[str] = set()  # nodes in the last unhealthy view
        self.memory = Memory()
        self.retry: set[str] = set()
        self.last_full = 0.0
        self.decided_at = 0.0  # the clock the planner saw in the last pass
        self._said: dict[tuple[str, str], str] = {}  # (node, kind) -> last recorded text
        self.waiting = False  # inside a blocking query: a stop may interrupt it

    @contextlib.contextmanager
    def _interruptible(self) -> Iterator[None]:
        self.waiting = True
        try:
            yield
        finally:
            self.waiting = False

    # --- the loop -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Lead or stand by until ``stop``; errors back off and never end the loop."""
        backoff, leading = 1.0, False
        try:
            while not stop.is_set():
                try:
                    if leading and not self.lock.held:
                        self._say(Record("leader", None, f"{self.lock.holder} lost the lock"))
                    leading = self.lock.held
                    if not leading:
                        self._stand_by(stop)
                        continue
                    report = self.step(blocking=True)
                    backoff = 1.0
                    if self.on_pass is not None:
                        self.on_pass(report)
                except StopWaiting:
                    break
                except Exception as exc:
                    # Unexpected answers (bad JSON, a locked store) must not end the loop:
                    # each is an error event, then the same back-off as a network error.
                    text = str(exc) if isinstance(exc, ClusterAccessError) else repr(exc)
                    self._say(Record("error", None, text))
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
        finally:
            self.lock.release()

    def run_once(self) -> PassReport:
        """Take the lock, do one full pass, give the lock back."""
        if not self.lock.try_acquire():
            holder = self.lock.current_holder()
            raise ConflictError(
                f"controller {holder} leads cluster {self.cluster}; a second one must not act",
                hint="stop it first, or look at 'metalctl events' for what it does",
            )
        try:
            self._take_over()
            return self.step(blocking=False)
        finally:
            self.lock.release()

    def _stand_by(self, stop: threading.Event) -> None:
        if self.lock.try_acquire():
            try:
                self._take_over()
            except BaseException:
                self.lock.release()  # never lead with state that failed to load
                raise
            return
        # Lock-delay or another leader: wait for the key to change, then try again.
        with self._interruptible():
            self.lock.wait_until_free(self.options.max_wait)
        stop.wait(1.0)

    def _take_over(self) -> None:
        self._say(Record("leader", None, f"{self.lock.holder} leads the membership controller"))
        self.memory = Memory.from_dict(
            self.consul.kv_json(f"{kv_prefix(self.cluster)}/memory") or {}
        )
        self.index, self.last_full, self.retry = 0, 0.0, set()

    # --- one pass -------------------------------------------------------------------------

    def step(self, blocking: bool) -> PassReport:
        """One pass: a full read and comparison, or (``blocking``, between resyncs) a
        blocking read of what changed and a pass over just those nodes."""
        now = self.clock()
        full = not blocking or not self.index or now - self.last_full >= self.options.resync
        try:
            read = self._read_all() if full else self._read_changes()
        except ClusterAccessError:
            self.last_full = 0.0  # a half-read change must not be lost: compare all next time
            raise
        if read.changed is None:
            full = True
        now = self.clock()
        current = read.registrations
        scope = None if read.changed is None else read.changed | self._pending(now) | self.retry
        self.index, self.regs, self.unhealthy = read.index, current, read.unhealthy
        report = PassReport(full, len(current) if scope is None else len(scope), len(current))
        report.read, report.waited, report.asked = read.how, read.waited, read.asked
        if scope is not None and not scope:
            return report
        if not current:
            # An empty answer looks like "everyone left"; it is far more often an ACL or
            # catalog problem (a token without service:read sees an empty list, not a 403).
            # There is nothing to join either, so the pass is skipped, loudly.
            why = "Consul lists no swarm-node registrations (ACL or catalog problem?); pass skipped"
            raise ClusterAccessError(why, hint="check the token's service:read and the catalog")
        try:
            self.decided_at = now
            self._pass(current, scope, now, report)
        except ClusterAccessError:
            # This read's changes were not acted on; the next pass compares everything.
            self.last_full = 0.0
            raise
        if full:
            self.last_full = now
        return report

    def _pass(
        self,
        current: dict[str, Registration],
        scope: set[str] | None,
        now: float,
        report: PassReport,
    ) -> None:
        members = self.swarm.members(scope)
        regs = (
            list(current.values()) if scope is None else [current[n] for n in scope if n in current]
        )
        result = plan(regs, members, self.memory, self._policy(), now, scope)
        for note in result.notes:
            self._note(note)
        self.retry = set()
        failed: set[str] = set()
        for action in result.actions:
            if action.node in failed:
                continue
            # Each action may take a while (a join tries managers in turn): make sure no
            # other controller can have taken over in the meantime.
            self._confirm_lock()
            outcome = self._execute(action, report)
            if outcome is None:
                failed.add(action.node)
        self.retry = failed
        self._save(result.memory, report, now)

    def _confirm_lock(self) -> None:
        if not self.lock.confirm():
            raise ClusterAccessError("lost the controller lock; standing by")

    def _execute(self, action: Action, report: PassReport) -> str | None:
        if action.kind == "refuse":
            # The reason counts seconds; record it again only when the verdict changes.
            self._say(
                Record("refuse", action.node, action.reason),
                key_text=_SECONDS.sub("Ns", action.reason),
            )
            report.actions.append((action, "refused"))
            return "refused"
        try:
            done = self.swarm.execute(action)
        except ClusterAccessError as exc:
            self._say(Record("error", action.node, f"{action.kind} failed: {exc.message}"))
            report.errors.append(f"{action.node}: {exc.message}")
            return None
        kind = "remove" if action.kind == "leave_and_remove" else action.kind
        self._say(Record(kind, action.node, f"{done}: {action.reason}"), always=True)
        report.actions.append((action, done))
        return done

    def _save(self, memory: Memory, report: PassReport, now: float) -> None:
        self._confirm_lock()  # no write for a controller that lost the lead
        prefix = kv_prefix(self.cluster)
        if memory != self.memory:
            self.consul.kv_put(f"{prefix}/memory", json.dumps(memory.to_dict()).encode())
        self.memory = memory
        status = {
            "leader": self.lock.holder,
            "last_pass": now,
            "full": report.full,
            "decided": report.scope,
            "registrations": report.registrations,
            "actions": [f"{a.kind} {a.node}" for a, _ in report.actions],
            "errors": report.errors,
        }
        self.consul.kv_put(f"{prefix}/status", json.dumps(status).encode())

    # --- reading Consul ------------------------------------------------------------------

    def _read_all(self) -> _Read:
        index, regs, problems = self.consul.swarm_nodes()
        self._problems(problems)
        unhealthy = {r.node for r in regs if r.status != "passing"}
        return _Read(index, {r.node: r for r in regs}, unhealthy, None, "all")

    def _read_changes(self) -> _Read:
        """Block until the swarm-node view changes, then read only what changed.

        The blocking read asks for the unhealthy entries alone, so a failure, a recovery
        or a new registration (its check starts critical) costs O(changed). A node that
        left the unhealthy view is looked up by name: passing again, or gone. Only a
        change the unhealthy view cannot show (a passing node deregistered without
        failing first) needs the whole list.
        """
        asked, started = self._next_wait(), time.monotonic()
        with self._interruptible():
            index, bad, problems = self.consul.swarm_nodes(self.index, asked, UNHEALTHY)
        waited = time.monotonic() - started
        self._problems(problems)
        if index < self.index:  # Consul's index went back (a restored snapshot): start over
            return self._read_all()
        current = self.regs  # updated in place: copying it would cost O(nodes)
        now_bad = {r.node: r for r in bad}
        changed = {n for n, r in now_bad.items() if current.get(n) != r}
        current.update(now_bad)
        left_view = self.unhealthy - now_bad.keys()
        if left_view:
            _, found, more = self.consul.swarm_nodes(where=only_nodes(left_view))
            self._problems(more)
            seen = {r.node: r for r in found}
            for name in left_view:
                if name in seen:
                    current[name] = seen[name]
                else:
                    current.pop(name, None)
            changed |= left_view
        elif not changed and index != self.index:
            full = self._read_all()
            before = self.regs
            moved = {n for n, r in full.registrations.items() if before.get(n) != r}
            moved |= before.keys() - full.registrations.keys()
            how = "all (view unchanged)"
            return _Read(index, full.registrations, full.unhealthy, moved, how, waited, asked)
        return _Read(index, current, set(now_bad), changed, "changes", waited, asked)

    def _problems(self, problems: list[str]) -> None:
        for text in problems:
            self._say(Record("error", text.split(":", 1)[0], text))

    # --- inputs of a pass -----------------------------------------------------------------

    def _policy(self) -> Policy:
        voters = self.consul.raft_voters()
        alive = self.consul.alive_servers()
        forced = frozenset(self.consul.kv_keys(f"{kv_prefix(self.cluster)}/force/"))
        o = self.options
        return Policy(
            grace_seconds=o.grace,
            absent_seconds=o.absent,
            rejoin_stable_seconds=o.rejoin_after,
            drain_timeout_seconds=o.drain_timeout,
            consul_servers=frozenset(voters),
            consul_voters=len(voters),
            consul_reachable=len(alive & set(voters)),
            forced=frozenset(k.rsplit("/", 1)[-1] for k in forced),
        )

    def _pending(self, now: float) -> set[str]:
        """Nodes with a running timer: a grace, a rejoin hysteresis or a drain."""
        due = set()
        for name, m in self.memory.nodes.items():
            rejoining = m.removed_at is not None and m.passing_since is not None
            timers = (m.critical_since, m.draining_since, m.absent_since)
            if rejoining or any(t is not None for t in timers):
                due.add(name)
        return due

    def _next_wait(self) -> float:
        """How long the next blocking query may wait: until the nearest timer is due."""
        o, now = self.options, self.clock()
        wait = min(o.max_wait, max(1.0, self.last_full + o.resync - now))
        if self.retry:
            wait = min(wait, 5.0)
        for m in self.memory.nodes.values():
            if m.draining_since is not None:
                wait = min(wait, o.drain_poll)
            deadlines = [
                m.critical_since + o.grace if m.critical_since is not None else None,
                m.absent_since + o.absent if m.absent_since is not None else None,
                m.passing_since + o.rejoin_after
                if m.removed_at is not None and m.passing_since is not None
                else None,
            ]
            # A timer the last pass already saw due (a refused removal, say) is not a
            # reason to wake up again: the next change or resync looks at it. One that was
            # not due then is, even if it became due since (while the pass ran).
            due = [d - now for d in deadlines if d is not None and d > self.decided_at]
            wait = min([wait, *due])
        return max(0.1, wait)

    # --- the record -----------------------------------------------------------------------

    def _note(self, note: Event) -> None:
        # Notes repeat every pass ("critical for 12s of 300s"): record when the kind changes.
        self._say(Record(note.kind, note.node, note.reason), key_text=note.kind)

    def _say(self, rec: Record, *, always: bool = False, key_text: str | None = None) -> None:
        key = (rec.node or "", rec.kind)
        text = key_text if key_text is not None else rec.reason
        if not always and self._said.get(key) == text:
            return
        self._said[key] = text
        if rec.kind in ("join", "remove") and rec.node:
            # A node that changed membership starts a fresh story.
            self._said = {k: v for k, v in self._said.items() if k[0] != rec.node or k == key}
        self.record(rec)
