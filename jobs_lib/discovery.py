"""How a worker finds jobs to claim, without a listener and without piling onto one document.

A snapshot listener over the pending set makes the emulator re-run its query
on every write (shared/EMULATOR.md: every write slowed from ~5 ms to ~120 ms
in our measurement), so workers poll. Each poll runs the main lane, due
pending jobs with a timestamp ``scheduledFor``, oldest first. A worker alone
takes them strictly in that order. When its claims start losing to another
worker (both read the same oldest jobs), it narrows the lane to one random
slice of the id space (a partition) so that workers sharing a backlog claim
different documents instead of racing for the same ones; when its slice runs
dry it moves to the next, and after a round of empty slices it goes back to
the whole queue. Jobs with positive priority get a lane of
their own whenever there is a backlog for them to overtake (every poll while
priorities are in use, else once a second). The other lanes run on slower
clocks: ISO-string ``scheduledFor``,
a scan of the pending set for documents with no usable ``scheduledFor``, and
expired leases.
"""

from __future__ import annotations

import random
import time
from datetime import datetime

from jobs_lib.job import Job
from jobs_lib.store import PARTITIONS, JobStore

#: How much slower the slow lanes go while the main lane has a backlog.
BACKLOG_SLOWDOWN = 5


class Discovery:
    """Finds candidate jobs for one worker."""

    def __init__(
        self,
        store: JobStore,
        *,
        lease_seconds: float,
        partitioned: bool = True,
        slow_interval: float = 1.0,
        scan_interval: float = 10.0,
        scan_page: int = 50,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.partitioned = partitioned
        self.slow_interval = slow_interval
        self.scan_interval = scan_interval
        self.scan_page = scan_page
        self.expired_interval = max(lease_seconds / 3, 0.5)
        self._rng = rng or random.Random()
        self.partition: int | None = None
        self._dry = 0
        self._scan_after: str | None = None
        self._priorities_seen_until = 0.0
        self._backlog = False
        start = time.monotonic()
        self._next = {"expired": start, "strings": start, "scan": start, "priority": start}

    def _due(self, lane: str, interval: float) -> bool:
        now = time.monotonic()
        if now < self._next[lane]:
            return False
        self._next[lane] = now + interval
        return True

    def candidates(self, limit: int) -> list[Job]:
        """Jobs that may be claimable now, best first (highest priority, then longest due)."""
        now = self.store.now()
        found: list[Job] = []
        # In a backlog the slow lanes slow down further: what they find would wait in line anyway.
        slow = self.slow_interval * (BACKLOG_SLOWDOWN if self._backlog else 1)
        if self._due("expired", self.expired_interval):
            found += self.store.expired(now, limit)
        if self._due("strings", slow):
            found += self.store.due_strings(now, limit)
        if self.scan_interval > 0 and self._due("scan", self.scan_interval):
            found += self._scan()
        main = self.store.due(now, limit, partition=self.partition)
        self._backlog = len(main) >= limit
        if self._backlog:
            self._dry = 0
            # While priorities are in use, look for them every poll; otherwise now and then.
            if time.monotonic() < self._priorities_seen_until or self._due("priority", slow):
                found = self.store.due_by_priority(now, limit) + found
        elif self.partition is not None:
            self._dry = 0 if main else self._dry + 1
            self.partition = None if self._dry >= PARTITIONS else (self.partition + 1) % PARTITIONS
        found += main
        if any(job.priority > 0 for job in found):
            self._priorities_seen_until = time.monotonic() + 60.0
        return sorted(found, key=lambda job: (-job.priority, _order_time(job, now)))

    def _scan(self) -> list[Job]:
        page = self.store.scan_pending(self._scan_after, self.scan_page)
        self._scan_after = page[-1].id if len(page) >= self.scan_page else None
        # Timestamp and string due times are found by their own lanes.
        return [job for job in page if job.problems or not isinstance(job.raw.get("scheduledFor"), (datetime, str))]

    def contended(self) -> None:
        """Most claims just failed: another worker takes the same jobs, so move to a random slice."""
        if self.partitioned:
            self.partition = self._rng.randrange(PARTITIONS)
            self._dry = 0


def _order_time(job: Job, now: datetime) -> float:
    moment = job.scheduled_for or job.created_at
    return moment.timestamp() if moment else now.timestamp()


__all__ = ["Discovery"]
