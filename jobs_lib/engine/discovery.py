"""How a worker finds jobs to claim, without a listener and without piling onto one document.

A snapshot listener over the pending set makes the emulator re-run its query on every write (every
write slowed from ~5 ms to ~120 ms in our measurement), so workers poll. Each poll runs the main
lane, due pending jobs with a timestamp ``scheduledFor``, oldest first. A worker alone takes them
strictly in that order. When its claims start losing to another worker (both read the same oldest
jobs), it leases one of 15 partitions of the id space (a small document per partition in
``backgroundJobs_partitions``, leased for 20 s) and reads only that partition, so workers sharing a
backlog read and claim disjoint documents. After 10 s it hands the partition back and takes another,
so every partition of a lasting backlog gets its turn; a drained partition is left to lapse. With no
partition free, the worker goes back to the whole queue and leaves alone the jobs in partitions
others hold. Partitions only steer reading: every claim is still an atomic conditional write, so a
worker outside its partition is merely slower, never wrong. Jobs with positive priority get a lane
of their own whenever there is a backlog for them to overtake (every poll while priorities are in
use, else once a second). The other lanes run on slower clocks: ISO-string ``scheduledFor``, a scan
of the pending set for documents with no usable ``scheduledFor``, and expired leases."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from itertools import zip_longest

from jobs_lib.engine.runner import MAX_LEASE_SECONDS
from jobs_lib.model.job import Job
from jobs_lib.store import ALL_SHARDS, ID_ALPHABET, PARTITIONS, SHARDS, JobStore, valid_shard
from jobs_lib.store.jobs import adopted

#: While the policies' lanes (fair shares) find jobs and the main lane found none, the main lane is
#: read again this often.
MAIN_RECHECK = 5.0
#: The scan for documents with no usable scheduledFor backs off to this while it finds none.
MAX_SCAN_INTERVAL = 60.0
#: ... unless the whole pending set came back in fewer documents than this (billed reads).
CHEAP_SCAN = 10
#: How much slower the slow lanes go while the main lane has a backlog.
BACKLOG_SLOWDOWN = 30
#: A partition lease lasts this long; a worker moves to another partition after PARTITION_DWELL
#: seconds (so it never needs renewing), or at once when the partition runs dry.
PARTITION_LEASE = 20.0
PARTITION_DWELL = 10.0
#: After claims lost to another worker, keep reading in partitions for this long.
CONTENDED_MEMORY = 60.0
#: A copy of the partition table this old is read again before use.
PARTITION_TABLE_TTL = 10.0
#: A long-lived worker starts the slow lanes this many seconds apart, after its first main-lane
#: read.
STAGGER = 1.5
#: The sweep for documents with no status reads this many documents a page, a page at most this
#: often (each page is billed a read per document, whatever its state) ...
STATUSLESS_PAGE = 100
STATUSLESS_EVERY = 30.0
#: ... and rests this long after a pass over the collection that found none.
STATUSLESS_REST = 300.0


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
        shards: Sequence[int] | None = None,
        lanes: Callable[..., list[Job]] | None = None,
    ) -> None:
        """With `eager` False (a long-lived worker), the first read is the main lane alone, and the
        slow lanes follow a few seconds later: a worker joining a busy fleet claims sooner. Burst
        runs (the tick) read every lane at once, since they stop when a read finds nothing.

        With `shards`, the ordered lanes read only those shard lanes, and no partitions are taken: a
        tick sweeper's share of the collection (`sweeper_shards`). The lanes over every document
        (the scan for unsharded and unreadable documents, odd statuses, orphans) then run only
        in the sweeper whose share holds shard 0, so that sweepers never read the same pages."""
        self.store = store
        self.holder = holder
        self.exclude_types = exclude_types or (lambda: [])
        #: Candidates the engine's policies read themselves (fair shares), in their own order.
        self.lanes = lanes or (lambda _now, _limit, _shards, _fresh=False: [])
        #: The ids the policies' lanes found last: read past partitions, so never left alone.
        self._laned: set[str] = set()
        self.shards: tuple[int, ...] = tuple(shards) if shards is not None else ALL_SHARDS
        self.partitioned = partitioned and shards is None
        self.sweeps_unsharded = shards is None or 0 in self.shards
        self.slow_interval = slow_interval
        self.scan_interval = scan_interval
        self.scan_page = scan_page
        self.expired_interval = max(lease_seconds / 3, 0.5)
        self._rng = rng or random.Random()
        #: The shard the main lane's next read starts at (None: the first of ours). A worker
        #: starts at a random one, so that workers joining a backlog together read apart.
        self._shard_start: int | None = self._rng.randrange(SHARDS)
        #: The same for the string lane (which starts at the first shard).
        self._strings_start: int | None = None
        #: The partition of the shards this worker holds, or None for the whole queue.
        self.partition: int | None = None
        self._partition_version: datetime | None = None
        self._partition_taken = 0.0
        self._drained: dict[int, float] = {}
        self._contended_until = 0.0
        self._table: dict[int, tuple[dict[str, object], datetime | None]] | None = None
        self._table_read = 0.0
        self._scan_after: str | None = None
        self._scan_every = scan_interval
        self._scan_limit = scan_page
        self._scanned_once = False
        self._wrap_at_once = False
        self._priorities_seen_until = 0.0
        self._backlog = False
        start = time.monotonic()
        later = 0.0 if eager else STAGGER
        self._next = {
            "expired": start,
            "strings": start + later,
            "scan": start + 2 * later,
            "priority": start,
            "odd": start + 3 * later,
            "running": start + 3 * later,
            "statusless": start + 4 * later,
            "cancels": start + later,
            "main": start,
        }
        #: The main lane's last read found nothing: while the policies' lanes find jobs, it is read
        #: every MAIN_RECHECK seconds (a read the emulator pays per document of the collection).
        self._main_empty = False
        self._running_after: str | None = None
        #: The sweep for documents with no status: where it is, how often it reads a page.
        self._statusless_after: str | None = (
            None if eager else "".join(self._rng.choice(ID_ALPHABET) for _ in range(20))
        )
        self._statusless_every = STATUSLESS_EVERY
        self._statusless_found = False
        #: The pass under way began at the first id (a tick's, or any pass after a worker's first).
        self._statusless_whole = eager
        self.eager = eager
        self._joined = eager  # burst runs (the tick) never join a fleet's partitions at start
        self._first_read_done = False
        #: The main lane's last read covered every shard of ours (no partition): a burst run stops
        #: only after such a read found nothing.
        self.last_read_whole = True

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
            found += self.store.expired(now, limit, shards=self.shards)
        if self._due("strings", slow):
            found += self._strings(now, limit)
        scans = self.scan_interval > 0 and self.sweeps_unsharded
        if scans and self._due("scan", self._scan_every):
            self._scan_limit = limit
            found += self._scan()
        if scans and self._due("odd", self.scan_interval):
            # Statuses that are none of ours (the runner fails them, naming the value), and null.
            found += self.store.odd_statuses(self.scan_page)
        if scans and self._due("running", self.scan_interval):
            found += self._orphans()
        if scans and self._due("statusless", self._statusless_every):
            found += self._statusless()
        if scans and self._due("cancels", slow):
            found += self.store.cancel_requests(limit)  # owners' cancels of jobs not due yet
        laned = self.lanes(now, limit, self.shards)
        if laned and self._main_empty and not self._due("main", MAIN_RECHECK):
            main: list[Job] = []
        else:
            main = self._main_lane(now, limit)
            self._main_empty = not main
        if len(laned) >= limit:
            # A full page from the policies' lanes is a backlog too: the slow lanes slow down.
            self._backlog = True
        if not self._first_read_done:
            self._first_read_done = True
            if not self._backlog:
                # No backlog to join: the staggered slow lanes need not wait (a worker starting on
                # an idle queue finds app-written jobs at its next poll, not seconds later).
                start = time.monotonic()
                for lane in ("strings", "scan", "odd", "running", "statusless", "cancels"):
                    self._next[lane] = min(self._next[lane], start)
        if self._backlog and (
            time.monotonic() < self._priorities_seen_until or self._due("priority", slow)
        ):
            # While priorities are in use, look for them every poll; otherwise now and then.
            found = self.store.due_by_priority(now, limit, shards=self.shards) + found
        found += main
        self._laned = {job.id for job in laned}
        if any(job.priority > 0 for job in found):
            self._priorities_seen_until = time.monotonic() + 60.0
        ordered = sorted(
            (job for job in found if job.id not in self._laned),
            key=lambda job: (-job.priority, _order_time(job, now)),
        )
        return _alternate(ordered, laned) if laned else ordered

    @property
    def refreshable(self) -> bool:
        """Whether the last read found jobs in the policies' lanes (fair shares): a worker then
        takes a quick look (`refresh`) now and then while it still holds candidates."""
        return bool(self._laned)

    def refresh(self, limit: int) -> list[Job]:
        """What the policies' lanes have that is new since the last read (a key that just got
        jobs), cheaply: the worker puts it ahead of the candidates it holds."""
        fresh = self.lanes(self.store.now(), limit, self.shards, True)
        self._laned |= {job.id for job in fresh}
        return fresh

    def _main_lane(self, now: datetime, limit: int) -> list[Job]:
        """Due jobs from our partition, or from the whole queue; moves between partitions as they
        drain."""
        if (
            self.partition is not None
            and time.monotonic() - self._partition_taken > PARTITION_DWELL
        ):
            self._give_back_partition(
                now
            )  # move on, so that every partition of a lasting backlog gets its turn
        if not self._joined and self.partitioned:
            self._joined = True
            self._join(now)
        wants_partition = (
            self.partitioned and self._backlog and time.monotonic() < self._contended_until
        )
        if self.partition is None and wants_partition:
            self._take_partition(now)
        excluded = self.exclude_types()
        # The lanes read by shard from a start: while pages come back full (a backlog), each read
        # starts after the last shard the previous one reached, so every shard gets its turn; once
        # a page is short (everything due was in it), the next read starts again from the first.
        self.last_read_whole = self.partition is None
        main = self.store.due(
            now,
            limit,
            partition=self.partition,
            exclude_types=excluded,
            start=self._shard_start,
            shards=self.shards,
        )
        self._backlog = len(main) >= limit
        self._shard_start = _after_last_shard(main) if self._backlog else None
        if self.partition is not None and not self._backlog:
            # This partition ran dry: leave it (our lease lapses by itself, keeping others from
            # reading it meanwhile) and read the next one now, as the backlog likely goes on
            # elsewhere.
            self._drained[self.partition] = time.monotonic() + PARTITION_LEASE
            self.partition = self._partition_version = None
            self._take_partition(now)
            if self.partition is not None:
                more = self.store.due(
                    now, limit - len(main), partition=self.partition, exclude_types=excluded
                )
                main += more
                self._backlog = True
                self.last_read_whole = False
        return main

    def _strings(self, now: datetime, limit: int) -> list[Job]:
        """The string lane: pending jobs whose ``scheduledFor`` is an ISO string that may be due.

        Like the main lane it reads by shard and, while its pages come back full, starts each read
        after the last shard the previous one reached, so that documents in one shard cannot hold
        the lane at one place. A string that is not due although it sorts among due ones (an offset
        such as ``-12:00``) is rewritten in the runner's own form (`JobStore.normalize_times`, one
        conditioned write, once), which takes it out of the lane's way.
        """
        page = self.store.due_strings(now, limit, shards=self.shards, start=self._strings_start)
        self._strings_start = _after_last_shard(page) if len(page) >= limit else None
        misplaced = [
            job
            for job in page
            if not job.problems
            and not job.is_due(now)
            and isinstance(job.written_scheduled_for, str)
            and not _utc_text(job.written_scheduled_for)
        ]
        if misplaced:
            self.store.normalize_times(misplaced)
        return page

    def _orphans(self) -> list[Job]:
        """Running jobs without a lease of ours (an app marked them in_progress itself), page by
        page."""
        page = self.store.running_page(self._running_after, self.scan_page)
        self._running_after = page[-1].id if len(page) >= self.scan_page else None
        # Also leases no runner writes: an expiry further past the job's last write than any lease
        # of ours (an app's, or garbage); the expired-lease lane would wait for it for ever. And
        # running jobs outside the shard lanes (written before shards, or by an app) whose lease
        # lapsed: the expired-lease lane reads only the lanes.
        now = self.store.now()
        return [
            job
            for job in page
            if not job.leased_by_a_runner
            or _implausible_lease(job)
            or (not valid_shard(job.written_shard) and job.lease_expired(now))
        ]

    def _statusless(self) -> list[Job]:
        """Documents written with no ``status`` at all (read as pending, DESIGN: "a document created
        without it is still taken up"): no query can ask for a missing field, so this sweeps every
        document in id order, `STATUSLESS_PAGE` at a time, a page every `STATUSLESS_EVERY` seconds
        (every `scan_interval` while it finds some) and a pause of `STATUSLESS_REST` after a pass
        that found none. Their created-event takes them at
        once; this is how a worker or a tick finds them without one. What it finds is claimed (the
        claim writes ``status``) or given its fields (`JobStore.adoption_fields`) at once."""
        page = self.store.document_page(self._statusless_after, STATUSLESS_PAGE)
        more = len(page) >= STATUSLESS_PAGE
        self._statusless_after = page[-1].id if more else None
        found = [job for job in page if not job.written_status]
        self._statusless_found = self._statusless_found or bool(found)
        self._statusless_every = STATUSLESS_EVERY if not found else self.scan_interval
        if not more:
            # The end of the id space. A worker's first pass began at a random id (a fleet starting
            # together reads apart): it goes on from the first id at once. After a pass from the
            # first id that found none, the sweep rests.
            if self._statusless_whole and not self._statusless_found:
                self._statusless_every = STATUSLESS_REST
            else:
                self._statusless_every = 0.0 if not self._statusless_whole else STATUSLESS_EVERY
            self._statusless_whole = True
            self._statusless_found = False
            self._next["statusless"] = time.monotonic() + self._statusless_every
        return found

    def _scan(self) -> list[Job]:
        """The lane for what the ordered lanes cannot see: pending documents in id order.

        That is documents with no usable ``scheduledFor``, and documents an app wrote without a
        valid ``shard`` (an app's write; the ordered lanes read only the shard lanes). A due one of
        those is a candidate straight from here, a page at a time like the main lane's: its claim
        writes its `JobStore.adoption_fields` along with the lease, so it costs what an enqueued
        job costs. One that cannot run now (not due yet, its type paused or at its limit) is
        given them in one batch write per page, and the main lane finds it from then on.
        """
        # While such jobs turn up, read as many as a main-lane page would hold, at every poll.
        size = max(self.scan_page, self._scan_limit) if self._scan_every == 0.0 else self.scan_page
        if self._scan_after is None and not self._scanned_once and not self.eager:
            # A worker's first pass starts at a random id, so that workers joining together (a
            # fleet starting on an app's backlog) read different pages instead of racing for one;
            # the pass after it, from the first id, follows at once. A burst run (the tick) reads
            # from the first id: it stops when a read finds nothing, so a pass begun midway would
            # miss what lies before its start.
            self._scan_after = "".join(self._rng.choice(ID_ALPHABET) for _ in range(20))
            self._wrap_at_once = True
        self._scanned_once = True
        whole = self._scan_after is None  # from the first id: a short page is the whole pending set
        page = self.store.scan_pending(self._scan_after, size)
        more = len(page) >= size
        self._scan_after = page[-1].id if more else None
        now = self.store.now()
        excluded = set(self.exclude_types())
        found = []
        later = []
        claimable = 0
        for job in page:
            if job.problems or not isinstance(job.written_scheduled_for, (datetime, str)):
                found.append(job)  # an app's job with no time (due now), or poison to settle
                claimable += not adopted(job)
            elif not adopted(job):
                if job.is_due(now) and job.type not in excluded:
                    found.append(job)
                    claimable += 1
                else:  # not due, or its type is paused or at its limit: into its lane
                    later.append(job)
        if later:
            self.store.adopt(later)
        # Where the created-event runs such documents are rare (it takes them at once, and gives
        # delayed ones their shard): while none turn up, scan less and less often, down to once a
        # minute. In a worker-only deployment whose apps write jobs without a shard, scan on at
        # every poll while they keep turning up.
        if claimable or later:
            # Apps' unsharded jobs are turning up: page on at every poll, pass after pass, until
            # a page holds none we could take.
            self._scan_every = 0.0
        elif found or (self._wrap_at_once and not more):
            # A first pass that began at a random id goes on from the first id at once, whether or
            # not it found anything (a tick has only a few polls to sweep the whole set).
            self._scan_every = 0.0 if self._wrap_at_once else self.scan_interval
        elif whole and len(page) < CHEAP_SCAN:
            # The whole pending set fits in a few reads (an idle or small queue): scanning it is
            # cheap, so look again soon, and an app's job written without a shard waits seconds.
            self._scan_every = self.slow_interval
        else:
            self._scan_every = min(max(self._scan_every, self.scan_interval) * 2, MAX_SCAN_INTERVAL)
        if not more:
            self._wrap_at_once = False
        self._next["scan"] = time.monotonic() + self._scan_every
        return found

    def _join(self, now: datetime) -> None:
        """On the first read: when other workers lease partitions, a backlog is being shared, so
        start in a partition of our own at once rather than colliding with them on the oldest jobs
        first."""
        self._table = {
            index: (fields, version)
            for index, fields, version in self.store.partitions.read_partitions()
        }
        self._table_read = time.monotonic()
        if any(
            fields.get("holder") not in (None, self.holder) and not _past(fields.get("until"), now)
            for fields, _v in self._table.values()
        ):
            self.contended()

    def contended(self) -> None:
        """Claims are losing to another worker reading the same jobs: read a partition of our own
        (and go on with the scan of apps' documents from another place in the id space)."""
        self._contended_until = time.monotonic() + CONTENDED_MEMORY
        self._backlog = True
        if self._scan_after is not None and self._scan_every == 0.0:
            self._scan_after = "".join(self._rng.choice(ID_ALPHABET) for _ in range(20))
            self._wrap_at_once = True

    def read_whole_next(self) -> None:
        """Make the next read cover every shard of ours: hand back the partition held, forget the
        contention (a burst run's last look before it stops)."""
        self._contended_until = 0.0
        self._backlog = False
        if self.partition is not None:
            self._give_back_partition(self.store.now())

    def held_elsewhere(self, job: Job) -> bool:
        """True, during a backlog, when the job's shard lies in a partition another worker leases
        (as last read). A job outside the shard lanes is nobody's: the partition holder's lanes
        never see it."""
        shard = job.written_shard
        if (
            job.id in self._laned
            or self._table is None
            or self.partition is not None
            or not self._backlog
            or not isinstance(shard, int)
            or not valid_shard(shard)
        ):
            return False
        index = shard * PARTITIONS // SHARDS
        fields, _version = self._table.get(index, ({}, None))
        until = fields.get("until")
        return (
            fields.get("holder") not in (None, self.holder)
            and isinstance(until, datetime)
            and until > self.store.now()
        )

    def close(self) -> None:
        """Hand back the partition this worker holds."""
        if self.partition is not None:
            self._give_back_partition(self.store.now())

    # -- partitions --------------------------------------------------------------------

    def _take_partition(self, now: datetime) -> None:
        """Lease a random partition nobody holds and nobody found drained lately.

        The partition table (15 small documents) is read once and reused while
        fresh; a write against a stale copy fails its precondition, and only
        then is the table read again.
        """
        self.partition = None
        for fresh in (False, True):
            if (
                fresh
                or self._table is None
                or time.monotonic() - self._table_read > PARTITION_TABLE_TTL
            ):
                self._table = {
                    index: (fields, version)
                    for index, fields, version in self.store.partitions.read_partitions()
                }
                self._table_read = time.monotonic()
            free = [
                index
                for index, (fields, _version) in self._table.items()
                if _past(fields.get("until"), now)
                and self._drained.get(index, 0.0) < time.monotonic()
            ]
            self._rng.shuffle(free)
            until = now + timedelta(seconds=PARTITION_LEASE)
            for index in free[:3]:
                fields, version = self._table[index]
                taken = self.store.partitions.write_partition(
                    index, {"holder": self.holder, "until": until}, version
                )
                if taken is not None:
                    self._table[index] = ({**fields, "holder": self.holder, "until": until}, taken)
                    self.partition, self._partition_version, self._partition_taken = (
                        index,
                        taken,
                        time.monotonic(),
                    )
                    return
                self._table.pop(index)  # changed since read

    def _give_back_partition(self, now: datetime) -> None:
        assert self.partition is not None
        version = self.store.partitions.write_partition(
            self.partition, {"until": now}, self._partition_version
        )
        if self._table is not None:
            if version is None:
                self._table.pop(self.partition, None)
            else:
                self._table[self.partition] = ({"holder": self.holder, "until": now}, version)
        self.partition = self._partition_version = None


def sweeper_shards(sweeper: int, sweepers: int) -> tuple[int, ...]:
    """The shard lanes tick sweeper `sweeper` (0 to `sweepers` - 1) sweeps: a contiguous share."""
    if not 0 <= sweeper < sweepers <= SHARDS:
        raise ValueError(
            f"sweeper {sweeper} of {sweepers}: sweepers are numbered 0 to {sweepers - 1}, and "
            f"there are at most {SHARDS}"
        )
    return tuple(shard for shard in ALL_SHARDS if shard * sweepers // SHARDS == sweeper)


def _after_last_shard(jobs: list[Job]) -> int | None:
    shard = jobs[-1].written_shard if jobs else None
    return (shard + 1) % SHARDS if isinstance(shard, int) and valid_shard(shard) else None


def _utc_text(text: str) -> bool:
    """True for an ISO string in UTC (``...Z``): its text order is its time order."""
    return text.endswith(("Z", "z"))


def _implausible_lease(job: Job) -> bool:
    expires = job.lease.expires_at if job.lease else None
    return (
        expires is not None
        and job.version is not None
        and (expires - job.version).total_seconds() > MAX_LEASE_SECONDS
    )


def _past(value: object, now: datetime) -> bool:
    return not isinstance(value, datetime) or value <= now


def _order_time(job: Job, now: datetime) -> float:
    moment = job.scheduled_for or job.created_at
    return moment.timestamp() if moment else now.timestamp()


def _alternate(ordered: list[Job], laned: list[Job]) -> list[Job]:
    """The lanes' candidates (in their own order) and the others (by priority and age), taken in
    turn: jobs with a positive priority first, then one of each while both last."""
    out = [job for job in ordered if job.priority > 0]
    rest = [job for job in ordered if job.priority <= 0]
    for pair in zip_longest(laned, rest):
        out += [job for job in pair if job is not None]
    return out


__all__ = ["Discovery", "sweeper_shards"]
