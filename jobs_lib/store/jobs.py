"""The ``backgroundJobs`` collection: every read, query and write of job documents, and their field names.

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

import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from jobs_lib.clock import MAX_UTC_OFFSET, to_iso
from jobs_lib.job import Job, Status
from jobs_lib.store.base import (
    _FAILED_PRECONDITION,
    _INVALID_ARGUMENT,
    _NOT_FOUND,
    _OK,
    PARTITION_BOUNDS,
    PARTITIONS,
    TRANSIENT,
    Claim,
    FencedWrite,
    StoreBase,
    WriteOutcome,
    WriteStatus,
)
from jobs_lib.store.limits import ConcurrencyLimits
from jobs_lib.store.slices import SliceLeases


class JobStore(SliceLeases, ConcurrencyLimits, StoreBase):
    """The `backgroundJobs` collection."""

    _prefix: str | None = None

    @property
    def collection(self) -> Any:
        """The jobs collection reference."""
        return self.db.collection(self.settings.collection)

    def ref(self, job_id: str) -> Any:
        """The document reference of a job."""
        return self.collection.document(job_id)


    def _document_prefix(self) -> str:
        if self._prefix is None:
            self._prefix = str(self.collection.document("x")._document_path)[:-1]
        return self._prefix

    def _job(self, snap: Any) -> Job:
        return Job.from_document(snap.id, snap.to_dict(), snap.update_time)

    def _run_query(self, query: Any, label: str = "query") -> list[Job]:
        return [Job.from_document(doc_id, fields, version) for doc_id, fields, version in self._query(query, label)]

    def _pending(self) -> Any:
        return self.collection.where(filter=FieldFilter("status", "==", Status.PENDING.value))

    # -- reads ------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        """One job, or None when there is no such document."""
        sent = time.time()
        snap = self._retrying(lambda: self.ref(job_id).get(retry=None))
        if snap.read_time is not None:
            self.clock.observe(snap.read_time, sent, time.time())
        self.stats.add(reads=1, kind="read:get")
        return self._job(snap) if snap.exists else None

    def calibrate(self) -> None:
        """Measure the offset to the server's clock (one billed read of a missing document)."""
        self.get("clock-calibration")

    def due(self, now: datetime, limit: int, partition: int | None = None, exclude_types: Sequence[str] = ()) -> list[Job]:
        """Pending jobs whose timestamp ``scheduledFor`` has come, oldest first.

        With `partition`, only ids in that slice of the id space, so that
        workers sharing a backlog do not race for the same documents. Jobs of
        `exclude_types` (paused, or at their concurrency limit) are left out,
        so they cannot crowd other types out of the page.
        """
        query = self._pending().where(filter=FieldFilter("scheduledFor", "<=", now))
        if exclude_types:
            query = query.where(filter=FieldFilter("type", "not-in", list(exclude_types)[:10]))
        if partition is not None:
            low = PARTITION_BOUNDS[partition]
            high = PARTITION_BOUNDS[partition + 1] if partition + 1 < PARTITIONS else None
            if low is not None:
                query = query.where(filter=FieldFilter("__name__", ">=", self.ref(low)))
            if high is not None:
                query = query.where(filter=FieldFilter("__name__", "<", self.ref(high)))
        return self._run_query(query.order_by("scheduledFor").limit(limit), "due")

    def due_by_priority(self, now: datetime, limit: int) -> list[Job]:
        """Due pending jobs with a positive priority, highest first."""
        query = (
            self._pending()
            .where(filter=FieldFilter("priority", ">", 0))
            .where(filter=FieldFilter("scheduledFor", "<=", now))
            .order_by("priority", direction=firestore.Query.DESCENDING)
            .order_by("scheduledFor")
            .limit(limit)
        )
        return self._run_query(query, "due_by_priority")

    def due_strings(self, now: datetime, limit: int) -> list[Job]:
        """Pending jobs whose ``scheduledFor`` is an ISO string that may be due.

        The bound is widened by the largest UTC offset; callers check `Job.is_due`.
        """
        bound = to_iso(now + MAX_UTC_OFFSET)
        query = self._pending().where(filter=FieldFilter("scheduledFor", "<=", bound))
        return self._run_query(query.order_by("scheduledFor").limit(limit), "due_strings")

    def scan_pending(self, after: str | None, limit: int) -> list[Job]:
        """A page of all pending jobs in id order, after the id `after`.

        The only way to find documents that lack ``scheduledFor`` (or hold
        something unreadable there): no index holds a missing field.
        """
        query = self._pending().order_by("__name__")
        if after:
            query = query.start_after({"__name__": self.ref(after)})
        return self._run_query(query.limit(limit), "scan_pending")

    def expired(self, now: datetime, limit: int) -> list[Job]:
        """Running jobs whose lease has lapsed: their worker died or lost contact."""
        query = (
            self.collection.where(filter=FieldFilter("status", "==", Status.IN_PROGRESS.value))
            .where(filter=FieldFilter("leaseExpiresAt", "<=", now))
            .order_by("leaseExpiresAt")
            .limit(limit)
        )
        return self._run_query(query, "expired")

    def expired_finished(self, now: datetime, limit: int) -> list[str]:
        """Ids of finished jobs whose ``expireAt`` has passed (for the cleanup where no TTL policy runs)."""
        query = self.collection.where(filter=FieldFilter("expireAt", "<=", now)).order_by("expireAt").limit(limit)
        return [doc_id for doc_id, _fields, _version in self._query(query, "expired_finished")]

    def count_by_status(self) -> dict[str, int]:
        """How many jobs are in each state (aggregation queries, one per state)."""
        counts: dict[str, int] = {}
        for status in Status:
            query = self.collection.where(filter=FieldFilter("status", "==", status.value)).count()
            result: Any = self._retrying(partial(query.get, retry=None))
            counts[status.value] = int(result[0][0].value)
            self.stats.add(reads=1, queries=1, kind="query:count")
        return counts

    def page(self, *, status: str, job_type: str | None, after: str | None, limit: int) -> list[Job]:
        """A page of jobs in one state (and type), in id order after `after`."""
        query = self.collection.where(filter=FieldFilter("status", "==", status))
        if job_type:
            query = query.where(filter=FieldFilter("type", "==", job_type))
        query = query.order_by("__name__")
        if after:
            query = query.start_after({"__name__": self.ref(after)})
        return self._run_query(query.limit(limit), "page")

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
        return self._run_query(query.limit(limit))

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
            "createdAt": self._now_value(),
            "scheduledFor": self.time_value(scheduled_for) if scheduled_for else self._now_value(),
            "priority": priority,
            "attempts": 0,
        }
        if max_attempts is not None:
            data["maxAttempts"] = max_attempts
        data.update(extra or {})
        return data

    def create(self, job_id: str, data: dict[str, Any], *, transaction: Any = None, batch: Any = None) -> None:
        """Create a job document; raises `google.api_core.exceptions.AlreadyExists` if the id is taken."""
        ref = self.ref(job_id)
        if transaction is not None:
            transaction.create(ref, data)
        elif batch is not None:
            batch.create(ref, data)
        else:
            self._retrying(lambda: ref.create(data, retry=None))
            self.stats.add(writes=1, kind="write:create")

    def get_in_transaction(self, job_id: str, transaction: Any) -> Job | None:
        """Read a job inside the caller's transaction."""
        snap = self.ref(job_id).get(transaction=transaction)
        self.stats.add(reads=1, kind="read:transaction")
        return self._job(snap) if snap.exists else None

    def claim_fields(self, job: Job, expires: datetime) -> dict[str, Any]:
        """What a claim writes (the lease itself is added by the caller)."""
        return {
            "status": Status.IN_PROGRESS.value,
            "startedAt": self._now_value(),
            "updatedAt": self._now_value(),
            "attempts": job.attempts + 1,
            "leaseExpiresAt": expires,
        }

    def claim(self, jobs: Sequence[Job], holder: str, lease_seconds: float) -> list[Claim | None]:
        """Claim each job with one conditional write; None where another got there first."""
        if not jobs:
            return []
        now = self.now()
        expires = now + timedelta(seconds=lease_seconds)
        tokens = [uuid.uuid4().hex for _ in jobs]
        writes = [(job.id, {**self.claim_fields(job, expires), "lease": {"holder": holder, "token": token}}, job.version) for job, token in zip(jobs, tokens, strict=True)]
        claims: list[Claim | None] = []
        for job, token, (code, update_time, _msg) in zip(jobs, tokens, self._batch_write(self._document_prefix(), writes, "claim"), strict=True):
            if code == _OK and update_time is not None:
                claims.append(Claim(job, token, holder, update_time, job.attempts + 1, expires))
            else:
                claims.append(None)
        return claims

    def settle(self, outcomes: Sequence[tuple[Job, dict[str, Any]]], *, holder: str) -> list[bool]:
        """Give jobs their final state without running them (poison, cancelled before start).

        Each write is conditioned on the version read and rotates the lease
        token, so that any earlier holder's writes are refused. False where the
        job changed meanwhile.
        """
        writes = [
            (
                job.id,
                {
                    **fields,
                    "updatedAt": self._now_value(),
                    "lease": {"holder": holder, "token": uuid.uuid4().hex},
                    "leaseExpiresAt": firestore.DELETE_FIELD,
                },
                job.version,
            )
            for job, fields in outcomes
        ]
        return [code == _OK for code, _t, _m in self._batch_write(self._document_prefix(), writes, "settle")] if writes else []

    def commit(self, writes: Sequence[FencedWrite]) -> None:
        """Apply fenced writes (at most one per job): one RPC, then a careful retry for any refused."""
        if not writes:
            return
        payload = [(w.claim.job_id, {**w.fields, "updatedAt": self._now_value()}, w.claim.version) for w in writes]
        try:
            results = self._batch_write(self._document_prefix(), payload, "record")
        except TRANSIENT as exc:
            for w in writes:
                w.outcome = WriteOutcome(WriteStatus.ERROR, detail=str(exc))
            return
        for w, (code, update_time, message) in zip(writes, results, strict=True):
            if code == _OK and update_time is not None:
                w.claim.version = update_time
                w.outcome = WriteOutcome(WriteStatus.OK, update_time)
            elif code in (_FAILED_PRECONDITION, _NOT_FOUND):
                w.outcome = self._fenced_slow(w)
            elif code == _INVALID_ARGUMENT:
                w.outcome = WriteOutcome(WriteStatus.INVALID, detail=message)
            else:
                w.outcome = WriteOutcome(WriteStatus.ERROR, detail=message)

    def _fenced_slow(self, write: FencedWrite, attempts: int = 5) -> WriteOutcome:
        """The document changed since our last write: write only if the lease is still ours."""
        claim = write.claim
        for _ in range(attempts):
            try:
                snap = self._retrying(lambda: self.ref(claim.job_id).get(retry=None), budget=10)
            except TRANSIENT as exc:
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
            fields = {**write.fields, "updatedAt": self._now_value()}
            [(code, update_time, message)] = self._batch_write(self._document_prefix(), [(claim.job_id, fields, snap.update_time)], "record_checked")
            if code == _OK and update_time is not None:
                claim.version = update_time
                return WriteOutcome(WriteStatus.OK, update_time, cancel)
            if code not in (_FAILED_PRECONDITION, _NOT_FOUND):
                return WriteOutcome(WriteStatus.ERROR, detail=message)
        return WriteOutcome(WriteStatus.ERROR, detail="the document kept changing under us")

    def update_checked(
        self,
        job_id: str,
        decide: Callable[[Job], dict[str, Any] | None],
        *,
        holder: str = "client",
        attempts: int = 10,
    ) -> tuple[Job | None, bool]:
        """Read a job, let `decide` return fields to write (or None), write them if unchanged meanwhile.

        An optimistic transaction without locks. A write that changes
        ``status`` rotates the lease token, so that whoever held the job
        before can no longer write to it. Returns the job as read last and
        whether the write happened.
        """
        for _ in range(attempts):
            job = self.get(job_id)
            if job is None:
                return None, False
            fields = decide(job)
            if fields is None:
                return job, False
            fields = {**fields, "updatedAt": self._now_value()}
            if "status" in fields:
                fields["lease"] = {"holder": holder, "token": uuid.uuid4().hex}
            [(code, _t, message)] = self._batch_write(self._document_prefix(), [(job_id, fields, job.version)], "update_checked")
            if code == _OK:
                return job, True
            if code not in (_FAILED_PRECONDITION, _NOT_FOUND):
                raise gexc.GoogleAPICallError(f"writing job {job_id} failed (code {code}): {message}")  # type: ignore[no-untyped-call]
        raise gexc.Aborted(f"job {job_id} kept changing; gave up after {attempts} tries")  # type: ignore[no-untyped-call]

    # -- field sets for the runner's writes ------------------------------------

    def renewal_fields(self, expires: datetime) -> dict[str, Any]:
        """Extend a lease. (Lease times are always timestamps: the expired-lease query ranges over them.)"""
        return {"leaseExpiresAt": expires}

    def progress_fields(self, progress: dict[str, Any]) -> dict[str, Any]:
        """Report progress (``percent``, ``message``, ``currentStep``, ``totalSteps``)."""
        return {"progress": {**progress, "updatedAt": self._now_value()}}

    def completed_fields(self, result: Any, expire_at: datetime | None) -> dict[str, Any]:
        """The job succeeded."""
        fields = {
            "status": Status.COMPLETED.value,
            "completedAt": self._now_value(),
            "result": result,
            "error": firestore.DELETE_FIELD,
            "errorDetails": firestore.DELETE_FIELD,
            "leaseExpiresAt": firestore.DELETE_FIELD,
        }
        if expire_at is not None:
            fields["expireAt"] = expire_at
        return fields

    def failed_fields(self, error: str, details: dict[str, Any], expire_at: datetime | None) -> dict[str, Any]:
        """The job failed for good."""
        fields = {
            "status": Status.FAILED.value,
            "completedAt": self._now_value(),
            "error": error,
            "errorDetails": details,
            "leaseExpiresAt": firestore.DELETE_FIELD,
        }
        if expire_at is not None:
            fields["expireAt"] = expire_at
        return fields

    def retry_fields(self, error: str, details: dict[str, Any], run_at: datetime) -> dict[str, Any]:
        """The attempt failed; the job waits for `run_at` and runs again."""
        return {
            "status": Status.PENDING.value,
            "scheduledFor": self.time_value(run_at),
            "error": error,
            "errorDetails": details,
            "leaseExpiresAt": firestore.DELETE_FIELD,
        }

    def cancelled_fields(self, expire_at: datetime | None, reason: str = "cancelled at the owner's request") -> dict[str, Any]:
        """The job was cancelled."""
        fields = {
            "status": Status.CANCELLED.value,
            "completedAt": self._now_value(),
            "error": reason,
            "leaseExpiresAt": firestore.DELETE_FIELD,
        }
        if expire_at is not None:
            fields["expireAt"] = expire_at
        return fields

    def retried_fields(self) -> dict[str, Any]:
        """A failed or cancelled job, sent back to pending by hand with its attempts reset."""
        return {
            "status": Status.PENDING.value,
            "scheduledFor": self._now_value(),
            "attempts": 0,
            "cancelRequested": firestore.DELETE_FIELD,
            "completedAt": firestore.DELETE_FIELD,
            "startedAt": firestore.DELETE_FIELD,
            "result": firestore.DELETE_FIELD,
            "error": firestore.DELETE_FIELD,
            "errorDetails": firestore.DELETE_FIELD,
            "progress": firestore.DELETE_FIELD,
            "expireAt": firestore.DELETE_FIELD,
        }

    def released_fields(self, claim: Claim, run_at: datetime) -> dict[str, Any]:
        """Hand a claimed job back (a worker shutting down): the interrupted attempt is not counted."""
        return {
            "status": Status.PENDING.value,
            "scheduledFor": self.time_value(run_at),
            "leaseExpiresAt": firestore.DELETE_FIELD,
            "attempts": max(claim.attempt - 1, 0),
        }

    # -- housekeeping for tests and tools --------------------------------------

    def delete_all(self, ids: Iterable[str]) -> int:
        """Delete jobs by id, 400 to a commit; returns how many."""
        batch = self.db.batch()
        count = 0
        for count, job_id in enumerate(ids, 1):
            batch.delete(self.ref(job_id))
            if count % 400 == 0:
                self._retrying(partial(batch.commit, retry=None))
                batch = self.db.batch()
        if count % 400:
            self._retrying(lambda: batch.commit(retry=None))
        self.stats.add(writes=count, kind="delete:job")
        return count


__all__ = ["JobStore"]
