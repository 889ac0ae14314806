"""The ``backgroundJobs`` collection: every read, query and write of job documents, and their field
names.

The runner, worker, sweeper and client call this module and never build a
query or a document themselves. Writes after a claim are *fenced*: each one is
conditioned on the document's update time as of our own last write (one
round trip, no transaction), and when that precondition fails because
someone else touched the document (the owner asking to cancel, say), a
read-check-write loop confirms the lease token is still ours before writing.
A worker whose lease has passed on can therefore never overwrite the job.

Firestore orders values by type before value, so a range on a timestamp
never sees ISO strings: due jobs are found by a timestamp lane and a string
lane, and a slow scan of the pending set catches documents with no
``scheduledFor`` at all.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any, NamedTuple

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from jobs_lib.config import Settings
from jobs_lib.errors import Contention, DocumentExists, StoreRefused, StoreUnavailable
from jobs_lib.model.clock import MAX_UTC_OFFSET, ServerClock, to_iso
from jobs_lib.model.job import Job, Status
from jobs_lib.model.outcomes import (
    Cancelled,
    CancelRequest,
    Change,
    Completed,
    Continued,
    Failed,
    Outcome,
    Retried,
    Retry,
    Slept,
    Update,
)
from jobs_lib.store.base import (
    ALL_SHARDS,
    SERVER_TIME,
    Code,
    Connection,
    StorePart,
    WriteResult,
    partition_shards,
    shard_of,
    valid_shard,
    with_shard,
)
from jobs_lib.store.claims import Claim, FencedWrite, WriteOutcome, WriteStatus
from jobs_lib.store.create_limit import RateWindows
from jobs_lib.store.fair import FairKeys
from jobs_lib.store.limits import ConcurrencyLimits
from jobs_lib.store.partitions import PartitionLeases
from jobs_lib.store.rate_tokens import RateTokens
from jobs_lib.store.schedules import ScheduleStore
from jobs_lib.store.stats import MinuteStats

log = logging.getLogger("jobs_lib.store")


class Created(NamedTuple):
    """One create of `JobStore.create_many`: the job as created, or why not."""

    job: Job | None
    #: The id was taken (by an earlier create with the same key, or by a stranger's document).
    exists: bool = False
    message: str = ""


ASCENDING, DESCENDING = firestore.Query.ASCENDING, firestore.Query.DESCENDING
#: Where a job keeps step results too large for its own document (jobs_lib.engine.durable).
STEPS_SUBCOLLECTION = "steps"


def _in_shards(query: Any, shards: Sequence[int]) -> Any:
    return query.where(
        filter=FieldFilter("shard", "in", list(shards))
        if len(shards) > 1
        else FieldFilter("shard", "==", shards[0])
    )


def _orderable(value: object) -> tuple[int, Any]:
    """A sort key that orders values of one kind as Firestore does and never compares kinds
    (an app's document may hold a number where a string belongs)."""
    if isinstance(value, bool) or value is None:
        return (0, bool(value))
    if isinstance(value, int | float):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    if isinstance(value, datetime):
        return (3, value)
    return (4, repr(value))


def _order_key(name: str, job: Job) -> tuple[int, Any]:
    return _orderable(job.raw.get(name))


def _listed(collection: Any) -> list[Any]:
    """Every document reference of a (small) collection."""
    return list(collection.list_documents(retry=None))


def adopted(job: Job) -> bool:
    """True for a document the runner's lanes can find: one with a valid ``shard`` (every job the
    library writes, and an app's once the runner has written to it: `JobStore.adoption_fields`)."""
    return valid_shard(job.raw.get("shard"))


_FINAL_VALUES = frozenset({Status.COMPLETED.value, Status.FAILED.value, Status.CANCELLED.value})


def dependents_flag(job: Job, fields: dict[str, Any]) -> dict[str, Any]:
    """``dependentsSettled: false`` when a write ends a job other jobs depend on: the obligation to
    release (or cancel) them, written in the same write as the final state, cleared by
    `jobs_lib.engine.followups.Releaser` once done, and found by its repair if the process dies
    between."""
    return (
        {"dependentsSettled": False}
        if job.has_follow_ups and fields.get("status") in _FINAL_VALUES
        else {}
    )


class JobStore(StorePart):
    """The `backgroundJobs` collection, and the facade over the store's other parts.

    Built on one `Connection`, it owns the job documents itself and holds the
    parts that share that connection: `partitions` (which worker reads which
    partition of the id space), `limits` (concurrency slots and paused types),
    `schedules` (``scheduledJobs``) and `rate_windows` (the API's counters).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        db: Any | None = None,
        clock: ServerClock | None = None,
        *,
        connection: Connection | None = None,
    ) -> None:
        super().__init__(settings, db, clock, connection=connection)
        self._prefix: str | None = None
        self.partitions = PartitionLeases(connection=self.connection)
        self.limits = ConcurrencyLimits(connection=self.connection)
        self.rates = RateTokens(connection=self.connection)
        self.schedules = ScheduleStore(connection=self.connection)
        self.rate_windows = RateWindows(connection=self.connection)
        self.minute_stats = MinuteStats(connection=self.connection)
        self.fair = FairKeys(connection=self.connection)

    @property
    def collection(self) -> Any:
        """The jobs collection reference."""
        return self.db.collection(self.settings.collection)

    def ref(self, job_id: str) -> Any:
        """The document reference of a job."""
        return self.collection.document(job_id)

    def adoption_fields(self, job: Job) -> dict[str, Any]:
        """What a document an app wrote (no ``shard``, maybe no ``status`` or
        ``createdAt``, times as ISO strings) needs to be found and listed like one `enqueue` wrote,
        added to the runner's first write to it (its claim, its final state without a run, or its
        shard when it is not due yet), never in a write of its own:

        * ``shard``, from its id (the lanes read the shard lanes);
        * ``createdAt``: the server's create time when it has none (the listings order by it), in
          the runner's form (a timestamp, or a UTC ISO string with ``JOBS_TIMESTAMPS=iso``); one the
          app wrote is left as written (the rules hold a client's to the server's time, give or
          take `clientClockSkew()`);
        * ``scheduledFor``: its time in the runner's form (a string with an offset sorts wrongly),
          or the create time when it has none (absent means "now");
        * ``status: "pending"`` when it has none (the worker's and the tick's queries find only
          ``pending``); the claim's or the outcome's own status comes after it and wins.

        Nothing for a document that already has its shard (written by the library, or adopted)."""
        if adopted(job):
            return {}
        fields: dict[str, Any] = {"shard": shard_of(job.id)}
        created = job.create_time
        if created is not None and job.raw.get("createdAt") is None:
            fields["createdAt"] = self.time_value(created)
        when = job.raw.get("scheduledFor")
        if when is None and created is not None:
            fields["scheduledFor"] = self.time_value(created)
        elif isinstance(when, str) and job.scheduled_for is not None:
            fields["scheduledFor"] = self.time_value(job.scheduled_for)
        if job.raw.get("status") is None:
            fields["status"] = Status.PENDING.value
        return fields

    def _document_prefix(self) -> str:
        if self._prefix is None:
            self._prefix = str(self.collection.document("x")._document_path)[:-1]
        return self._prefix

    def _applied(
        self, writes: Sequence[tuple[str, dict[str, Any], datetime | None]], kind: str
    ) -> list[bool]:
        """Conditioned updates of job documents in one BatchWrite RPC: whether each applied."""
        if not writes:
            return []
        return [r.ok for r in self.connection.batch_write(self._document_prefix(), writes, kind)]

    def run_query(self, query: Any, label: str = "query") -> list[Job]:
        """Run a query over job documents (built by a store part) and read each as a `Job`."""
        return [
            Job.from_document(row.id, row.fields, row.version, created=row.created)
            for row in self.connection.query(query, label)
        ]

    def _pending(self, shards: Sequence[int] | None = ALL_SHARDS) -> Any:
        """Pending jobs, in the shard lanes `shards` (None: every document, shard or not)."""
        query = self.collection.where(filter=FieldFilter("status", "==", Status.PENDING.value))
        return query if shards is None else _in_shards(query, shards)

    # -- reads ------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        """One job, or None when there is no such document."""
        snap = self.connection.get(self.ref(job_id), "get")
        return (
            Job.from_document(snap.id, snap.to_dict(), snap.update_time, created=snap.create_time)
            if snap.exists
            else None
        )

    def get_many(self, job_ids: Sequence[str], kind: str = "get_many") -> dict[str, Job]:
        """Several jobs in one call, by id (missing ones left out)."""
        snaps = self.connection.get_all([self.ref(i) for i in job_ids], kind)
        return {
            i: Job.from_document(i, s.to_dict(), s.update_time, created=s.create_time)
            for i, s in snaps.items()
        }

    def calibrate(self) -> None:
        """Measure the offset to the server's clock (one billed read of a missing document)."""
        self.get("clock-calibration")

    def _lane(
        self,
        label: str,
        base: Any,
        order: Sequence[tuple[str, str]],
        limit: int,
        shards: Sequence[int],
        start: int | None,
    ) -> list[Job]:
        """One lane over the shard range `shards` (contiguous), by shard, then `order`.

        The read starts at shard `start` (default: the first) and, when that leaves the page short,
        goes on from the first shard up to `start`: two queries at most, each one range of ``shard``
        on an index ``(equality fields..., shard, order fields...)``. Callers rotate `start` over a
        lasting backlog, so that every shard gets its turn (oldest first within each).
        """
        low, high = min(shards), max(shards)
        assert list(shards) == list(range(low, high + 1)), (
            f"shard lanes are read as one range: {shards}"
        )
        first = low if start is None or not low <= start <= high else start
        found: list[Job] = []
        for lo, hi in ((first, high), (low, first - 1)):
            if hi < lo or len(found) >= limit:
                continue
            query = (
                base.where(filter=FieldFilter("shard", ">=", lo))
                .where(filter=FieldFilter("shard", "<=", hi))
                .order_by("shard")
            )
            for name, direction in order:
                query = query.order_by(name, direction=direction)
            found += self.run_query(query.limit(limit - len(found)), label)
        if len(found) < limit:
            # A short page holds everything the lane has: put it in the lane's own order across
            # shards, so that a queue that fits in one page runs strictly by `order` (a full page
            # stays in shard order, which the callers' rotation of `start` reads from its end).
            for name, direction in reversed(order):
                found.sort(key=partial(_order_key, name), reverse=direction == DESCENDING)
        return found

    def due(
        self,
        now: datetime,
        limit: int,
        partition: int | None = None,
        exclude_types: Sequence[str] = (),
        *,
        start: int | None = None,
        shards: Sequence[int] = ALL_SHARDS,
    ) -> list[Job]:
        """Pending jobs whose timestamp ``scheduledFor`` has come: by shard from `start`, oldest
        first in each.

        Only the shard lanes `shards` (a tick sweeper's share); with `partition`, only that
        partition's shards, so that workers sharing a backlog do not race for the same documents.
        Jobs of `exclude_types` (paused, or at their concurrency limit) are left out (``not-in``),
        so they cannot crowd other types out of the page."""
        if partition is not None:
            shards = partition_shards(partition)
        base = self._pending(None).where(filter=FieldFilter("scheduledFor", "<=", now))
        order: list[tuple[str, str]] = [("scheduledFor", ASCENDING)]
        if exclude_types:
            base = base.where(filter=FieldFilter("type", "not-in", list(exclude_types)[:10]))
            order.append(("type", ASCENDING))
        return self._lane(
            "due:excluding" if exclude_types else "due", base, order, limit, shards, start
        )

    def due_by_priority(
        self,
        now: datetime,
        limit: int,
        *,
        shards: Sequence[int] = ALL_SHARDS,
        start: int | None = None,
    ) -> list[Job]:
        """Due pending jobs with a positive priority, highest first (in each shard)."""
        base = (
            self._pending(None)
            .where(filter=FieldFilter("priority", ">", 0))
            .where(filter=FieldFilter("scheduledFor", "<=", now))
        )
        return self._lane(
            "due_by_priority",
            base,
            [("priority", DESCENDING), ("scheduledFor", ASCENDING)],
            limit,
            shards,
            start,
        )

    def due_for_key(
        self,
        job_type: str,
        field: str,
        key: str,
        now: datetime,
        limit: int,
        *,
        shards: Sequence[int] = ALL_SHARDS,
        start: int | None = None,
    ) -> list[Job]:
        """Due pending jobs of one key of a fair type (its `field` equal to `key`), by shard from
        `start`, oldest first in each: a tenant's backlog costs the others nothing."""
        base = (
            self._pending(None)
            .where(filter=FieldFilter("type", "==", job_type))
            .where(filter=FieldFilter(field, "==", key))
            .where(filter=FieldFilter("scheduledFor", "<=", now))
        )
        return self._lane("due_for_key", base, [("scheduledFor", ASCENDING)], limit, shards, start)

    def next_for_key(self, job_type: str, field: str, key: str) -> Job | None:
        """A pending job of a key (due or not; the first of the first shard lane that has one), or
        None when the key has none."""
        base = (
            self._pending(None)
            .where(filter=FieldFilter("type", "==", job_type))
            .where(filter=FieldFilter(field, "==", key))
        )
        found = self._lane("next_for_key", base, [("scheduledFor", ASCENDING)], 1, ALL_SHARDS, None)
        return found[0] if found else None

    def key_has_live_jobs(self, job_type: str, field: str, key: str) -> bool:
        """Whether a key has a job that may become pending again: blocked on its flow, or running
        (a retry). One query of one document at most."""
        query = (
            self.collection.where(filter=FieldFilter("type", "==", job_type))
            .where(filter=FieldFilter(field, "==", key))
            .where(
                filter=FieldFilter("status", "in", [Status.BLOCKED.value, Status.IN_PROGRESS.value])
            )
            .limit(1)
        )
        return bool(self.connection.query(query, "key_has_live_jobs"))

    def due_of_type(
        self, job_type: str, now: datetime, limit: int, *, start: int | None = None
    ) -> list[Job]:
        """Due pending jobs of a type, whatever their key: by shard from `start`, oldest first in
        each."""
        base = (
            self._pending(None)
            .where(filter=FieldFilter("type", "==", job_type))
            .where(filter=FieldFilter("scheduledFor", "<=", now))
        )
        return self._lane(
            "due_of_type", base, [("scheduledFor", ASCENDING)], limit, ALL_SHARDS, start
        )

    def key_counts(self, job_type: str, field: str, key: str, now: datetime) -> tuple[int, int]:
        """A key's due pending jobs and running jobs (two count aggregations)."""
        by_key = self.collection.where(filter=FieldFilter("type", "==", job_type)).where(
            filter=FieldFilter(field, "==", key)
        )
        due = self.connection.count(
            self._pending()
            .where(filter=FieldFilter("type", "==", job_type))
            .where(filter=FieldFilter(field, "==", key))
            .where(filter=FieldFilter("scheduledFor", "<=", now)),
            "fair_due",
        )
        running = self.connection.count(
            by_key.where(filter=FieldFilter("status", "==", Status.IN_PROGRESS.value)),
            "fair_running",
        )
        return due, running

    def due_strings(
        self,
        now: datetime,
        limit: int,
        *,
        shards: Sequence[int] = ALL_SHARDS,
        start: int | None = None,
    ) -> list[Job]:
        """Pending jobs whose ``scheduledFor`` is an ISO string that may be due, by shard from
        `start`.

        The bound is widened by the largest UTC offset; callers check `Job.is_due` (and move the
        strings that are not due out of the lane: `normalize_times`).
        """
        bound = to_iso(now + MAX_UTC_OFFSET)
        base = self._pending(None).where(filter=FieldFilter("scheduledFor", "<=", bound))
        return self._lane("due_strings", base, [("scheduledFor", ASCENDING)], limit, shards, start)

    def normalize_times(self, jobs: Sequence[Job]) -> list[bool]:
        """Rewrite each job's ``scheduledFor`` as the runner writes times (a timestamp, or a UTC
        ``Z`` string whose text order is time order), conditioned on the version read: a string
        with an offset then no longer sorts among the due ones in the string lane. False where the
        job changed meanwhile."""
        writes = [
            (
                job.id,
                {**self.adoption_fields(job), "scheduledFor": self.time_value(job.scheduled_for)},
                job.version,
            )
            for job in jobs
            if job.scheduled_for is not None
        ]
        return self._applied(writes, "normalize_times")

    def scan_pending(self, after: str | None, limit: int) -> list[Job]:
        """A page of all pending jobs in id order, after the id `after`.

        The only way to find documents that lack ``scheduledFor`` or a valid ``shard`` (or hold
        something unreadable there): no index holds a missing field. Served by the single-field
        ``status`` index in document-id order, which no sequential value makes hot.
        """
        query = self._pending(None).order_by("__name__")
        if after:
            query = query.start_after({"__name__": self.ref(after)})
        return self.run_query(query.limit(limit), "scan_pending")

    def expired(
        self, now: datetime, limit: int, *, shards: Sequence[int] = ALL_SHARDS
    ) -> list[Job]:
        """Running jobs whose lease has lapsed: their worker died or lost contact."""
        base = self.collection.where(
            filter=FieldFilter("status", "==", Status.IN_PROGRESS.value)
        ).where(filter=FieldFilter("leaseExpiresAt", "<=", now))
        return self._lane("expired", base, [("leaseExpiresAt", ASCENDING)], limit, shards, None)

    def odd_statuses(self, limit: int) -> list[Job]:
        """Documents whose ``status`` is none of ours (a number, a map, ``"done"``) or null.

        ``not-in`` reads the ``status`` index outside our five values and ``== null`` one value of
        it, so the cost is that of the odd documents found, not of the collection.
        """
        ours = [s.value for s in Status]
        odd = self.run_query(
            self.collection.where(filter=FieldFilter("status", "not-in", ours)).limit(limit),
            "odd_statuses",
        )
        nulls = self.run_query(
            self.collection.where(filter=FieldFilter("status", "==", None)).limit(limit),
            "null_statuses",
        )
        return odd + nulls

    def cancel_requests(self, limit: int) -> list[Job]:
        """Pending jobs whose owner asked to cancel them (the one change the rules let a client
        make): ended ``cancelled`` at once, even when not due for hours. Two equality filters,
        which Firestore serves by merging the single-field indexes; the cost is the jobs found."""
        query = self.collection.where(
            filter=FieldFilter("status", "==", Status.PENDING.value)
        ).where(filter=FieldFilter("cancelRequested", "==", True))
        return self.run_query(query.limit(limit), "cancel_requests")

    def document_page(self, after: str | None, limit: int) -> list[Job]:
        """A page of every document in id order, after `after`: the one way to find documents
        written with no ``status`` at all (no index holds a missing field). Billed a read per
        document, whatever its state: the caller pages slowly (`jobs_lib.engine.discovery`)."""
        query = self.collection.order_by("__name__")
        if after:
            query = query.start_after({"__name__": self.ref(after)})
        return self.run_query(query.limit(limit), "document_page")

    def running_page(self, after: str | None, limit: int) -> list[Job]:
        """A page of the running jobs in id order, after `after` (the set is as small as the work in
        flight)."""
        query = self.collection.where(
            filter=FieldFilter("status", "==", Status.IN_PROGRESS.value)
        ).order_by("__name__")
        if after:
            query = query.start_after({"__name__": self.ref(after)})
        return self.run_query(query.limit(limit), "running_page")

    def expired_finished(self, now: datetime, limit: int) -> list[str]:
        """Ids of finished jobs whose ``expireAt`` has passed (for the cleanup where no TTL policy
        runs)."""
        return [job_id for job_id, _docs in self.expired_finished_jobs(now, limit)]

    def expired_finished_jobs(self, now: datetime, limit: int) -> list[tuple[str, bool]]:
        """`expired_finished`, each id with whether the job kept step results in documents of their
        own."""
        query = (
            _in_shards(self.collection, ALL_SHARDS)
            .where(filter=FieldFilter("expireAt", "<=", now))
            .order_by("expireAt")
            .limit(limit)
        )
        return [
            (row.id, row.fields.get("stepDocuments") is True)
            for row in self.connection.query(query, "expired_finished")
        ]

    # -- durable jobs (jobs_lib.engine.durable) ----------------------------------------------

    def create_wake(self, job_id: str, job_type: str, lifetime: timedelta) -> str | None:
        """Create a wake-up document (a `job_type` job naming `job_id`) whose created-event runs the
        job's next slice; it expires after `lifetime`. Returns its id, None if it could not be
        written (the job is pending and due: a tick or a worker takes it)."""
        wake_id = f"{job_id}-wake-{uuid.uuid4().hex[:10]}"
        data = self.new_job_fields(
            job_type,
            {"jobId": job_id},
            scheduled_for=None,
            priority=0,
            max_attempts=1,
            extra={"expireAt": self.now() + lifetime},
        )
        try:
            self.create(wake_id, data)
        except Exception:  # best effort: without it the next slice starts at the next tick
            log.warning("could not create the wake-up document of job %s", job_id, exc_info=True)
            return None
        return wake_id

    def delete(self, job_id: str, kind: str = "delete:job") -> None:
        """Delete one job document (one write)."""
        self.connection.write(partial(self.ref(job_id).delete, retry=None), kind)

    def _step_ref(self, job_id: str, document: str) -> Any:
        return self.ref(job_id).collection(STEPS_SUBCOLLECTION).document(document)

    def save_step_document(self, job_id: str, document: str, name: str, value: Any) -> None:
        """Write a large step result to a document of its own in the job's steps subcollection (one
        write; the job document then names it, in a write fenced by the claim)."""
        self.connection.write(
            partial(
                self._step_ref(job_id, document).set, {"step": name, "value": value}, retry=None
            ),
            "write:step_document",
        )

    def step_document(self, job_id: str, document: str) -> Any:
        """The result a step document holds (one read); raises `StoreRefused` when it is gone."""
        snap = self.connection.retrying(partial(self._step_ref(job_id, document).get, retry=None))
        self.stats.add(reads=1, kind="read:step_document")
        if not snap.exists:
            raise StoreRefused(
                f"job {job_id}: the document holding a step's result "
                f"({STEPS_SUBCOLLECTION}/{document}) is missing"
            )
        return (snap.to_dict() or {}).get("value")

    def delete_step_documents(self, job_ids: Iterable[str]) -> int:
        """Delete the step documents of these jobs (a listing and a delete per document); returns
        how many."""
        deleted = 0
        for job_id in job_ids:
            refs: list[Any] = self.connection.retrying(
                partial(_listed, self.ref(job_id).collection(STEPS_SUBCOLLECTION))
            )
            self.stats.add(reads=max(1, len(refs)), kind="read:step_documents")
            for start in range(0, len(refs), 400):
                batch = self.db.batch()
                chunk = refs[start : start + 400]
                for ref in chunk:
                    batch.delete(ref)
                self.connection.write(
                    partial(batch.commit, retry=None), "delete:step_document", writes=len(chunk)
                )
            deleted += len(refs)
        return deleted

    def count_by_status(self) -> dict[str, int]:
        """How many jobs are in each state (aggregation queries, one per state)."""
        return {
            status.value: self.connection.count(
                self.collection.where(filter=FieldFilter("status", "==", status.value)), "status"
            )
            for status in Status
        }

    def due_count(self, job_type: str, now: datetime) -> int:
        """How many pending jobs of a type are due (timestamp ``scheduledFor``): one count
        aggregation, billed one read per 1,000 index entries."""
        query = (
            self._pending()
            .where(filter=FieldFilter("type", "==", job_type))
            .where(filter=FieldFilter("scheduledFor", "<=", now))
        )
        return self.connection.count(query, "due")

    def count_jobs(
        self,
        *,
        status: str,
        job_type: str,
        org_id: str | None = None,
        scheduled_until: datetime | None = None,
        scheduled_after: datetime | None = None,
        completed_since: datetime | None = None,
    ) -> int:
        """How many jobs of a type are in a state (and an org), optionally due by or after a time,
        or finished since one: one count aggregation, billed one read per 1,000 index entries."""
        query = self.collection.where(filter=FieldFilter("status", "==", status)).where(
            filter=FieldFilter("type", "==", job_type)
        )
        if org_id is not None:
            query = query.where(filter=FieldFilter("orgId", "==", org_id))
        if (
            scheduled_until is not None
            or scheduled_after is not None
            or completed_since is not None
        ):
            query = _in_shards(query, ALL_SHARDS)  # a range on a timestamp: the sharded indexes
        if scheduled_until is not None:
            query = query.where(filter=FieldFilter("scheduledFor", "<=", scheduled_until))
        if scheduled_after is not None:
            query = query.where(filter=FieldFilter("scheduledFor", ">", scheduled_after))
        if completed_since is not None:
            query = query.where(filter=FieldFilter("completedAt", ">=", completed_since))
        return self.connection.count(query, f"overview:{status}")

    def count_matching(
        self, *, status: str, job_type: str | None = None, org_id: str | None = None
    ) -> int:
        """How many jobs are in a state, optionally of one type and organisation (one count
        aggregation)."""
        query = self.collection.where(filter=FieldFilter("status", "==", status))
        if job_type:
            query = query.where(filter=FieldFilter("type", "==", job_type))
        if org_id:
            query = query.where(filter=FieldFilter("orgId", "==", org_id))
        return self.connection.count(query, f"matching:{status}")

    def oldest_due(self, job_type: str, now: datetime, org_id: str | None = None) -> Job | None:
        """The pending job of a type that has been due longest (one ordered query, one read)."""
        query = self._pending().where(filter=FieldFilter("type", "==", job_type))
        if org_id is not None:
            query = query.where(filter=FieldFilter("orgId", "==", org_id))
        query = (
            query.where(filter=FieldFilter("scheduledFor", "<=", now))
            .order_by("scheduledFor")
            .limit(1)
        )
        found = self.run_query(query, "oldest_due")
        return found[0] if found else None

    def page(
        self,
        *,
        status: str,
        job_type: str | None,
        after: str | None,
        limit: int,
        org_id: str | None = None,
    ) -> list[Job]:
        """A page of jobs in one state (and type, and organisation), in id order after `after`."""
        query = self.collection.where(filter=FieldFilter("status", "==", status))
        if job_type:
            query = query.where(filter=FieldFilter("type", "==", job_type))
        if org_id:
            query = query.where(filter=FieldFilter("orgId", "==", org_id))
        query = query.order_by("__name__")
        if after:
            query = query.start_after({"__name__": self.ref(after)})
        return self.run_query(query.limit(limit), "page")

    def list_jobs(
        self,
        *,
        status: str | None = None,
        job_type: str | None = None,
        limit: int = 50,
    ) -> list[Job]:
        """Jobs filtered by status and type, in id order (for the command line)."""
        query = self.collection
        if status:
            query = query.where(filter=FieldFilter("status", "==", status))
        if job_type:
            query = query.where(filter=FieldFilter("type", "==", job_type))
        return self.run_query(query.limit(limit))

    # -- writes -----------------------------------------------------------------

    def new_id(self) -> str:
        """A fresh auto-id, the kind Firestore clients generate."""
        return str(self.collection.document().id)

    def new_job_fields(
        self,
        job_type: str,
        metadata: dict[str, Any],
        *,
        scheduled_for: datetime | None,
        priority: int,
        max_attempts: int | None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The document `enqueue` writes: everything the due-job queries look for."""
        data: dict[str, Any] = {
            "type": job_type,
            "status": Status.PENDING.value,
            "metadata": metadata,
            "createdAt": self.connection.now_value(),
            "scheduledFor": self.time_value(scheduled_for)
            if scheduled_for
            else self.connection.now_value(),
            "priority": priority,
            "attempts": 0,
        }
        if max_attempts is not None:
            data["maxAttempts"] = max_attempts
        data.update(extra or {})
        return data

    def create(
        self, job_id: str, data: dict[str, Any], *, transaction: Any = None, batch: Any = None
    ) -> None:
        """Create a job document; raises `DocumentExists` if the id is taken.

        With `transaction` or `batch` the create happens when the caller commits them.
        """
        ref = self.ref(job_id)
        data = with_shard(job_id, data)
        if transaction is not None:
            transaction.create(ref, data)
        elif batch is not None:
            batch.create(ref, data)
        else:
            self.connection.write(lambda: ref.create(data, retry=None), "write:create")

    def create_many(self, jobs: Sequence[tuple[str, dict[str, Any]]]) -> list[Created]:
        """Create up to 500 jobs in one BatchWrite RPC, each on its own and only where no document
        has its id: per job, in order, the job as created (its server timestamps as Firestore
        wrote them), or that its id was taken, or Firestore's refusal."""
        writes = [(job_id, with_shard(job_id, data), None) for job_id, data in jobs]
        stamps: list[list[datetime]] = []
        results = self.connection.batch_write(
            self._document_prefix(), writes, "create", create=True, server_times=stamps
        )
        out = []
        for (job_id, data, _v), result, values in zip(writes, results, stamps, strict=True):
            if result.ok and result.update_time is not None:
                names = [name for name, value in data.items() if value is SERVER_TIME]
                written = {**data, **dict(zip(names, values, strict=False))}
                out.append(Created(Job.from_document(job_id, written, result.update_time)))
            else:
                out.append(Created(None, exists=result.exists, message=result.message))
        return out

    def watch(self, job_id: str, on_change: Callable[[Job | None], None]) -> Callable[[], None]:
        """Listen to one job document: `on_change` gets the job at each change (None once it does
        not exist), one billed read each; returns what stops listening."""

        def changed(snapshots: list[Any], _changes: Any, _read_time: Any) -> None:
            self.stats.add(reads=1, kind="read:watch")
            snap = snapshots[0] if snapshots else None
            if snap is None or not snap.exists:
                on_change(None)
            else:
                on_change(
                    Job.from_document(
                        snap.id, snap.to_dict(), snap.update_time, created=snap.create_time
                    )
                )

        watch = self.ref(job_id).on_snapshot(changed)
        return watch.unsubscribe  # type: ignore[no-any-return]

    def create_documents(
        self, writes: Sequence[tuple[str, dict[str, Any]]], kind: str
    ) -> list[WriteResult]:
        """Create documents anywhere in the database (paths from its root; `SERVER_TIME` allowed),
        in one BatchWrite RPC, each on its own and only where no document is: a `WriteResult` per
        write (``ok``: created; ``exists``: the path was taken). For handlers that must never
        overwrite a document they did not write (`jobs_lib.builtin.notifications`)."""
        if not writes:
            return []
        root = self._document_prefix()[: -len(self.settings.collection) - 1]
        return self.connection.batch_write(
            root, [(path, data, None) for path, data in writes], kind, create=True
        )

    def documents(self, paths: Sequence[str], kind: str) -> dict[str, dict[str, Any]]:
        """Read documents anywhere in the database by path, in one call: the fields of those that
        exist."""
        if not paths:
            return {}
        refs = [self.db.document(path) for path in paths]
        snaps = self.connection.retrying(lambda: list(self.db.get_all(refs)))
        self.stats.add(reads=len(refs), kind=f"read:{kind}")
        return {snap.reference.path: snap.to_dict() or {} for snap in snaps if snap.exists}

    def get_in_transaction(self, job_id: str, transaction: Any) -> Job | None:
        """Read a job inside the caller's transaction."""
        snap = self.ref(job_id).get(transaction=transaction)
        self.stats.add(reads=1, kind="read:transaction")
        return (
            Job.from_document(snap.id, snap.to_dict(), snap.update_time, created=snap.create_time)
            if snap.exists
            else None
        )

    def claim_fields(self, job: Job, expires: datetime, holder: str, token: str) -> dict[str, Any]:
        """What a claim writes: in progress, one more attempt, the lease and its token."""
        return {
            **self.adoption_fields(job),
            **(
                {"webhook": True} if job.raw.get("webhook") is True else {}
            ),  # a handler's own URL is due at the job's end
            "status": Status.IN_PROGRESS.value,
            "startedAt": self.connection.now_value(),
            "updatedAt": self.connection.now_value(),
            "attempts": job.attempts + 1,
            "leaseExpiresAt": expires,
            "lease": {"holder": holder, "token": token},
        }

    def claim(self, jobs: Sequence[Job], holder: str, lease_seconds: float) -> list[Claim | None]:
        """Claim each job with one conditional write; None where another got there first."""
        if not jobs:
            return []
        now = self.now()
        expires = now + timedelta(seconds=lease_seconds)
        tokens = [uuid.uuid4().hex for _ in jobs]
        writes = [
            (job.id, self.claim_fields(job, expires, holder, token), job.version)
            for job, token in zip(jobs, tokens, strict=True)
        ]
        claims: list[Claim | None] = []
        for job, token, (code, update_time, _msg) in zip(
            jobs,
            tokens,
            self.connection.batch_write(self._document_prefix(), writes, "claim"),
            strict=True,
        ):
            if code == Code.OK and update_time is not None:
                claims.append(Claim(job, token, holder, update_time, job.attempts + 1, expires))
            else:
                claims.append(None)
        return claims

    def claim_with_slot(
        self, job: Job, slot: str, slot_version: datetime | None, holder: str, lease_seconds: float
    ) -> tuple[Claim, datetime] | None:
        """Claim a job and take a concurrency slot for it in one atomic commit: the claim and the
        slot's new version; None if either changed."""
        token = uuid.uuid4().hex
        expires = self.now() + timedelta(seconds=lease_seconds)
        taken = self.limits.take_slot(
            slot,
            slot_version,
            job.id,
            token,
            self.ref(job.id),
            self.claim_fields(job, expires, holder, token),
            job.version,
        )
        if taken is None:
            return None
        version, slot_now = taken
        return Claim(job, token, holder, version, job.attempts + 1, expires), slot_now

    def claim_with_token(
        self, job: Job, token: str, token_expires: datetime, holder: str, lease_seconds: float
    ) -> Claim | None:
        """Claim a job and take a rate-limit token for it in one atomic commit; None if the job
        changed; raises `jobs_lib.store.rate_tokens.TokenTaken` if another claimer has the token."""
        lease_token = uuid.uuid4().hex
        expires = self.now() + timedelta(seconds=lease_seconds)
        version = self.rates.take(
            token,
            token_expires,
            job.id,
            self.ref(job.id),
            self.claim_fields(job, expires, holder, lease_token),
            job.version,
        )
        return (
            Claim(job, lease_token, holder, version, job.attempts + 1, expires)
            if version is not None
            else None
        )

    def adopt(self, jobs: Sequence[Job]) -> list[Job]:
        """Write each job's `adoption_fields` (one BatchWrite RPC, each write conditioned on the
        version read); returns the jobs written, as they are now."""
        fields = [self.adoption_fields(job) for job in jobs]
        writes = [(job.id, f, job.version) for job, f in zip(jobs, fields, strict=True) if f]
        if not writes:
            return []
        results = self.connection.batch_write(self._document_prefix(), writes, "adopt")
        done = []
        for (job_id, written, _v), (code, update_time, _m) in zip(writes, results, strict=True):
            if code == Code.OK and update_time is not None:
                job = next(j for j in jobs if j.id == job_id)
                done.append(
                    Job.from_document(
                        job.id, {**job.raw, **written}, update_time, created=job.create_time
                    )
                )
        return done

    def assign_shard(self, job: Job) -> bool:
        """Give a document an app wrote without a valid ``shard`` its shard, so that the lanes find
        it (one write, conditioned on the version read; False when it changed meanwhile)."""
        return self.assign_shards([job]) == [True]

    def replace_metadata(self, job: Job, metadata: dict[str, Any]) -> bool:
        """Replace a job's metadata if the document is still as read (one conditional write)."""
        writes = [
            (
                job.id,
                {
                    **self.adoption_fields(job),
                    "metadata": metadata,
                    "updatedAt": self.connection.now_value(),
                },
                job.version,
            )
        ]
        return self._applied(writes, "replace_metadata") == [True]

    def assign_shards(self, jobs: Sequence[Job]) -> list[bool]:
        """`assign_shard` for several documents in one round trip (each gets its
        `adoption_fields`)."""
        writes = [
            (job.id, self.adoption_fields(job) or {"shard": shard_of(job.id)}, job.version)
            for job in jobs
        ]
        return self._applied(writes, "assign_shard")

    def settle(
        self, outcomes: Sequence[tuple[Job, Failed | Cancelled]], *, holder: str
    ) -> list[bool]:
        """Give jobs their final state without running them (poison, cancelled before start).

        Each write is conditioned on the version read and rotates the lease
        token, so that any earlier holder's writes are refused. False where the
        job changed meanwhile.
        """
        writes = [
            (
                job.id,
                {
                    **self.adoption_fields(job),
                    **self._outcome_fields(outcome),
                    **dependents_flag(job, {"status": "failed"}),
                    "updatedAt": self.connection.now_value(),
                    "lease": {"holder": holder, "token": uuid.uuid4().hex},
                },
                job.version,
            )
            for job, outcome in outcomes
        ]
        return self._applied(writes, "settle")

    def commit(self, writes: Sequence[FencedWrite]) -> None:
        """Apply fenced writes (at most one per job): one RPC, then a careful retry for any
        refused."""
        if not writes:
            return
        payload = [(w.claim.job_id, self._record_fields(w), w.claim.version) for w in writes]
        try:
            results = self.connection.batch_write(self._document_prefix(), payload, "record")
        except StoreUnavailable as exc:
            for w in writes:
                w.outcome = WriteOutcome(WriteStatus.ERROR, detail=str(exc))
            return
        for w, (code, update_time, message) in zip(writes, results, strict=True):
            if code == Code.OK and update_time is not None:
                w.claim.version = update_time
                w.outcome = WriteOutcome(WriteStatus.OK, update_time)
            elif code in (Code.FAILED_PRECONDITION, Code.NOT_FOUND):
                w.outcome = self._fenced_slow(w)
            elif code == Code.INVALID_ARGUMENT:
                w.outcome = WriteOutcome(WriteStatus.INVALID, detail=message)
            else:
                w.outcome = WriteOutcome(WriteStatus.ERROR, detail=message)

    def _fenced_slow(self, write: FencedWrite, attempts: int = 5) -> WriteOutcome:
        """The document changed since our last write: write only if the lease is still ours."""
        claim = write.claim
        for _ in range(attempts):
            try:
                snap = self.connection.retrying(
                    lambda: self.ref(claim.job_id).get(retry=None), budget=10
                )
            except StoreUnavailable as exc:
                return WriteOutcome(WriteStatus.ERROR, detail=str(exc))
            self.stats.add(reads=1, kind="read:record_checked")
            if not snap.exists:
                claim.lost = True
                return WriteOutcome(WriteStatus.LOST, detail="the job document was deleted")
            data = snap.to_dict() or {}
            lease: dict[str, Any] = data["lease"] if isinstance(data.get("lease"), dict) else {}
            if lease.get("token") != claim.token:
                claim.lost = True
                return WriteOutcome(WriteStatus.LOST, detail="the lease passed to another run")
            cancel = data.get("cancelRequested") is True
            claim.cancel_requested = claim.cancel_requested or cancel
            if data.get("status") != Status.IN_PROGRESS.value:
                # Our own earlier write landed though its answer was lost.
                claim.version = snap.update_time
                return WriteOutcome(WriteStatus.OK, snap.update_time, cancel, "already written")
            fields = self._record_fields(write)
            [(code, update_time, message)] = self.connection.batch_write(
                self._document_prefix(),
                [(claim.job_id, fields, snap.update_time)],
                "record_checked",
            )
            if code == Code.OK and update_time is not None:
                claim.version = update_time
                return WriteOutcome(WriteStatus.OK, update_time, cancel)
            if code == Code.INVALID_ARGUMENT:
                return WriteOutcome(WriteStatus.INVALID, detail=message)
            if code not in (Code.FAILED_PRECONDITION, Code.NOT_FOUND):
                return WriteOutcome(WriteStatus.ERROR, detail=message)
        return WriteOutcome(WriteStatus.ERROR, detail="the document kept changing under us")

    def update_checked(
        self,
        job_id: str,
        decide: Callable[[Job], Change | None],
        *,
        holder: str = "client",
        attempts: int = 10,
    ) -> tuple[Job | None, bool]:
        """Read a job, let `decide` say what to change (or None), write it if unchanged meanwhile.

        An optimistic transaction without locks; the policy is the caller's.
        A change of ``status`` rotates the lease token, so that whoever held
        the job before can no longer write to it. Returns the job as read last
        and whether the write happened; raises `Contention` if the document
        kept changing.
        """
        for _ in range(attempts):
            job = self.get(job_id)
            if job is None:
                return None, False
            change = decide(job)
            if change is None:
                return job, False
            fields = {**self._change_fields(change), "updatedAt": self.connection.now_value()}
            fields.update(dependents_flag(job, fields))
            if "status" in fields:
                fields["lease"] = {"holder": holder, "token": uuid.uuid4().hex}
            [(code, _t, message)] = self.connection.batch_write(
                self._document_prefix(), [(job_id, fields, job.version)], "update_checked"
            )
            if code == Code.OK:
                return job, True
            if code not in (Code.FAILED_PRECONDITION, Code.NOT_FOUND):
                raise StoreRefused(f"writing job {job_id} failed (code {code}): {message}")
        raise Contention(f"job {job_id} kept changing; gave up after {attempts} tries")

    # -- the fields each typed value becomes --------------------------------------

    def _record_fields(self, write: FencedWrite) -> dict[str, Any]:
        fields = self.update_fields(write.update)
        return {**fields, **dependents_flag(write.claim.job, fields)}

    def update_fields(self, update: Update) -> dict[str, Any]:
        """The document fields of an update to a claimed job."""
        fields: dict[str, Any] = {}
        if update.lease_expires_at is not None:
            # Lease times are always timestamps: the expired-lease query ranges over them.
            fields["leaseExpiresAt"] = update.lease_expires_at
        if update.progress:
            fields["progress"] = {**update.progress, "updatedAt": self.connection.now_value()}
        for name, record in (update.steps or {}).items():
            fields[f"steps.{name}"] = record
            if "document" in record:
                fields["stepDocuments"] = True  # the retention cleanup deletes those documents too
        if update.steps or update.has_cursor:
            # A recorded step ends the cursor of the step that ran (a new checkpoint sets the next).
            fields["cursor"] = (
                update.cursor
                if update.has_cursor and update.cursor is not None
                else firestore.DELETE_FIELD
            )
        if update.outcome is not None:
            fields.update(self._outcome_fields(update.outcome))
        fields["updatedAt"] = self.connection.now_value()
        return fields

    def _outcome_fields(self, outcome: Outcome) -> dict[str, Any]:
        now = self.connection.now_value()
        fields: dict[str, Any]
        if isinstance(outcome, Completed):
            fields = {
                "status": Status.COMPLETED.value,
                "completedAt": now,
                "result": outcome.result,
                "error": firestore.DELETE_FIELD,
                "errorDetails": firestore.DELETE_FIELD,
            }
        elif isinstance(outcome, Failed):
            fields = {
                "status": Status.FAILED.value,
                "completedAt": now,
                "error": outcome.error,
                "errorDetails": outcome.details,
            }
        elif isinstance(outcome, Cancelled):
            fields = {"status": Status.CANCELLED.value, "completedAt": now, "error": outcome.reason}
        elif isinstance(outcome, Retry):
            return {
                "status": Status.PENDING.value,
                "scheduledFor": self.time_value(outcome.run_at),
                "error": outcome.error,
                "errorDetails": outcome.details,
                "leaseExpiresAt": firestore.DELETE_FIELD,
            }
        elif isinstance(
            outcome, Continued
        ):  # the next slice goes on from the cursor; the attempt is not counted
            return {
                "status": Status.PENDING.value,
                "scheduledFor": self.time_value(outcome.run_at),
                "leaseExpiresAt": firestore.DELETE_FIELD,
                "attempts": outcome.attempts,
                "cursor": outcome.cursor if outcome.cursor is not None else firestore.DELETE_FIELD,
                "continuations": outcome.continuations,
                "sliceMs": list(outcome.slices),
                "activeMs": outcome.active_ms,
            }
        elif isinstance(outcome, Slept):  # due again when it wakes; the attempt is not counted
            return {
                "status": Status.PENDING.value,
                "scheduledFor": self.time_value(outcome.until),
                "leaseExpiresAt": firestore.DELETE_FIELD,
                "attempts": outcome.attempts,
                f"sleeps.{outcome.index}": outcome.until,
                "activeMs": outcome.active_ms,
            }
        else:  # Released: the interrupted attempt is not counted
            return {
                "status": Status.PENDING.value,
                "scheduledFor": self.time_value(outcome.run_at),
                "leaseExpiresAt": firestore.DELETE_FIELD,
                "attempts": outcome.attempts,
            }
        fields["leaseExpiresAt"] = firestore.DELETE_FIELD
        if outcome.expire_at is not None:
            fields["expireAt"] = outcome.expire_at
        return fields

    def _change_fields(self, change: Change) -> dict[str, Any]:
        if isinstance(change, CancelRequest):
            return {"cancelRequested": True}
        if isinstance(change, Retried):
            return {
                "status": Status.PENDING.value,
                "scheduledFor": self.connection.now_value(),
                "attempts": 0,
                **dict.fromkeys(
                    (
                        "cancelRequested",
                        "completedAt",
                        "startedAt",
                        "result",
                        "error",
                        "errorDetails",
                        "progress",
                        "expireAt",
                    ),
                    firestore.DELETE_FIELD,
                ),
            }
        return self._outcome_fields(change)

    # -- flows (jobs_lib.engine.followups) ---------------------------------------------------

    def create_atomically(
        self, jobs: Sequence[tuple[str, dict[str, Any]]], kind: str = "create_flow"
    ) -> None:
        """Create up to 500 jobs in one commit: all of them or none (`DocumentExists` if an id is
        taken)."""
        batch = self.db.batch()
        for job_id, data in jobs:
            self.create(job_id, data, batch=batch)
        self.connection.write(partial(batch.commit, retry=None), f"write:{kind}", writes=len(jobs))

    def dependents(self, parent_id: str, after: str | None, limit: int) -> list[Job]:
        """Blocked jobs that depend on `parent_id`, in id order after `after`.

        Equality on ``status`` and ``array-contains`` on ``dependsOn``: Firestore merges the two
        single-field indexes, so no composite index is needed.
        """
        query = (
            self.collection.where(filter=FieldFilter("dependsOn", "array_contains", parent_id))
            .where(filter=FieldFilter("status", "==", Status.BLOCKED.value))
            .order_by("__name__")
        )
        if after:
            query = query.start_after({"__name__": self.ref(after)})
        return self.run_query(query.limit(limit), "dependents")

    def unsettled_parents(self, limit: int) -> list[Job]:
        """Finished jobs whose dependents were not yet released (the process doing it died)."""
        query = self.collection.where(filter=FieldFilter("dependentsSettled", "==", False)).where(
            filter=FieldFilter("status", "in", sorted(_FINAL_VALUES))
        )
        return self.run_query(query.limit(limit), "unsettled_parents")

    def blocked_page(self, after: str | None, limit: int) -> list[Job]:
        """A page of the blocked jobs in id order after `after` (the repair's audit)."""
        query = self.collection.where(
            filter=FieldFilter("status", "==", Status.BLOCKED.value)
        ).order_by("__name__")
        if after:
            query = query.start_after({"__name__": self.ref(after)})
        return self.run_query(query.limit(limit), "blocked_page")

    def flow_page(self, flow_id: str, after: str | None, limit: int) -> list[Job]:
        """A page of one flow's jobs, in id order after `after`."""
        query = self.collection.where(filter=FieldFilter("flowId", "==", flow_id)).order_by(
            "__name__"
        )
        if after:
            query = query.start_after({"__name__": self.ref(after)})
        return self.run_query(query.limit(limit), "flow_page")

    def resolve_blocked(
        self, decisions: Sequence[tuple[Job, Failed | Cancelled | None]], *, holder: str = "flows"
    ) -> list[bool]:
        """End each blocked job's wait in one round trip, each write conditioned on the version
        read: None makes it pending (due now, or at its own later ``scheduledFor``), an outcome ends
        it. False where the job changed meanwhile (another process got there first)."""
        now = self.now()
        writes = []
        for job, outcome in decisions:
            if outcome is None:
                fields: dict[str, Any] = {"status": Status.PENDING.value}
                if job.scheduled_for is None or job.scheduled_for <= now:
                    fields["scheduledFor"] = self.connection.now_value()
            else:
                fields = {
                    **self._outcome_fields(outcome),
                    "lease": {"holder": holder, "token": uuid.uuid4().hex},
                }
                fields.update(dependents_flag(job, fields))
            writes.append(
                (
                    job.id,
                    {
                        **self.adoption_fields(job),
                        **fields,
                        "updatedAt": self.connection.now_value(),
                    },
                    job.version,
                )
            )
        return self._applied(writes, "resolve_blocked")

    def mark_settled(self, job: Job, extra: dict[str, Any] | None = None) -> bool:
        """Record that a finished job's follow-ups were dealt with (conditioned on the version
        read)."""
        writes = [(job.id, {"dependentsSettled": True, **(extra or {})}, job.version)]
        return self._applied(writes, "settled") == [True]

    # -- housekeeping for tests and tools --------------------------------------

    def delete_all(self, ids: Iterable[str]) -> int:
        """Delete jobs by id, 400 to a commit; returns how many."""
        todo = list(ids)
        for start in range(0, len(todo), 400):
            chunk = todo[start : start + 400]
            batch = self.db.batch()
            for job_id in chunk:
                batch.delete(self.ref(job_id))
            self.connection.write(
                partial(batch.commit, retry=None), "delete:job", writes=len(chunk)
            )
        return len(todo)


__all__ = ["DocumentExists", "JobStore"]


def open_store(settings: Settings | None = None, *, db: Any = None, clock: Any = None) -> JobStore:
    """A store on a connection of its own: the one place a store is built (`jobs_lib.app.App`,
    and a `JobsClient()` made on its own); every other part receives one."""
    return JobStore(connection=Connection(settings or Settings.from_env(), db, clock))
