"""The timeout and cancel watch: one thread per engine that looks after its running jobs.

Every `KEEPER_INTERVAL` it renews leases that are a third spent (so a job
running ten times its lease keeps it), writes progress that has waited its
turn (a document takes about one write a second), and abandons attempts past
their handler's timeout (recorded as failed or cancelled; the late result is
refused by fencing). Cancel requests are learnt from those writes' answers
and reach the handler through its context.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

log = logging.getLogger("jobs_lib.keeper")

#: The keeper wakes this often to renew leases and check timeouts.
KEEPER_INTERVAL = 0.5


class Watched(Protocol):
    """What the keeper needs of a running attempt (`jobs_lib.engine.runner.Execution`)."""

    @property
    def finished(self) -> bool: ...
    @property
    def deadline(self) -> datetime: ...

    def time_out(self) -> None: ...
    def maintain(self, renew_before: datetime | None) -> None: ...


class Keeper:
    """Renews, flushes and times out the attempts `active` returns, on a daemon thread."""

    def __init__(
        self,
        now: Callable[[], datetime],
        lease_seconds: float,
        active: Callable[[], Sequence[Watched]],
    ) -> None:
        self._now = now
        self.lease_seconds = lease_seconds
        self._active = active
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def ensure_running(self) -> None:
        """Start the thread if it is not running."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stopping.clear()
                self._thread = threading.Thread(target=self._loop, name="jobs-keeper", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while not self._stopping.wait(KEEPER_INTERVAL):
            try:
                self.keep_once()
            except Exception:
                log.exception("lease keeper failed; retrying")

    def keep_once(self) -> None:
        """One round: abandon timed-out attempts, renew leases a third spent, flush due progress."""
        now = self._now()
        renew_before = now + timedelta(seconds=self.lease_seconds * 2 / 3)
        for execution in self._active():
            if execution.finished:
                continue
            if now >= execution.deadline:
                execution.time_out()
                continue
            execution.maintain(renew_before)

    def stop(self) -> None:
        """Stop the thread (it ends within one interval)."""
        self._stopping.set()


__all__ = ["KEEPER_INTERVAL", "Keeper"]
