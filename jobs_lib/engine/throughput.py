"""Outcomes per minute, added up in memory and written a few times a minute
(`jobs_lib.store.stats`).

An engine counts each recorded outcome here; `flush` writes what gathered
since the last flush, one small document per process and minute, so the
console's chart costs its writers about four writes a minute each and its
readers one read per process-minute, whatever the number of jobs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from datetime import datetime

from jobs_lib.store.stats import MinuteStats

log = logging.getLogger("jobs_lib.throughput")

#: A process writes its minute counts at most this often (and when it stops).
FLUSH_EVERY = 15.0


class MinuteCounter:
    """Counts of outcomes by minute, type and outcome, not yet written."""

    def __init__(self, stats: MinuteStats, holder: str) -> None:
        self.stats = stats
        self.holder = holder
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._pending: dict[datetime, dict[str, dict[str, int]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(int))
        )
        self._flushed = time.monotonic()

    def add(self, when: datetime, job_type: str | None, outcome: str) -> None:
        """Count one outcome (``completed``, ``failed``, ``retried``, ``cancelled``) at `when`."""
        minute = when.replace(second=0, microsecond=0)
        with self._lock:
            self._pending[minute][job_type or "unknown"][outcome] += 1

    def due(self) -> bool:
        """True when there are counts older than `FLUSH_EVERY` seconds to write."""
        with self._lock:
            return bool(self._pending) and time.monotonic() - self._flushed >= FLUSH_EVERY

    def flush(self) -> int:
        """Write what gathered (one write per minute touched); returns the writes made. Never
        raises: counts that cannot be written now are kept for the next flush."""
        with self._flush_lock:
            with self._lock:
                pending, self._pending = (
                    self._pending,
                    defaultdict(lambda: defaultdict(lambda: defaultdict(int))),
                )
                self._flushed = time.monotonic()
            writes = 0
            for minute, counts in sorted(pending.items()):
                try:
                    self.stats.add(minute, self.holder, {t: dict(c) for t, c in counts.items()})
                    writes += 1
                except Exception:
                    log.warning(
                        "writing the minute counts failed; keeping them for the next flush",
                        exc_info=True,
                    )
                    with self._lock:
                        for job_type, by_outcome in counts.items():
                            for outcome, n in by_outcome.items():
                                self._pending[minute][job_type][outcome] += n
            return writes


__all__ = ["FLUSH_EVERY", "MinuteCounter"]
