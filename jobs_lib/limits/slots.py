"""Claiming a job whose handler has a concurrency limit: a free slot and the job, in one commit.

A handler with ``concurrency=N`` (optionally per ``concurrency_key``) runs at
most N jobs at once across every worker and function instance. Its slots are
N small documents (`jobs_lib.store.limits`); a slot is free when the job it
names no longer runs under the token it names. The claim takes a free slot
and the job in one atomic commit, so two claimers never share a slot. A type
found full is not tried again for `SATURATION_SECONDS` (unless one of our own
jobs of that type ends), so a full type costs few reads.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from jobs_lib.limits.policy import Hold, Policy
from jobs_lib.model.job import Job
from jobs_lib.observability.logs import JobLogger, event, job_fields
from jobs_lib.registry import HandlerSpec
from jobs_lib.store import Claim, JobStore

#: A type found at its concurrency limit is not tried again for this long (unless one of ours ends).
SATURATION_SECONDS = 2.0


def limit_key(job: Job, field: str | None) -> str:
    """The key of a per-key limit for a job: its `field`'s value, ``*`` for one limit per type,
    ``-`` for a job without the field."""
    if field is None:
        return "*"
    value = job.field_value(field)
    return str(value) if value is not None else "-"


class Saturation:
    """Which (type, key) limits were found used up, until when (monotonic), shared by the slot and
    rate claimers."""

    def __init__(self) -> None:
        self._until: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def mark(self, job_type: str, key: str, seconds: float) -> None:
        with self._lock:
            self._until[(job_type, key)] = time.monotonic() + max(seconds, 0.0)

    def clear(self, job_type: str, key: str) -> None:
        with self._lock:
            self._until.pop((job_type, key), None)

    def holds(self, job_type: str, key: str) -> bool:
        with self._lock:
            return self._until.get((job_type, key), 0.0) > time.monotonic()

    def whole_types(self) -> set[str]:
        """Types used up as a whole (no per-key limit): discovery need not read their jobs."""
        now = time.monotonic()
        with self._lock:
            return {
                job_type
                for (job_type, key), until in self._until.items()
                if key == "*" and until > now
            }

    def next_end(self) -> float | None:
        """The earliest moment (monotonic) a limit now used up may have room again, or None."""
        now = time.monotonic()
        with self._lock:
            ends = [until for until in self._until.values() if until > now]
        return min(ends) if ends else None


class SlotClaimer(Policy):
    """The concurrency policy (``concurrency=``): claims limited jobs for one engine, each with a
    free slot, and remembers which types (and keys) are full."""

    name = "slots"

    def __init__(self, store: JobStore, holder: str, lease_seconds: float, log: JobLogger) -> None:
        self.store = store
        self.holder = holder
        self.lease_seconds = lease_seconds
        self.log = log
        self._saturated = Saturation()
        #: Types (and keys) all of whose room we know of is held by our own running jobs.
        self._holding = Saturation()
        #: Jobs `claim_many` left untried since this was last emptied (no room for them): the
        #: engine keeps them as candidates waiting for room.
        self.untried: set[str] = set()
        self._rng = random.Random()
        self._lock = threading.Lock()
        self._claimers: ThreadPoolExecutor | None = None
        #: The slot each of our running limited jobs holds: (type, key, slot id, its version).
        self._held: dict[str, tuple[str, str, str, datetime | None]] = {}
        #: Slots our jobs held until they ended, by (type, key): the next claims take them unread.
        self._free: dict[tuple[str, str], list[tuple[str, datetime | None]]] = {}

    @staticmethod
    def key(job: Job, spec: HandlerSpec) -> str:
        """The limit's key for a job: its ``concurrency_key`` field's value, or ``*`` for one limit
        per type."""
        return limit_key(job, spec.concurrency_key)

    def saturated(self, job: Job, spec: HandlerSpec) -> bool:
        """True while this job's type (and key) was recently found full, or all its room is ours."""
        key = self.key(job, spec)
        with self._lock:
            if self._free.get((spec.type, key)):
                return False  # one of our jobs has just handed back a slot
        return self._saturated.holds(spec.type, key) or self._holding.holds(spec.type, key)

    def full_types(self) -> set[str]:
        """Types found full as a whole (no per-key limit): discovery need not read their jobs."""
        return self._saturated.whole_types()

    def next_room(self) -> float | None:
        """When (monotonic) a type found full is tried again at the latest, or None."""
        ends = [t for t in (self._saturated.next_end(), self._holding.next_end()) if t is not None]
        return min(ends) if ends else None

    # -- the policy's hooks (jobs_lib.limits.policy) --------------------------------------------

    def gate(self, job: Job, spec: HandlerSpec, now: datetime) -> Hold | None:
        if spec.concurrency is not None and self.saturated(job, spec):
            return Hold.until_room("its type is at its concurrency limit")
        return None

    def excluded_types(self, now: datetime) -> set[str]:
        return self.full_types()

    def takes(self, job: Job, spec: HandlerSpec, now: datetime) -> bool:
        return spec.concurrency is not None

    def claim_jobs(
        self, jobs: list[tuple[Job, HandlerSpec]], now: datetime
    ) -> dict[str, Claim | None]:
        """The slots of a type (and key) are read once for all its jobs here."""
        self.untried.clear()
        groups: dict[tuple[str, str], list[tuple[Job, HandlerSpec]]] = {}
        for job, spec in jobs:
            groups.setdefault((spec.type, self.key(job, spec)), []).append((job, spec))
        claims: dict[str, Claim | None] = {}
        for group in groups.values():
            spec = group[0][1]
            claims.update(
                zip(
                    (job.id for job, _s in group),
                    self.claim_many([job for job, _s in group], spec),
                    strict=True,
                )
            )
        return claims

    def held_back(self, job: Job, spec: HandlerSpec) -> bool:
        return job.id in self.untried or self.saturated(job, spec)

    def close(self) -> None:
        with self._lock:
            pool, self._claimers = self._claimers, None
        if pool is not None:
            pool.shutdown(wait=False)

    # -- claiming ---------------------------------------------------------------------------------

    def claim(self, job: Job, spec: HandlerSpec) -> Claim | None:
        """Take a free slot and the job together; None when the type is full or another claimer
        won."""
        return self.claim_many([job], spec)[0]

    def claim_many(self, jobs: list[Job], spec: HandlerSpec) -> list[Claim | None]:
        """Claim jobs of one type and key, each with a free slot of its own: a slot our own job held
        until it ended is taken again with the version we wrote (no read); for the others the slots
        (and the jobs holding them) are read once for all, then one commit per job, made at once.
        A claim per job, in order; None where there was no free slot, or the slot or the job changed
        meanwhile."""
        assert spec.concurrency is not None
        if not jobs:
            return []
        key = self.key(jobs[0], spec)
        claims: dict[str, Claim] = {}
        with self._lock:
            handed = self._free.pop((spec.type, key), [])
        rest = list(jobs)
        while handed and rest:
            slot, version = handed[-1]
            job = rest.pop(0)
            claim = self._take(job, slot, version, spec.type, key)
            if claim is not None:
                claims[job.id] = claim
                handed.pop()
                continue
            # Refused: either the job changed (most likely another worker claimed it: candidates
            # overlap) or the slot did (another claimer took it after our job ended). One read of
            # the slot tells which: unchanged, it goes to the next job; changed, it is let go, so
            # that a stale hand-back is never tried again. (Letting it go on a guess left slots idle
            # until some claimer read them: 30% of the slots' room with three workers.)
            if self.store.limits.slot_version(slot) != version:
                handed.pop()
        if handed:
            with self._lock:
                self._free.setdefault((spec.type, key), []).extend(handed)
        if rest and claims:
            # Only the slots our own jobs gave back were free for all we know: the rest wait until
            # one of ours ends (or SATURATION_SECONDS, for slots other claimers free). Discovery
            # goes on reading this type's jobs meanwhile, so that the next ones are at hand.
            self._holding.mark(spec.type, key, SATURATION_SECONDS)
            with self._lock:
                handed_since = bool(self._free.get((spec.type, key)))
            if handed_since:  # one of ours ended meanwhile: its slot is for the next claim
                self._holding.clear(spec.type, key)
            self.untried.update(job.id for job in rest)
        elif rest and not self.saturated(rest[0], spec):
            claims.update(self._read_and_take(rest, spec, key))
        else:
            self.untried.update(job.id for job in rest)
        return [claims.get(job.id) for job in jobs]

    def _read_and_take(self, jobs: list[Job], spec: HandlerSpec, key: str) -> dict[str, Claim]:
        """Read the slots and the jobs holding them, and claim `jobs` with the free ones."""
        assert spec.concurrency is not None
        slots = self.store.limits.read_slots(spec.type, key, spec.concurrency)
        # Every holder is read as it is now, our own candidates too: a candidate may be stale (read
        # while pending, claimed since by another worker with this very slot), so a slot naming it
        # is free only if that job no longer runs under the slot's token.
        holders = self.store.limits.holders(
            sorted({str(f["jobId"]) for _i, f, _v in slots if f.get("jobId")})
        )
        now = self.store.now()
        free = [
            (slot, version)
            for slot, fields, version in slots
            if self.store.limits.slot_is_free(fields, holders.get(str(fields.get("jobId"))), now)
        ]
        if len(free) <= len(jobs):
            # Every free slot is being taken now: the next job of this type need not read them to
            # learn it (one of our own ending, or SATURATION_SECONDS, clears this).
            self._saturated.mark(spec.type, key, SATURATION_SECONDS)
        if not free:
            where = f" for {spec.concurrency_key}={key}" if spec.concurrency_key else ""
            event(
                self.log,
                "job_waiting",
                f"{len(jobs)} job(s) of {spec.type} wait: it is at its limit of "
                f"{spec.concurrency}{where}",
                level=logging.DEBUG,
                **job_fields(jobs[0].id, jobs[0].type),
            )
            self.untried.update(job.id for job in jobs)
            return {}
        self._rng.shuffle(free)
        pairs = list(zip(jobs, free, strict=False))
        self.untried.update(job.id for job in jobs[len(pairs) :])
        if len(pairs) == 1:
            ((job, (slot, version)),) = pairs
            taken = [self._take(job, slot, version, spec.type, key)]
        else:
            taken = list(
                self._pool().map(
                    lambda pair: self._take(pair[0], pair[1][0], pair[1][1], spec.type, key), pairs
                )
            )
        return {
            job.id: claim
            for (job, _slot), claim in zip(pairs, taken, strict=True)
            if claim is not None
        }

    def _take(
        self, job: Job, slot: str, version: datetime | None, job_type: str, key: str
    ) -> Claim | None:
        """Claim `job` with `slot` (as of `version`); remember the slot as ours until the job
        ends."""
        taken = self.store.claim_with_slot(job, slot, version, self.holder, self.lease_seconds)
        if taken is None:
            return None
        claim, slot_version = taken
        with self._lock:
            self._held[claim.job_id] = (job_type, key, slot, slot_version)
        return claim

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._claimers is None:
                self._claimers = ThreadPoolExecutor(8, thread_name_prefix="jobs-slot-claim")
            return self._claimers

    def released(self, job: Job, spec: HandlerSpec | None, ended: bool = True) -> None:
        """One of our limited jobs stopped running: its slot is free, so stop treating the type as
        full. With `ended` (its end was recorded: it no longer runs under the token its slot names),
        the slot is handed to the next job of its type here as it stands, with no read: one commit
        conditioned on the slot's version as we wrote it (which fails, and sends that claim back to
        reading the slots, if another claimer took it meanwhile)."""
        with self._lock:
            held = self._held.pop(job.id, None)
            if held is not None and ended:
                job_type, key, slot, version = held
                free = self._free.setdefault((job_type, key), [])
                # The version we wrote last is the slot's; an older hand-back of it is stale (its
                # commit could only be refused).
                free[:] = [(s, v) for s, v in free if s != slot]
                free.append((slot, version))
        if spec is not None and spec.concurrency is not None:
            self._saturated.clear(spec.type, self.key(job, spec))
            self._holding.clear(spec.type, self.key(job, spec))


__all__ = ["SATURATION_SECONDS", "SlotClaimer"]
