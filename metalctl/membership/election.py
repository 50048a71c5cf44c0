"""Leader election among controllers: a Consul session lock on one KV key.

The session is tied to the health of the controller's Consul agent node (serfHealth) and to
a TTL renewed by a heartbeat thread. So the lock is released when that node dies *or* when
the controller process stops renewing (killed, hung); Consul then holds the key for the
lock delay before another controller may take it, so two leaders never act at once.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass

from metalctl.clients.consul import ConsulApi, ConsulEndpoint, KvEntry
from metalctl.errors import ClusterAccessError


def holder_of(entry: KvEntry | None) -> str:
    """Who holds the lock key: "" when nobody does, "?" when its value is not ours."""
    if entry is None or not entry.session:
        return ""
    try:
        return str(json.loads(entry.value)["holder"])
    except (ValueError, KeyError, TypeError):
        return "?"


@dataclass(frozen=True)
class LockTimings:
    ttl: float = 15.0  # Consul's minimum is 10 s; expiry may take up to 2x TTL
    lock_delay: float = 10.0


class LeaderLock:
    def __init__(
        self, endpoint: ConsulEndpoint, key: str, holder: str, timings: LockTimings
    ) -> None:
        self.key = key
        self.holder = holder
        self.timings = timings
        self._consul = ConsulApi(endpoint)
        self._session: str | None = None
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._endpoint = endpoint

    @property
    def held(self) -> bool:
        return self._session is not None and not self._lost.is_set()

    def try_acquire(self) -> bool:
        """One attempt; True when this controller now leads."""
        if self.held:
            return True
        self._drop_session()
        self._session = self._consul.session_create(
            f"metalctl controller {self.holder}", self.timings.ttl, self.timings.lock_delay
        )
        value = json.dumps({"holder": self.holder, "since": time.time()}).encode()
        try:
            acquired = self._consul.kv_put(self.key, value, acquire=self._session)
        except BaseException:
            self._drop_session()  # no half-held lock: a session without the key is nothing
            raise
        if acquired:
            self._lost.clear()
            self._start_heartbeat(self._session)
            return True
        self._drop_session()
        return False

    def confirm(self) -> bool:
        """Ask Consul whether the key is still ours (before acting on a plan)."""
        if not self.held:
            return False
        _, entry = self._consul.kv_get(self.key)
        if entry is None or entry.session != self._session:
            self._lost.set()
        return self.held

    def wait_until_free(self, timeout: float) -> None:
        """Block (a Consul blocking query, not a poll) until the key has no holder or
        ``timeout`` passes."""
        index, entry = self._consul.kv_get(self.key)
        if entry is None or not entry.session:
            return
        self._consul.kv_get(self.key, index=index, wait=timeout)

    def current_holder(self) -> str:
        return holder_of(self._consul.kv_get(self.key)[1])

    def release(self) -> None:
        """Step down cleanly: no lock delay for the next leader."""
        self._stop.set()
        if self._session is not None and not self._lost.is_set():
            # On failure the session's TTL releases it anyway.
            with contextlib.suppress(ClusterAccessError):
                self._consul.kv_put(self.key, b"", release=self._session)
        self._drop_session()

    def _drop_session(self) -> None:
        session, self._session = self._session, None
        if self._beat is not None:
            self._stop.set()
            self._beat.join(timeout=5)
            self._beat = None
        if session is not None:
            with contextlib.suppress(ClusterAccessError):  # else it expires by its TTL
                self._consul.session_destroy(session)

    def _start_heartbeat(self, session: str) -> None:
        self._stop = threading.Event()
        self._beat = threading.Thread(
            target=self._heartbeat, args=(session, self._stop), daemon=True, name="lock-renew"
        )
        self._beat.start()

    def _heartbeat(self, session: str, stop: threading.Event) -> None:
        consul = ConsulApi(self._endpoint)  # requests sessions are not shared across threads
        try:
            while not stop.wait(self.timings.ttl / 3):
                try:
                    if not consul.session_renew(session):
                        self._lost.set()
                        return
                except ClusterAccessError:
                    # Unreachable agent: keep trying; if it lasts, the TTL ends the session
                    # and confirm() sees the lock gone before any action.
                    continue
        finally:
            consul.close()
