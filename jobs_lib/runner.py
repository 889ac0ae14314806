"""Claim, run, record: the engine shared by the worker, the tick and the created-event function.

`Engine.claim` decides what each candidate document deserves (run it, fail
it as poison, cancel it, leave it), claims the runnable ones with one
conditional write each, and returns an `Execution` per claim. `Execution.run`
validates the input, calls the handler and records the outcome through the
recorder, fenced by the claim. A keeper thread renews leases, flushes
coalesced progress and abandons attempts that pass their timeout.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from pydantic import ValidationError

from jobs_lib.context import JobContext
from jobs_lib.errors import JobCancelled, LeaseLost, PermanentError
from jobs_lib.job import FINISHED, Job, Status
from jobs_lib.logs import JobLogger, event, job_fields
from jobs_lib.recorder import Recorder
from jobs_lib.registry import DEFAULT_RETENTION, HandlerRegistry, HandlerSpec, default_registry
from jobs_lib.results import storable_result
from jobs_lib.store import Claim, JobStore, WriteOutcome, WriteStatus

log = logging.getLogger("jobs_lib.runner")

#: Progress is written at most this often per job (a document takes about one write a second).
PROGRESS_INTERVAL = 1.0
#: The keeper wakes this often to renew leases and check timeouts.
KEEPER_INTERVAL = 0.5
#: A type found at its concurrency limit is not tried again for this long (unless one of ours ends).
SATURATION_SECONDS = 2.0
#: The paused types are read again this often.
PAUSED_REFRESH = 5.0


class Verdict(Enum):
    """What a candidate job deserves."""

    RUN = "run"
    FAIL = "fail"
    CANCEL = "cancel"
    SKIP = "skip"


@dataclass(frozen=True)
class Triage:
    """A verdict and why."""

    verdict: Verdict
    reason: str = ""


def new_holder_id() -> str:
    """An id for this process as a lease holder: host, pid and a random tag."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Engine:
    """Claims jobs and runs them, in this process."""

    def __init__(
        self,
        store: JobStore | None = None,
        registry: HandlerRegistry | None = None,
        *,
        holder: str | None = None,
        lease_seconds: float | None = None,
        runtime: str = "worker",
    ) -> None:
        self.store = store or JobStore()
        #: "worker" (``jobs worker``) or "function" (Cloud Functions: leaves worker_only handlers alone).
        self.runtime = runtime
        self.registry = registry if registry is not None else default_registry
        self.holder = holder or new_holder_id()
        self.lease_seconds = lease_seconds or self.store.settings.lease_seconds
        self.recorder = Recorder(self.store)
        self._active: dict[str, Execution] = {}
        self._lock = threading.Lock()
        self._keeper: threading.Thread | None = None
        self._stopping = threading.Event()
        self.log = JobLogger(log, {"worker": self.holder})
        #: (runnable jobs tried, claims won) in the last `claim` call.
        self.last_claim = (0, 0)
        self._saturated: dict[tuple[str, str], float] = {}
        self._paused: set[str] = set()
        self._paused_read = float("-inf")
        self._rng = random.Random()

    # -- deciding -----------------------------------------------------------------

    def spec_for(self, job: Job) -> HandlerSpec | None:
        """The handler registered for a job's type."""
        return self.registry.get(job.type)

    def paused_types(self) -> set[str]:
        """Types an operator paused (`jobs pause`), read at most every PAUSED_REFRESH seconds."""
        if time.monotonic() - self._paused_read > PAUSED_REFRESH:
            self._paused = self.store.paused_types()
            self._paused_read = time.monotonic()
        return self._paused

    def excluded_types(self) -> list[str]:
        """Types whose due jobs discovery should not even read now: paused, or at their limit."""
        now = time.monotonic()
        saturated = {job_type for (job_type, key), until in self._saturated.items() if key == "*" and until > now}
        return sorted(self.paused_types() | saturated)[:10]  # Firestore's not-in takes at most 10

    def _limit_key(self, job: Job, spec: HandlerSpec) -> str:
        if spec.concurrency_key is None:
            return "*"
        value = job.raw.get(spec.concurrency_key)
        return str(value) if value is not None else "-"

    def max_attempts(self, job: Job) -> int:
        """The job's own ``maxAttempts``, else its handler's."""
        spec = self.spec_for(job)
        return job.max_attempts or (spec.max_attempts if spec else 1)

    def triage(self, job: Job, now: datetime, max_timeout: float | None = None) -> Triage:
        """Decide what to do with a job document as read.

        `max_timeout` is the time this process can still give a job: handlers
        that may need longer are left for a runner with more time.
        """
        if job.status is None:
            return Triage(Verdict.FAIL, "; ".join(job.problems))
        if job.status in FINISHED:
            return Triage(Verdict.SKIP, f"already {job.status.value}")
        if job.status is Status.IN_PROGRESS:
            if not job.lease_expired(now):
                return Triage(Verdict.SKIP, "running elsewhere")
            if job.cancel_requested:
                return Triage(Verdict.CANCEL, "cancelled at the owner's request")
            limit = self.max_attempts(job)
            if job.attempts >= limit:
                return Triage(
                    Verdict.FAIL,
                    f"attempt {job.attempts} of {limit} never finished: the worker running it "
                    "stopped (crashed, was killed or lost its connection) and its lease expired",
                )
            return self._fits(job, max_timeout) or Triage(Verdict.RUN, "lease expired")
        if job.cancel_requested:
            return Triage(Verdict.CANCEL, "cancelled at the owner's request before it started")
        if job.problems:
            return Triage(Verdict.FAIL, "; ".join(job.problems))
        if not job.is_due(now):
            return Triage(Verdict.SKIP, "not due yet")
        if self.spec_for(job) is None:
            known = ", ".join(self.registry.types()) or "none"
            return Triage(
                Verdict.FAIL,
                f"no handler is registered for job type {job.type!r} (registered: {known}); "
                "load the module that defines it with --handlers or JOBS_HANDLERS",
            )
        return self._fits(job, max_timeout) or Triage(Verdict.RUN)

    def _fits(self, job: Job, max_timeout: float | None) -> Triage | None:
        """A SKIP when this runtime or the time left cannot hold the job's handler, else None."""
        spec = self.spec_for(job)
        if spec is None:
            return None
        if spec.type in self.paused_types():
            return Triage(Verdict.SKIP, "its type is paused")
        if spec.concurrency is not None and self._saturated.get((spec.type, self._limit_key(job, spec)), 0.0) > time.monotonic():
            return Triage(Verdict.SKIP, "its type is at its concurrency limit")
        if spec.worker_only and self.runtime != "worker":
            return Triage(Verdict.SKIP, "worker_only: left to jobs worker")
        if max_timeout is not None and spec.timeout > max_timeout:
            return Triage(Verdict.SKIP, f"needs up to {spec.timeout:g}s, {max_timeout:g}s left here")
        return None

    def expire_at(self, job: Job) -> datetime:
        """When a finished job may be deleted."""
        spec = self.spec_for(job)
        return self.store.now() + (spec.retention if spec else DEFAULT_RETENTION)

    # -- claiming -----------------------------------------------------------------

    def claim(self, jobs: list[Job], limit: int | None = None, max_timeout: float | None = None) -> list[Execution]:
        """Settle the poison and cancelled among `jobs`, claim up to `limit` runnable ones."""
        now = self.store.now()
        runnable: list[Job] = []
        settle: list[tuple[Job, dict[str, Any], str, str]] = []
        seen: set[str] = set()
        for job in jobs:
            if job.id in seen:
                continue
            seen.add(job.id)
            triage = self.triage(job, now, max_timeout)
            if triage.verdict is Verdict.RUN:
                if limit is None or len(runnable) < limit:
                    runnable.append(job)
            elif triage.verdict is Verdict.FAIL:
                details = {"reason": "invalid_job" if job.status is not Status.IN_PROGRESS else "lease_expired", "attempt": job.attempts}
                settle.append((job, self.store.failed_fields(triage.reason, details, self.expire_at(job)), "job_failed", triage.reason))
            elif triage.verdict is Verdict.CANCEL:
                settle.append((job, self.store.cancelled_fields(self.expire_at(job), triage.reason), "job_cancelled", triage.reason))
        if settle:
            results = self.store.settle([(job, fields) for job, fields, _e, _r in settle], holder=self.holder)
            for (job, _fields, name, reason), ok in zip(settle, results, strict=True):
                if ok:
                    level = logging.ERROR if name == "job_failed" else logging.INFO
                    event(self.log, name, f"job {job.id} {name.removeprefix('job_')}: {reason}", level=level, **job_fields(job.id, job.type, job.attempts), error=reason)
        executions = []
        plain = [job for job in runnable if (spec := self.spec_for(job)) is None or spec.concurrency is None]
        limited = [job for job in runnable if job not in plain]
        claims = self.store.claim(plain, self.holder, self.lease_seconds)
        for job in limited:
            claims.append(self._claim_limited(job))
        runnable = plain + limited
        self.last_claim = (len(plain), sum(c is not None for c in claims[: len(plain)]))
        for job, claim in zip(runnable, claims, strict=True):
            if claim is None:
                continue
            spec = self.spec_for(job)
            assert spec is not None  # triage checked
            execution = Execution(self, claim, spec)
            recovered = job.status is Status.IN_PROGRESS
            event(
                execution.logger,
                "job_recovered" if recovered else "job_claimed",
                f"job {job.id} claimed (attempt {claim.attempt})" + (" after its lease expired" if recovered else ""),
            )
            executions.append(execution)
        with self._lock:
            for execution in executions:
                self._active[execution.claim.job_id] = execution
        if executions:
            self._ensure_keeper()
        return executions

    def _claim_limited(self, job: Job) -> Claim | None:
        """Claim a job whose type has a concurrency limit: take a free slot with it, atomically."""
        spec = self.spec_for(job)
        assert spec is not None and spec.concurrency is not None
        key = self._limit_key(job, spec)
        if self._saturated.get((spec.type, key), 0.0) > time.monotonic():
            return None
        slots = self.store.read_slots(spec.type, key, spec.concurrency)
        holders = self.store.holders([str(f["jobId"]) for _i, f, _v in slots if f.get("jobId") and f.get("jobId") != job.id])
        now = self.store.now()
        free = [(slot, version) for slot, fields, version in slots if fields.get("jobId") == job.id or self.store.slot_is_free(fields, holders.get(str(fields.get("jobId"))), now)]
        if not free:
            self._saturated[(spec.type, key)] = time.monotonic() + SATURATION_SECONDS
            event(self.log, "job_waiting", f"job {job.id} waits: {spec.type} is at its limit of {spec.concurrency}" + (f" for {spec.concurrency_key}={key}" if spec.concurrency_key else ""), level=logging.DEBUG, **job_fields(job.id, job.type))
            return None
        self._rng.shuffle(free)
        expires = now + timedelta(seconds=self.lease_seconds)
        for slot, version in free[:2]:
            claim = self.store.claim_with_slot(job, slot, version, self.store.claim_fields(job, expires), self.holder, expires)
            if claim is not None:
                return claim
        return None

    def slot_released(self, job: Job) -> None:
        """One of our limited jobs ended: its slot is free, so stop treating the type as full."""
        spec = self.spec_for(job)
        if spec is not None and spec.concurrency is not None:
            self._saturated.pop((spec.type, self._limit_key(job, spec)), None)

    def forget(self, execution: Execution) -> None:
        """Stop tracking a finished execution."""
        with self._lock:
            if self._active.get(execution.claim.job_id) is execution:
                del self._active[execution.claim.job_id]

    def active(self) -> list[Execution]:
        """Executions this process is running."""
        with self._lock:
            return list(self._active.values())

    # -- the keeper ---------------------------------------------------------------

    def _ensure_keeper(self) -> None:
        with self._lock:
            if self._keeper is None or not self._keeper.is_alive():
                self._stopping.clear()
                self._keeper = threading.Thread(target=self._keep, name="jobs-keeper", daemon=True)
                self._keeper.start()

    def _keep(self) -> None:
        while not self._stopping.wait(KEEPER_INTERVAL):
            try:
                self.keep_once()
            except Exception:
                log.exception("lease keeper failed; retrying")

    def keep_once(self) -> None:
        """Renew leases that are a third spent, flush due progress, abandon timed-out attempts."""
        now = self.store.now()
        renew_before = now + timedelta(seconds=self.lease_seconds * 2 / 3)
        for execution in self.active():
            if execution.finished:
                continue
            if now >= execution.deadline:
                execution.time_out()
                continue
            execution.maintain(renew_before)

    def close(self) -> None:
        """Stop the keeper and flush the recorder."""
        self._stopping.set()
        self.recorder.close()


class Execution:
    """One attempt at one claimed job."""

    def __init__(self, engine: Engine, claim: Claim, spec: HandlerSpec) -> None:
        self.engine = engine
        self.claim = claim
        self.spec = spec
        self.logger = JobLogger(log, {**job_fields(claim.job_id, claim.job.type, claim.attempt), "worker": engine.holder})
        self.deadline = engine.store.now() + timedelta(seconds=spec.timeout)
        self.finished = False
        self.final_status: str | None = None
        self.lease_lost = False
        self.lost_reason = ""
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._progress: dict[str, Any] | None = None
        self._progress_written = 0.0
        self._maintaining = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None

    @property
    def cancel_requested(self) -> bool:
        """True once the owner asked to cancel (learnt from a refused write)."""
        return self.claim.cancel_requested or self.claim.job.cancel_requested

    # -- the handler's side -------------------------------------------------------

    def run(self) -> str | None:
        """Run the handler and record the outcome; returns the final status written (None if refused)."""
        try:
            self._run()
        except BaseException:
            log.exception("job %s: unexpected error while running", self.claim.job_id)
            raise
        finally:
            self.engine.forget(self)
            self.engine.slot_released(self.claim.job)
            self.done.set()
        return self.final_status

    def _run(self) -> None:
        job = self.claim.job
        try:
            value = self._validated_input(job)
        except _InvalidInput as exc:
            self._fail(str(exc), {"reason": "invalid_input"})
            return
        context: JobContext[Any] = JobContext(self, value)
        event(self.logger, "job_started", f"job {job.id} started ({job.type}, attempt {self.claim.attempt})", level=logging.DEBUG)
        try:
            result = self._run_async(context) if self.spec.is_async else self.spec.fn(context)
        except JobCancelled:
            self._finish(self.engine.store.cancelled_fields(self.engine.expire_at(job)), "cancelled", "job_cancelled")
        except (LeaseLost, asyncio.CancelledError):
            if self.cancel_requested and not self.lease_lost:
                self._finish(self.engine.store.cancelled_fields(self.engine.expire_at(job)), "cancelled", "job_cancelled")
            elif not self.finished:
                event(self.logger, "job_interrupted", f"job {job.id} stopped: {self.lost_reason or 'lease lost'}", level=logging.WARNING)
        except PermanentError as exc:
            self._fail(_describe(exc), {"reason": "permanent", "errorType": _qualname(exc)})
        except Exception as exc:
            self._failed_attempt(_describe(exc), {"errorType": _qualname(exc), "traceback": traceback.format_exc()[-4000:]})
        else:
            problem, stored = storable_result(result, job.raw)
            if problem:
                self._fail(problem, {"reason": "unstorable_result"})
            else:
                self._complete(stored)

    def _validated_input(self, job: Job) -> Any:
        metadata = job.metadata if isinstance(job.metadata, dict) else {}
        model = self.spec.input_model
        if model is None:
            return metadata
        try:
            return model.model_validate(metadata)
        except ValidationError as exc:
            raise _InvalidInput(f"metadata is not valid input for {self.spec.type}: {_summarise(exc)}") from None

    def _run_async(self, context: JobContext[Any]) -> Any:
        remaining = max((self.deadline - self.engine.store.now()).total_seconds(), 0.001)

        async def main() -> Any:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
            if self.cancel_requested or self.lease_lost:
                raise LeaseLost(self.lost_reason or "cancelled")
            return await asyncio.wait_for(self.spec.fn(context), timeout=remaining)

        try:
            return asyncio.run(main())
        except TimeoutError:
            self.time_out()
            raise LeaseLost("timed out") from None

    def report_progress(self, report: dict[str, Any]) -> None:
        """Called by `JobContext.progress`: write now, or coalesce into the next write."""
        with self._lock:
            self._progress = {**(self._progress or {}), **report}
            due = time.monotonic() - self._progress_written >= PROGRESS_INTERVAL and not self._maintaining
        if due:
            self.maintain(None)

    # -- recording ----------------------------------------------------------------

    def _complete(self, result: Any) -> None:
        fields = self.engine.store.completed_fields(result, self.engine.expire_at(self.claim.job))
        self._finish(fields, "completed", "job_completed")

    def _fail(self, error: str, details: dict[str, Any]) -> None:
        details = {"attempt": self.claim.attempt, **details}
        fields = self.engine.store.failed_fields(error, details, self.engine.expire_at(self.claim.job))
        self._finish(fields, "failed", "job_failed", error=error)

    def _failed_attempt(self, error: str, details: dict[str, Any]) -> None:
        """A failed attempt: retry after the backoff while attempts remain, else fail."""
        attempt = self.claim.attempt
        limit = self.engine.max_attempts(self.claim.job)
        if attempt >= limit:
            self._fail(f"{error} (attempt {attempt} of {limit}, no attempts left)", details)
            return
        delay = self.spec.backoff.seconds(attempt)
        run_at = self.engine.store.now() + timedelta(seconds=delay)
        fields = self.engine.store.retry_fields(error, {"attempt": attempt, **details}, run_at)
        self._finish(fields, "pending", "job_retrying", error=error, retryInSeconds=round(delay, 3))

    def time_out(self) -> None:
        """The attempt ran past its timeout: record it as failed (retried per policy) and stop listening to it.

        A job whose owner asked to cancel it ends ``cancelled`` instead: the
        handler ignored the request until its timeout.
        """
        if self.finished:
            return
        self.lost_reason = f"timed out after {self.spec.timeout:g}s"
        if self.cancel_requested:
            reason = f"cancelled at the owner's request; the handler did not stop by itself and was abandoned at its timeout of {self.spec.timeout:g}s"
            self._finish(self.engine.store.cancelled_fields(self.engine.expire_at(self.claim.job), reason), "cancelled", "job_cancelled")
        else:
            self._failed_attempt(f"the handler did not finish within its timeout of {self.spec.timeout:g}s", {"reason": "timeout"})
        self.lease_lost = True
        self._cancel_task()

    def release(self) -> None:
        """Hand the job back (the worker is shutting down): pending again at once, the attempt not counted."""
        fields = self.engine.store.released_fields(self.claim, self.engine.store.now())
        self._finish(fields, "pending", "job_released")
        self.lease_lost = True
        self.lost_reason = "released at shutdown"
        self._cancel_task()

    def _finish(self, fields: dict[str, Any], status: str, name: str, **extra: Any) -> None:
        with self._lock:
            if self.finished:
                event(self.logger, "job_result_refused", f"job {self.claim.job_id}: late {status} outcome ignored ({self.lost_reason})", level=logging.WARNING)
                return
            self.finished = True
            if self._progress:
                fields = {**fields, **self.engine.store.progress_fields(self._progress)}
        outcome = self.engine.recorder.write(self.claim, fields)
        duration = round((time.monotonic() - self._started) * 1000, 1)
        if outcome.status is WriteStatus.INVALID and status != "failed":
            with self._lock:
                self.finished = False
            self._fail(f"Firestore refused to store the outcome: {outcome.detail}", {"reason": "unstorable_result"})
            return
        if outcome.status is WriteStatus.OK:
            self.final_status = status
            level = logging.ERROR if name == "job_failed" else logging.INFO
            event(self.logger, name, f"job {self.claim.job_id} {name.removeprefix('job_')}", level=level, durationMs=duration, **extra)
        elif outcome.status is WriteStatus.LOST:
            self.lease_lost = True
            event(self.logger, "job_lease_lost", f"job {self.claim.job_id}: {status} outcome refused, {outcome.detail}", level=logging.WARNING, durationMs=duration)
        else:
            event(self.logger, "job_record_failed", f"job {self.claim.job_id}: could not record {status} ({outcome.detail}); the lease will expire and the job run again", level=logging.ERROR, durationMs=duration)

    # -- the keeper's side ----------------------------------------------------------

    def maintain(self, renew_before: datetime | None) -> None:
        """Renew the lease if it expires before `renew_before`, and write due progress."""
        with self._lock:
            if self.finished or self._maintaining:
                return
            fields: dict[str, Any] = {}
            expires = None
            if renew_before is not None and self.claim.lease_expires_at <= renew_before:
                expires = self.engine.store.now() + timedelta(seconds=self.engine.lease_seconds)
                fields.update(self.engine.store.renewal_fields(expires))
            if self._progress and time.monotonic() - self._progress_written >= PROGRESS_INTERVAL:
                fields.update(self.engine.store.progress_fields(self._progress))
                self._progress = None
                self._progress_written = time.monotonic()
            if not fields:
                return
            self._maintaining = True
        future = self.engine.recorder.submit(self.claim, fields)
        future.add_done_callback(lambda f: self._maintained(f.result(), expires))

    def _maintained(self, outcome: WriteOutcome, expires: datetime | None) -> None:
        with self._lock:
            self._maintaining = False
        if outcome.status is WriteStatus.OK and expires is not None:
            self.claim.lease_expires_at = expires
        elif outcome.status is WriteStatus.LOST and not self.finished:
            self.lease_lost = True
            self.lost_reason = outcome.detail or "lease lost"
            event(self.logger, "job_lease_lost", f"job {self.claim.job_id}: lease lost ({self.lost_reason}); stopping at the next check", level=logging.WARNING)
            self._cancel_task()
        if self.cancel_requested:
            self._cancel_task()

    def _cancel_task(self) -> None:
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)


class _InvalidInput(Exception):
    pass


def _qualname(exc: BaseException) -> str:
    kind = type(exc)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:1500]


def _summarise(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:10]:
        where = ".".join(str(p) for p in error.get("loc", ())) or "metadata"
        parts.append(f"metadata.{where}: {error.get('msg', 'invalid')}" if where != "metadata" else error.get("msg", "invalid"))
    more = len(exc.errors()) - 10
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


__all__ = ["Engine", "Execution", "Triage", "Verdict", "new_holder_id"]

