"""How a worker finds jobs to claim, without a listener and without piling onto one document.

A snapshot listener over the pending set makes the emulator re-run its query
on every write (shared/EMULATOR.md: every write slowed from ~5 ms to ~120 ms
in our measurement), so workers poll. Each poll runs the main lane, due
pending jobs with a timestamp ``scheduledFor``, oldest first. A worker alone
takes them strictly in that order. When its claims start losing to another
worker (both read the same oldest jobs), it leases one of 16 slices of the
id space (a small document per slice in ``backgroundJobs_slices``, leased
for 20 s) and reads only that slice, so workers sharing a backlog read and
claim disjoint documents. After 10 s it hands the slice back and takes
another, so every slice of a lasting backlog gets its turn; a drained slice
is left to lapse. With no slice free, the worker goes back to the whole
queue and leaves alone the jobs in slices others hold. Slices only steer reading: every claim is
still an atomic conditional write, so a worker outside its slice is merely
slower, never wrong. Jobs with positive priority get a lane of
their own whenever there is a backlog for them to overtake (every poll while
priorities are in use, else once a second). The other lanes run on slower
clocks: ISO-string ``scheduledFor``,
a scan of the pending set for documents with no usable ``scheduledFor``, and
expired leases.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from jobs_lib.job import Job
from jobs_lib.runner import MAX_LEASE_SECONDS
from jobs_lib.store import JobStore, partition_of

#: The scan for documents with no usable scheduledFor backs off to this while it finds none.
MAX_SCAN_INTERVAL = 60.0
#: How much slower the slow lanes go while the main lane has a backlog.
BACKLOG_SLOWDOWN = 30
#: A slice lease lasts this long; a worker moves to another slice after SLICE_DWELL
#: seconds (so it never needs renewing), or at once when the slice runs dry.
SLICE_LEASE = 20.0
SLICE_DWELL = 10.0
#: After claims lost to another worker, keep reading in slices for this long.
CONTENDED_MEMORY = 60.0
#: A copy of the slice table this old is read again before use.
SLICE_TABLE_TTL = 10.0
#: A long-lived worker starts the slow lanes this many seconds apart, after its first main-lane read.
STAGGER = 1.5


class Discovery:
    """Finds candidate jobs for one worker."""

    def __init__(
        self,
        store: JobStore,
        *,
        lease_seconds: float,
        holder: str = "worker",
        exclude_types: Callable[[], list[str]] | None = None,
        partitioned: bool = True,
        slow_interval: float = 1.0,
        scan_interval: float = 10.0,
        scan_page: int = 50,
        rng: random.Random | None = None,
        eager: bool = True,
    ) -> None:
        """With `eager` False (a long-lived worker), the first read is the main lane alone, and the
        slow lanes follow a few seconds later: a worker joining a busy fleet claims sooner. Burst
        runs (the tick) read every lane at once, since they stop when a read finds nothing."""
        self.store = store
        self.holder = holder
        self.exclude_types = exclude_types or (lambda: [])
        self.partitioned = partitioned
        self.slow_interval = slow_interval
        self.scan_interval = scan_interval
        self.scan_page = scan_page
        self.expired_interval = max(lease_seconds / 3, 0.5)
        self._rng = rng or random.Random()
        #: The slice of the id space this worker holds, or None for the whole queue.
        self.partition: int | None = None
        self._slice_version: datetime | None = None
        self._slice_taken = 0.0
        self._drained: dict[int, float] = {}
        self._contended_until = 0.0
        self._table: dict[int, tuple[dict[str, object], datetime | None]] | None = None
        self._table_read = 0.0
        self._scan_after: str | None = None
        self._scan_every = scan_interval
        self._priorities_seen_until = 0.0
        self._backlog = False
        start = time.monotonic()
        later = 0.0 if eager else STAGGER
        self._next = {"expired": start, "strings": start + later, "scan": start + 2 * later, "priority": start, "odd": start + 3 * later, "running": start + 3 * later}
        self._running_after: str | None = None
        self._joined = eager  # burst runs (the tick) never join a fleet's slices at start

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
        if self.scan_interval > 0 and self._due("scan", self._scan_every):
            found += self._scan()
        if self.scan_interval > 0 and self._due("odd", self.scan_interval):
            # Statuses that are none of ours (the runner fails them, naming the value), and null.
            found += self.store.odd_statuses(self.scan_page)
        if self.scan_interval > 0 and self._due("running", self.scan_interval):
            found += self._orphans()
        main = self._main_lane(now, limit)
        if self._backlog and (time.monotonic() < self._priorities_seen_until or self._due("priority", slow)):
            # While priorities are in use, look for them every poll; otherwise now and then.
            found = self.store.due_by_priority(now, limit) + found
        found += main
        if any(job.priority > 0 for job in found):
            self._priorities_seen_until = time.monotonic() + 60.0
        return sorted(found, key=lambda job: (-job.priority, _order_time(job, now)))

    def _main_lane(self, now: datetime, limit: int) -> list[Job]:
        """Due jobs from our slice, or from the whole queue; moves between slices as they drain."""
        if self.partition is not None and time.monotonic() - self._slice_taken > SLICE_DWELL:
            self._give_back_slice(now)  # move on, so that every slice of a lasting backlog gets its turn
        if not self._joined and self.partitioned:
            self._joined = True
            self._join(now)
        wants_slice = self.partitioned and self._backlog and time.monotonic() < self._contended_until
        if self.partition is None and wants_slice:
            self._take_slice(now)
        excluded = self.exclude_types()
        main = self.store.due(now, limit, partition=self.partition, exclude_types=excluded)
        self._backlog = len(main) >= limit
        if self.partition is not None and not self._backlog:
            # This slice ran dry: leave it (our lease lapses by itself, keeping others from reading
            # it meanwhile) and read the next one now, as the backlog likely goes on elsewhere.
            self._drained[self.partition] = time.monotonic() + SLICE_LEASE
            self.partition = self._slice_version = None
            self._take_slice(now)
            if self.partition is not None:
                more = self.store.due(now, limit - len(main), partition=self.partition, exclude_types=excluded)
                main += more
                self._backlog = True
        return main

    def _orphans(self) -> list[Job]:
        """Running jobs without a lease of ours (an app marked them in_progress itself), page by page."""
        page = self.store.running_page(self._running_after, self.scan_page)
        self._running_after = page[-1].id if len(page) >= self.scan_page else None
        # Also leases no runner writes: an expiry further past the job's last write than any lease
        # of ours (an app's, or garbage); the expired-lease lane would wait for it for ever.
        return [job for job in page if not job.leased_by_a_runner or _implausible_lease(job)]

    def _scan(self) -> list[Job]:
        page = self.store.scan_pending(self._scan_after, self.scan_page)
        self._scan_after = page[-1].id if len(page) >= self.scan_page else None
        # Timestamp and string due times are found by their own lanes.
        found = [job for job in page if job.problems or not isinstance(job.raw.get("scheduledFor"), (datetime, str))]
        # Such documents are rare (apps that omit scheduledFor; the created-event takes them at
        # once anyway): while none turn up, scan less and less often, down to once a minute.
        self._scan_every = self.scan_interval if found else min(self._scan_every * 2, MAX_SCAN_INTERVAL)
        return found

    def _join(self, now: datetime) -> None:
        """On the first read: when other workers lease slices, a backlog is being shared, so start
        in a slice of our own at once rather than colliding with them on the oldest jobs first."""
        self._table = {index: (fields, version) for index, fields, version in self.store.slices.read_slices()}
        self._table_read = time.monotonic()
        if any(fields.get("holder") not in (None, self.holder) and not _past(fields.get("until"), now) for fields, _v in self._table.values()):
            self.contended()

    def contended(self) -> None:
        """Claims are losing to another worker reading the same jobs: read a slice of our own."""
        self._contended_until = time.monotonic() + CONTENDED_MEMORY
        self._backlog = True

    def held_elsewhere(self, job_id: str) -> bool:
        """True, during a backlog, when the job's id lies in a slice another worker leases (as last read)."""
        if self._table is None or self.partition is not None or not self._backlog:
            return False
        index = partition_of(job_id)
        fields, _version = self._table.get(index, ({}, None))
        until = fields.get("until")
        return fields.get("holder") not in (None, self.holder) and isinstance(until, datetime) and until > self.store.now()

    def close(self) -> None:
        """Hand back the slice this worker holds."""
        if self.partition is not None:
            self._give_back_slice(self.store.now())

    # -- slices --------------------------------------------------------------------

    def _take_slice(self, now: datetime) -> None:
        """Lease a random slice nobody holds and nobody found drained lately.

        The slice table (16 small documents) is read once and reused while
        fresh; a write against a stale copy fails its precondition, and only
        then is the table read again.
        """
        self.partition = None
        for fresh in (False, True):
            if fresh or self._table is None or time.monotonic() - self._table_read > SLICE_TABLE_TTL:
                self._table = {index: (fields, version) for index, fields, version in self.store.slices.read_slices()}
                self._table_read = time.monotonic()
            free = [
                index
                for index, (fields, _version) in self._table.items()
                if _past(fields.get("until"), now) and self._drained.get(index, 0.0) < time.monotonic()
            ]
            self._rng.shuffle(free)
            until = now + timedelta(seconds=SLICE_LEASE)
            for index in free[:3]:
                fields, version = self._table[index]
                taken = self.store.slices.write_slice(index, {"holder": self.holder, "until": until}, version)
                if taken is not None:
                    self._table[index] = ({**fields, "holder": self.holder, "until": until}, taken)
                    self.partition, self._slice_version, self._slice_taken = index, taken, time.monotonic()
                    return
                self._table.pop(index)  # changed since read

    def _give_back_slice(self, now: datetime) -> None:
        assert self.partition is not None
        version = self.store.slices.write_slice(self.partition, {"until": now}, self._slice_version)
        if self._table is not None:
            if version is None:
                self._table.pop(self.partition, None)
            else:
                self._table[self.partition] = ({"holder": self.holder, "until": now}, version)
        self.partition = self._slice_version = None


def _implausible_lease(job: Job) -> bool:
    expires = job.lease.expires_at if job.lease else None
    return expires is not None and job.version is not None and (expires - job.version).total_seconds() > MAX_LEASE_SECONDS


def _past(value: object, now: datetime) -> bool:
    return not isinstance(value, datetime) or value <= now


def _order_time(job: Job, now: datetime) -> float:
    moment = job.scheduled_for or job.created_at
    return moment.timestamp() if moment else now.timestamp()


__all__ = ["Discovery"]
