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

from jobs_lib.job import Job
from jobs_lib.logs import JobLogger, event, job_fields
from jobs_lib.registry import HandlerSpec
from jobs_lib.store import Claim, JobStore

#: A type found at its concurrency limit is not tried again for this long (unless one of ours ends).
SATURATION_SECONDS = 2.0


def limit_key(job: Job, field: str | None) -> str:
    """The key of a per-key limit for a job: its `field`'s value, ``*`` for one limit per type, ``-``
    for a job without the field."""
    if field is None:
        return "*"
    value = job.raw.get(field)
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
            return {job_type for (job_type, key), until in self._until.items() if key == "*" and until > now}

    def next_end(self) -> float | None:
        """The earliest moment (monotonic) a limit now used up may have room again, or None."""
        now = time.monotonic()
        with self._lock:
            ends = [until for until in self._until.values() if until > now]
        return min(ends) if ends else None


class SlotClaimer:
    """Claims limited jobs for one engine, and remembers which types (and keys) are full."""

    def __init__(self, store: JobStore, holder: str, lease_seconds: float, log: JobLogger) -> None:
        self.store = store
        self.holder = holder
        self.lease_seconds = lease_seconds
        self.log = log
        self._saturated = Saturation()
        self._rng = random.Random()

    @staticmethod
    def key(job: Job, spec: HandlerSpec) -> str:
        """The limit's key for a job: its ``concurrency_key`` field's value, or ``*`` for one limit per type."""
        return limit_key(job, spec.concurrency_key)

    def saturated(self, job: Job, spec: HandlerSpec) -> bool:
        """True while this job's type (and key) was recently found full."""
        return self._saturated.holds(spec.type, self.key(job, spec))

    def full_types(self) -> set[str]:
        """Types found full as a whole (no per-key limit): discovery need not read their jobs."""
        return self._saturated.whole_types()

    def next_room(self) -> float | None:
        """When (monotonic) a type found full is tried again at the latest, or None."""
        return self._saturated.next_end()

    def claim(self, job: Job, spec: HandlerSpec) -> Claim | None:
        """Take a free slot and the job together; None when the type is full or another claimer won."""
        assert spec.concurrency is not None
        key = self.key(job, spec)
        if self.saturated(job, spec):
            return None
        slots = self.store.limits.read_slots(spec.type, key, spec.concurrency)
        holders = self.store.limits.holders([str(f["jobId"]) for _i, f, _v in slots if f.get("jobId") and f.get("jobId") != job.id])
        now = self.store.now()
        free = [(slot, version) for slot, fields, version in slots if fields.get("jobId") == job.id or self.store.limits.slot_is_free(fields, holders.get(str(fields.get("jobId"))), now)]
        if not free:
            self._saturated.mark(spec.type, key, SATURATION_SECONDS)
            where = f" for {spec.concurrency_key}={key}" if spec.concurrency_key else ""
            event(self.log, "job_waiting", f"job {job.id} waits: {spec.type} is at its limit of {spec.concurrency}{where}", level=logging.DEBUG, **job_fields(job.id, job.type))
            return None
        self._rng.shuffle(free)
        for slot, version in free[:2]:
            claim = self.store.claim_with_slot(job, slot, version, self.holder, self.lease_seconds)
            if claim is not None:
                if len(free) == 1:
                    # That was the last free slot: the next job of this type need not read them to
                    # learn it (one of our own ending, or SATURATION_SECONDS, clears this).
                    self._saturated.mark(spec.type, key, SATURATION_SECONDS)
                return claim
        return None

    def released(self, job: Job, spec: HandlerSpec | None) -> None:
        """One of our limited jobs ended: its slot is free, so stop treating the type as full."""
        if spec is not None and spec.concurrency is not None:
            self._saturated.clear(spec.type, self.key(job, spec))


__all__ = ["SATURATION_SECONDS", "SlotClaimer"]
