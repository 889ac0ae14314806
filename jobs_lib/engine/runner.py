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
import contextlib
import logging
import os
import random
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError

from jobs_lib.context import JobContext
from jobs_lib.engine.durable import (
    INLINE_STEP_BYTES,
    INLINE_TOTAL_BYTES,
    KEPT_SLICES,
    MAX_STEPS,
    MIN_SLICE_SECONDS,
    SLICE_MARGIN_SECONDS,
    SavedStep,
    Suspend,
    cursor_value,
    saved_steps,
    step_value,
)
from jobs_lib.engine.followups import Releaser
from jobs_lib.engine.keeper import Keeper
from jobs_lib.engine.recorder import Recorder
from jobs_lib.engine.throughput import MinuteCounter
from jobs_lib.errors import JobCancelled, LeaseLost, PermanentError, StoreUnavailable
from jobs_lib.limits import Policy, registered
from jobs_lib.model.decisions import AttemptEnd, Ending, decide
from jobs_lib.model.job import FINISHED, Job, Status
from jobs_lib.model.outcomes import (
    Cancelled,
    Completed,
    Continued,
    Failed,
    Outcome,
    Released,
    Retry,
    Slept,
    Update,
)
from jobs_lib.observability.logs import JobLogger, event, job_fields
from jobs_lib.observability.telemetry import Telemetry, log_fields, span_context, used
from jobs_lib.registry import DEFAULT_RETENTION, HandlerRegistry, HandlerSpec, default_registry
from jobs_lib.store import Claim, JobStore, WriteOutcome, WriteStatus, encoded_size
from jobs_lib.store.jobs import adopted
from jobs_lib.store.results import storable_result

log = logging.getLogger("jobs_lib.runner")

#: Progress is written at most this often per job (a document takes about one write a second).
PROGRESS_INTERVAL = 1.0
#: No lease the runner writes runs longer than this past its write (Settings.lease_seconds is at
#: most 600).
MAX_LEASE_SECONDS = 660.0
#: The paused types are read again this often.
PAUSED_REFRESH = 5.0
#: Closing waits at most this long for the minute counts' last write.
CLOSE_FLUSH_SECONDS = 5.0


class Verdict(Enum):
    """What a candidate job deserves."""

    RUN = "run"
    FAIL = "fail"
    CANCEL = "cancel"
    SKIP = "skip"
    #: Runnable as soon as its type (or key) has room again: at its concurrency limit, or its rate
    #: used up for this window. A worker keeps such candidates and claims them when room frees.
    WAIT = "wait"


@dataclass(frozen=True)
class Triage:
    """A verdict and why."""

    verdict: Verdict
    reason: str = ""


def new_holder_id() -> str:
    """An id for this process as a lease holder: host, pid and a random tag."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class _Sorted:
    """The jobs of one claim call, by what triage said of them."""

    runnable: list[Job] = field(default_factory=list)
    unused: list[Job] = field(default_factory=list)
    left: list[Job] = field(default_factory=list)
    waiting: set[str] = field(default_factory=set)
    settle: list[tuple[Job, Failed | Cancelled, str, str]] = field(default_factory=list)


@dataclass
class ClaimReport:
    """What one `Engine.claim_report` call did with the jobs it was given."""

    #: The jobs claimed, ready to run.
    executions: list[Execution] = field(default_factory=list)
    #: Runnable jobs tried, and claims won among them (a job its limit kept back is not tried):
    #: claims lost tell a worker that other runners read the same jobs.
    tried: int = 0
    won: int = 0
    #: Jobs left because their type (or key) was at its limit, as they are now (an app's job
    #: given its shard lane meanwhile): claimable once room frees.
    waiting: list[Job] = field(default_factory=list)
    #: Runnable jobs not tried, past the call's `limit`: still candidates.
    unused: list[Job] = field(default_factory=list)
    #: Jobs it meant to settle (poison, cancelled) whose version had changed meanwhile.
    settle_refused: list[str] = field(default_factory=list)

    @property
    def held(self) -> list[Job]:
        """The jobs still worth claiming later without reading them again."""
        return self.waiting + self.unused


class Engine:
    """Claims jobs and runs them, in this process."""

    def __init__(
        self,
        store: JobStore,
        registry: HandlerRegistry | None = None,
        *,
        holder: str | None = None,
        lease_seconds: float | None = None,
        runtime: str = "worker",
        telemetry: Telemetry | None = None,
        policies: Sequence[Policy] = (),
    ) -> None:
        """`policies`: the application's own (`jobs_lib.limits.policy.Policy`), asked after the
        built-in ones."""
        self.store = store  # built by jobs_lib.app.App, the one assembly
        #: "worker" (``jobs worker``) or "function" (Cloud Functions: leaves worker_only handlers
        #: alone).
        self.runtime = runtime
        self.registry = registry if registry is not None else default_registry
        self.holder = holder or new_holder_id()
        self.lease_seconds = lease_seconds or self.store.settings.lease_seconds
        self.telemetry = telemetry or Telemetry(runtime)
        #: Outcomes per minute, for the console's chart (written a few times a minute).
        self.throughput = MinuteCounter(self.store.minute_stats, self.holder)
        self.recorder = Recorder(self.store)
        self._active: dict[str, Execution] = {}
        self._lock = threading.Lock()
        self.log = JobLogger(log, {"worker": self.holder})
        self.keeper = Keeper(self.store.now, self.lease_seconds, self.active)
        self._breaker_state: dict[str, dict[str, Any]] = {}
        self._control_watch: Any = None
        #: What may run now, and what happens after (jobs_lib.limits): asked in this order.
        self.policies: list[Policy] = registered(
            self.store,
            self.holder,
            self.lease_seconds,
            self.log,
            paused=self.paused_types,
            control=lambda: self._breaker_state,
            specs=self.registry.get,
            all_specs=self.registry.specs,
        ) + list(policies)
        self.flows = Releaser(self.store, self.registry, self.holder)
        self._paused: set[str] = set()
        self._paused_read = float("-inf")
        self._rng = random.Random()

    # -- deciding -----------------------------------------------------------------

    def spec_for(self, job: Job) -> HandlerSpec | None:
        """The handler registered for a job's type."""
        return self.registry.get(job.type)

    def paused_types(self) -> set[str]:
        """Types an operator paused (`jobs pause`), read at most every PAUSED_REFRESH seconds."""
        if self._control_watch is None:  # decided once: the first call looks at the handlers
            self._control_watch = False
            if any(
                spec.breaker is not None
                for spec in map(self.registry.get, self.registry.types())
                if spec
            ):
                # A breaker must stop every runner at once, not within PAUSED_REFRESH: listen
                # instead.
                try:
                    self._control_watch = self.store.limits.watch_control(self._control_changed)
                except Exception:
                    log.warning(
                        "could not listen to the control document; reading it every %ss",
                        PAUSED_REFRESH,
                        exc_info=True,
                    )
        if time.monotonic() - self._paused_read > (
            PAUSED_REFRESH * 12 if self._control_watch else PAUSED_REFRESH
        ):
            self._control_changed(*self.store.limits.control_state())
        return self._paused

    def _control_changed(self, paused: set[str], breakers: dict[str, dict[str, Any]]) -> None:
        self._paused, self._breaker_state = paused, breakers
        self._paused_read = time.monotonic()
        for policy in self.policies:
            policy.refreshed()

    def excluded_types(self) -> list[str]:
        """Types whose due jobs discovery should not even read now: paused, or at their limit."""
        self.paused_types()  # reads the control document when due (pauses, breakers)
        now = self.store.now()
        excluded = set().union(*(policy.excluded_types(now) for policy in self.policies))
        return sorted(excluded)[:10]  # Firestore's not-in takes at most 10

    def lanes(
        self, now: datetime, limit: int, shards: Sequence[int], fresh_only: bool = False
    ) -> list[Job]:
        """Candidates the policies read themselves (fair shares' per-key reads), in the order they
        should be tried; none of a type another policy excludes now (paused, at its limit). With
        `fresh_only`, only what is new since the last full call (`Policy.lane`)."""
        excluded = [policy.excluded_types(now) for policy in self.policies]
        skip: set[str] = set().union(*excluded)
        found: list[Job] = []
        for policy, own in zip(self.policies, excluded, strict=True):
            found += policy.lane(now, limit, shards, skip - own, fresh_only=fresh_only)
        return found

    def substitute(self, job: Job) -> list[Job]:
        """Jobs a created-event of `job` should try to run in its place (fair shares), in order;
        empty when it runs its own."""
        spec = self.spec_for(job)
        if spec is None:
            return []
        now = self.store.now()
        for policy in self.policies:
            jobs = policy.substitute(job, spec, now)
            if jobs:
                return jobs
        return []

    def next_room(self) -> float | None:
        """When (monotonic) a type or key now at its limit may have room again, or None: a worker
        holding jobs that wait for room claims them then, or when one of its own jobs ends."""
        ends = [t for t in (policy.next_room() for policy in self.policies) if t is not None]
        return min(ends) if ends else None

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
        if job.status is Status.BLOCKED:
            if job.problems:
                return Triage(Verdict.FAIL, "; ".join(job.problems))
            return Triage(Verdict.SKIP, "blocked: waiting for the jobs it depends on")
        if job.status is Status.IN_PROGRESS:
            # A lease jobs_lib wrote lasts at most 600 s from its write; one that claims longer is
            # not ours.
            bogus = (
                job.lease is not None
                and job.lease.expires_at is not None
                and job.version is not None
                and (job.lease.expires_at - job.version).total_seconds() > MAX_LEASE_SECONDS
            )
            orphan = bogus or not job.leased_by_a_runner
            if orphan:
                # Marked in_progress by someone else (an app's own write) or with a lease not in our
                # shape: give its owner `orphan_seconds` from its last change, then recover it.
                untouched = (now - job.version).total_seconds() if job.version else None
                if untouched is not None and untouched < self.store.settings.orphan_seconds:
                    return Triage(
                        Verdict.SKIP,
                        f"in_progress without a lease of ours for {untouched:.0f}s; orphaned "
                        f"after {self.store.settings.orphan_seconds:g}s",
                    )
            elif not job.lease_expired(now):
                return Triage(Verdict.SKIP, "running elsewhere")
            if job.cancel_requested:
                return Triage(Verdict.CANCEL, "cancelled at the owner's request")
            limit = self.max_attempts(job)
            if job.attempts >= limit:
                why = (
                    f"it was marked in_progress without a lease of jobs_lib's and left untouched "
                    f"for over {self.store.settings.orphan_seconds:g}s (an orphan)"
                    if orphan
                    else "the worker running it stopped (crashed, was killed or lost its "
                    "connection) and its lease expired"
                )
                return Triage(
                    Verdict.FAIL, f"attempt {job.attempts} of {limit} never finished: {why}"
                )
            # Recovering it means running it: it must be runnable like any pending job.
            unrunnable = self._unrunnable(job)
            if unrunnable is not None:
                return unrunnable
            return self._fits(job, now, max_timeout) or Triage(
                Verdict.RUN, "orphaned" if orphan else "lease expired"
            )
        if job.cancel_requested:
            return Triage(Verdict.CANCEL, "cancelled at the owner's request before it started")
        if job.problems:
            return Triage(Verdict.FAIL, "; ".join(job.problems))
        if not job.is_due(now):
            return Triage(Verdict.SKIP, "not due yet")
        return self._unrunnable(job) or self._fits(job, now, max_timeout) or Triage(Verdict.RUN)

    def _unrunnable(self, job: Job) -> Triage | None:
        """A FAIL when the document cannot run here at all (unreadable fields, no handler), else
        None."""
        if job.problems:
            return Triage(Verdict.FAIL, "; ".join(job.problems))
        if self.spec_for(job) is None:
            known = ", ".join(self.registry.types()) or "none"
            return Triage(
                Verdict.FAIL,
                f"no handler is registered for job type {job.type!r} (registered: {known}); "
                "load the module that defines it with --handlers or JOBS_HANDLERS",
            )
        return None

    def _fits(self, job: Job, now: datetime, max_timeout: float | None) -> Triage | None:
        """A SKIP (or a WAIT for room) when a policy holds the job back, or this runtime or the time
        left cannot hold its handler, else None."""
        spec = self.spec_for(job)
        if spec is None:
            return None
        for policy in self.policies:
            hold = policy.gate(job, spec, now)
            if hold is not None:
                return Triage(Verdict.WAIT if hold.wait else Verdict.SKIP, hold.reason)
        if spec.worker_only and self.runtime != "worker":
            return Triage(Verdict.SKIP, "worker_only: left to jobs worker")
        if spec.continuable:
            # It runs in slices: any invocation with time for one slice will do.
            if max_timeout is not None and max_timeout < MIN_SLICE_SECONDS + SLICE_MARGIN_SECONDS:
                return Triage(
                    Verdict.SKIP,
                    f"continuable, but the {max_timeout:g}s left here are too few for a slice",
                )
        elif max_timeout is not None and spec.timeout > max_timeout:
            return Triage(
                Verdict.SKIP, f"needs up to {spec.timeout:g}s, {max_timeout:g}s left here"
            )
        return None

    def expire_at(self, job: Job) -> datetime:
        """When a finished job may be deleted."""
        spec = self.spec_for(job)
        return self.store.now() + (spec.retention if spec else DEFAULT_RETENTION)

    # -- claiming -----------------------------------------------------------------

    def claim(
        self, jobs: list[Job], limit: int | None = None, max_timeout: float | None = None
    ) -> list[Execution]:
        """Settle the poison and cancelled among `jobs`, claim up to `limit` runnable ones."""
        return self.claim_report(jobs, limit, max_timeout).executions

    def claim_report(
        self, jobs: list[Job], limit: int | None = None, max_timeout: float | None = None
    ) -> ClaimReport:
        """`claim`, and what became of the jobs it did not claim (see `ClaimReport`): sort the
        jobs by triage, settle the poison and cancelled, claim the runnable, start what was won."""
        now = self.store.now()
        sorted_ = self._sort(jobs, now, limit, max_timeout)
        # An app's job this call leaves (not due, paused, at its limit) gets its shard lane now, so
        # that the main lane and every other runner find it from here on like an enqueued one.
        adopted = {job.id: job for job in self.adopt(sorted_.left)}
        report = ClaimReport(
            waiting=[adopted.get(job.id, job) for job in sorted_.left if job.id in sorted_.waiting],
            unused=sorted_.unused,
        )
        if sorted_.settle:
            report.settle_refused = self._settle(sorted_.settle, now)
        runnable = [self._with_default_webhook(job) for job in sorted_.runnable]
        claims, taker, started_ns, ended_ns = self._claim_runnable(runnable, now, report)
        executions = [
            self._execution(job, claim, taker.get(job.id), now, started_ns, ended_ns, max_timeout)
            for job in runnable
            if (claim := claims.get(job.id)) is not None
        ]
        with self._lock:
            for execution in executions:
                self._active[execution.claim.job_id] = execution
        if executions:
            self.keeper.ensure_running()
        report.executions = executions
        return report

    def _sort(
        self, jobs: list[Job], now: datetime, limit: int | None, max_timeout: float | None
    ) -> _Sorted:
        """Triage each job once: runnable (up to `limit`, the rest unused), left for later (some
        waiting for room), or to settle now as failed or cancelled."""
        out = _Sorted()
        seen: set[str] = set()
        for job in jobs:
            if job.id in seen:
                continue
            seen.add(job.id)
            triage = self.triage(job, now, max_timeout)
            if triage.verdict is Verdict.RUN:
                if limit is None or len(out.runnable) < limit:
                    out.runnable.append(job)
                else:
                    out.unused.append(job)
            elif triage.verdict in (Verdict.SKIP, Verdict.WAIT):
                out.left.append(job)
                if triage.verdict is Verdict.WAIT:
                    out.waiting.add(job.id)
            elif triage.verdict is Verdict.FAIL:
                details = {
                    "reason": "invalid_job"
                    if job.status is not Status.IN_PROGRESS
                    else "lease_expired",
                    "attempt": job.attempts,
                }
                outcome: Failed | Cancelled = Failed(triage.reason, details, self.expire_at(job))
                out.settle.append((job, outcome, "job_failed", triage.reason))
            elif triage.verdict is Verdict.CANCEL:
                outcome = Cancelled(triage.reason, self.expire_at(job))
                out.settle.append((job, outcome, "job_cancelled", triage.reason))
        return out

    def _settle(
        self, settle: list[tuple[Job, Failed | Cancelled, str, str]], now: datetime
    ) -> list[str]:
        """Record the poison and cancelled jobs' ends in one write; returns the ids whose version
        had changed meanwhile (left as they are)."""
        results = self.store.settle(
            [(job, outcome) for job, outcome, _e, _r in settle], holder=self.holder
        )
        self.release_dependents(
            [
                job.id
                for (job, _o, _n, _r), ok in zip(settle, results, strict=True)
                if ok and job.has_follow_ups
            ]
        )
        refused = []
        for (job, outcome, name, reason), ok in zip(settle, results, strict=True):
            if not ok:
                refused.append(job.id)
                continue
            if isinstance(outcome, Failed):
                self.telemetry.ended(
                    job.type,
                    "failed",
                    None,
                    job.created_at,
                    now,
                    reason=str(outcome.details.get("reason")),
                    exhausted=outcome.details.get("reason") == "lease_expired",
                )
                self.throughput.add(now, job.type, "failed")
            else:
                self.telemetry.ended(job.type, "cancelled", None, job.created_at, now)
                self.throughput.add(now, job.type, "cancelled")
            event(
                self.log,
                name,
                f"job {job.id} {name.removeprefix('job_')}: {reason}",
                level=logging.ERROR if name == "job_failed" else logging.INFO,
                **job_fields(job.id, job.type, job.attempts),
                error=reason,
            )
        return refused

    def _claim_runnable(
        self, runnable: list[Job], now: datetime, report: ClaimReport
    ) -> tuple[dict[str, Claim | None], dict[str, Policy], int, int]:
        """Claim the runnable jobs: each policy that guards something (a slot, a rate token, a
        breaker's probe) claims the jobs it takes, the guard and the job in one commit; the rest
        get a plain conditional write. Returns the claims by job id (a job not tried is left
        out), the policy that took each job, and when the claims started and ended (ns); counts
        what was tried and won, and the jobs held back for room, on `report`."""
        plain: list[Job] = []
        taken: dict[int, tuple[Policy, list[tuple[Job, HandlerSpec]]]] = {}
        taker: dict[str, Policy] = {}
        for job in runnable:
            spec = self.spec_for(job)
            policy = (
                next((p for p in self.policies if p.takes(job, spec, now)), None)
                if spec is not None
                else None
            )
            if policy is None or spec is None:
                plain.append(job)
            else:
                taken.setdefault(id(policy), (policy, []))[1].append((job, spec))
                taker[job.id] = policy
        started_ns = time.time_ns()
        claims: dict[str, Claim | None] = dict(
            zip(
                (job.id for job in plain),
                self.store.claim(plain, self.holder, self.lease_seconds),
                strict=True,
            )
        )
        by_policy: dict[str, Claim | None] = {}
        for policy, jobs_taken in taken.values():
            by_policy.update(policy.claim_jobs(jobs_taken, now))
        ended_ns = time.time_ns()
        # A job a policy's limit kept waits for room; a claim another claimer won counts as tried
        # and lost (it tells a worker that others read the same jobs); a job not tried stays a
        # candidate.
        contested: list[Claim | None] = []
        for job in runnable:
            if job.id in by_policy:
                claim, spec = by_policy[job.id], self.spec_for(job)
                if claim is None and spec is not None and taker[job.id].held_back(job, spec):
                    report.waiting.append(job)
                else:
                    contested.append(claim)
        report.tried = len(plain) + len(contested)
        report.won = sum(c is not None for c in claims.values()) + sum(
            c is not None for c in contested
        )
        claims.update(by_policy)
        return claims, taker, started_ns, ended_ns

    def _execution(
        self,
        job: Job,
        claim: Claim,
        taker: Policy | None,
        now: datetime,
        started_ns: int,
        ended_ns: int,
        max_timeout: float | None,
    ) -> Execution:
        """The run of a claimed job, ready to start: its span, its metrics and its log line."""
        spec = self.spec_for(job)
        assert spec is not None  # triage checked
        recovered = job.status is Status.IN_PROGRESS
        execution = Execution(self, claim, spec, started_ns, max_timeout)
        execution.claimed_by = taker.name if taker is not None else None
        self.telemetry.child(
            "firestore claim", execution.span, start_time=started_ns, end_time=ended_ns
        )
        queued_since = job.scheduled_for or job.created_at or job.create_time
        self.telemetry.started(job.type, queued_since, now, recovered)
        event(
            execution.logger,
            "job_recovered" if recovered else "job_claimed",
            f"job {job.id} claimed (attempt {claim.attempt})"
            + (" after its lease expired" if recovered else ""),
            queueMs=round(max((now - queued_since).total_seconds(), 0.0) * 1000, 1)
            if queued_since
            else None,
        )
        return execution

    def adopt(self, jobs: list[Job]) -> list[Job]:
        """Give the pending documents among `jobs` that an app wrote without a shard their
        `adoption_fields` (one conditioned write each, one round trip); returns them as they are
        now (those that changed meanwhile are left out, for their next reader)."""
        todo = [
            job
            for job in jobs
            if job.status is Status.PENDING and not job.problems and not adopted(job)
        ]
        if not todo:
            return []
        return self.store.adopt(todo)

    def wake(self, job: Job) -> None:
        """Bring a job continued on the functions its next created-event
        (jobs_lib.builtin.continuations)."""
        from jobs_lib.builtin.continuations import CONTINUE_TYPE, WAKE_RETENTION

        wake_id = self.store.create_wake(job.id, CONTINUE_TYPE, WAKE_RETENTION)
        if wake_id is not None:
            event(
                self.log,
                "job_wake_created",
                f"job {job.id}: wake-up {wake_id} created for its next slice",
                level=logging.DEBUG,
                **job_fields(job.id, job.type),
            )

    def _with_default_webhook(self, job: Job) -> Job:
        """The job marked ``webhook: true`` when its handler declares a URL and the document names
        none (an app's job): the claim writes the mark, and the delivery looks the URL up in the
        registry, so the URL itself never reaches a document the job's owner can read."""
        spec = self.spec_for(job)
        if spec is None or spec.webhook is None or job.has_webhook_field:
            return job
        return job.with_handler_webhook()

    def release_dependents(self, job_ids: list[str]) -> list[str]:
        """These jobs just ended: release (or end) the jobs of their flows that wait for them;
        returns the ids released. A failure here is logged and left to `Releaser.repair` (the
        obligation is in the documents)."""
        if not job_ids:
            return []
        try:
            return self.flows.release(job_ids).released
        except Exception:
            log.warning(
                "releasing the dependents of %s failed; the next repair pass does it",
                ", ".join(job_ids),
                exc_info=True,
            )
            return []

    def slot_released(self, job: Job, ended: bool = True) -> None:
        """One of our limited jobs stopped: its slot is free, so stop treating the type as full
        (with `ended`, its end was recorded, and the next job of its type may take its slot
        unread)."""
        spec = self.spec_for(job)
        for policy in self.policies:
            policy.released(job, spec, ended)

    def forget(self, execution: Execution) -> None:
        """Stop tracking a finished execution."""
        with self._lock:
            if self._active.get(execution.claim.job_id) is execution:
                del self._active[execution.claim.job_id]

    def active(self) -> list[Execution]:
        """Executions this process is running."""
        with self._lock:
            return list(self._active.values())

    def close(self) -> None:
        """Stop the keeper, the control listener, flush the recorder and the minute counts."""
        if self._control_watch:
            with contextlib.suppress(Exception):
                self._control_watch.unsubscribe()
        self.keeper.stop()
        self.recorder.close()
        # The minute counts are best effort: a store that does not answer (its writes retry for up
        # to 30 s) must not hold a stopping process past its grace.
        flusher = threading.Thread(
            target=self.throughput.flush, name="jobs-minute-flush", daemon=True
        )
        flusher.start()
        flusher.join(CLOSE_FLUSH_SECONDS)
        for policy in self.policies:
            policy.close()


#: How each outcome is named in the job's status and in the log.
_NAMES: dict[type, tuple[str, str]] = {
    Completed: ("completed", "job_completed"),
    Failed: ("failed", "job_failed"),
    Retry: ("pending", "job_retrying"),
    Cancelled: ("cancelled", "job_cancelled"),
    Released: ("pending", "job_released"),
    Continued: ("pending", "job_continued"),
    Slept: ("pending", "job_slept"),
}


class Execution:
    """One attempt at one claimed job: runs the handler, asks `decide` what to record, records
    it."""

    def __init__(
        self,
        engine: Engine,
        claim: Claim,
        spec: HandlerSpec,
        started_ns: int | None = None,
        max_timeout: float | None = None,
    ) -> None:
        self.engine = engine
        self.claim = claim
        self.spec = spec
        job = claim.job
        # Durable jobs (jobs_lib.engine.durable): what earlier runs recorded, and this run's slice.
        self._steps: dict[str, SavedStep] = saved_steps(job.steps)
        self._inline_bytes = (
            sum(encoded_size(s.value) for s in self._steps.values() if s.document is None)
            if self._steps
            else 0
        )
        self._sleeps = dict(job.sleep_times)
        self._sleep_count = 0
        self._cursor: Any = job.cursor
        self._cursor_dirty = False
        #: A continuable run stops at its next checkpoint once this (monotonic) time has passed, or
        #: once `continue_requested` is set (a worker shutting down); None: no end of its own.
        slice_seconds = min(
            max_timeout - SLICE_MARGIN_SECONDS if max_timeout is not None else float("inf"),
            engine.store.settings.slice_seconds or float("inf"),
        )
        self.slice_end: float | None = (
            time.monotonic() + max(slice_seconds, 0.0)
            if spec.continuable and slice_seconds != float("inf")
            else None
        )
        self.continue_requested = False
        #: This attempt's span (a no-op unless an OpenTelemetry SDK is installed; see
        #: jobs_lib.observability.telemetry).
        self.span = engine.telemetry.start_attempt(
            claim.job_id,
            claim.job.type,
            claim.attempt,
            claim.job.traceparent,
            start_time=started_ns,
        )
        trace_fields = log_fields(self.span, engine.store.settings.project)
        self.logger = JobLogger(
            log,
            {
                **job_fields(claim.job_id, claim.job.type, claim.attempt),
                "worker": engine.holder,
                **trace_fields,
            },
        )
        # The timeout counts the earlier slices too (continuations and sleeps).
        self.deadline = engine.store.now() + timedelta(
            seconds=max(spec.timeout - job.active_ms / 1000, 0.001)
        )
        self._handler_deadline = self.deadline
        #: A durable step running with a timeout of its own: (name, seconds, when it ends).
        self._step_limit: tuple[str, float, datetime] | None = None
        self.finished = False
        self.final_status: str | None = None
        #: Jobs of its flow this run's end released (pending now).
        self.released: list[str] = []
        #: The policy that claimed this run's job (a breaker's probe, a slot...), if any.
        self.claimed_by: str | None = None
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

    # -- what the handler's context sees (jobs_lib.context.RunControl) ---------------

    @property
    def job(self) -> Job:
        """The job as claimed."""
        return self.claim.job

    @property
    def attempt(self) -> int:
        """This attempt's number, from 1."""
        return self.claim.attempt

    @property
    def db(self) -> Any:
        """The Firestore client."""
        return self.engine.store.db

    @property
    def store(self) -> JobStore:
        """The store this run records through."""
        return self.engine.store

    @property
    def registry(self) -> HandlerRegistry:
        """The handlers of this process."""
        return self.engine.registry

    @property
    def cancel_requested(self) -> bool:
        """True once the owner asked to cancel (learnt from a refused write)."""
        return self.claim.cancel_requested or self.claim.job.cancel_requested

    # -- the handler's side -------------------------------------------------------

    def run(self) -> str | None:
        """Run the handler and record the outcome; returns the final status written (None if
        refused)."""
        try:
            with used(self.span):
                self._run()
        except BaseException:
            log.exception("job %s: unexpected error while running", self.claim.job_id)
            raise
        finally:
            self.engine.forget(self)
            self.engine.slot_released(
                self.claim.job, self.final_status is not None and not self.lease_lost
            )
            self.engine.telemetry.stopped(self.claim.job.type)
            self.span.set_attribute("jobs.status", self.final_status or "unrecorded")
            self.span.end()
            self.done.set()
        return self.final_status

    def _run(self) -> None:
        job = self.claim.job
        try:
            value = validated_input(self.spec, job)
        except InvalidInput as exc:
            self._conclude(Ending.INVALID_INPUT, error=str(exc))
            return
        context: JobContext[Any] = JobContext(self, value)
        event(
            self.logger,
            "job_started",
            f"job {job.id} started ({job.type}, attempt {self.claim.attempt})",
            level=logging.DEBUG,
        )
        try:
            with self.engine.telemetry.tracer.start_as_current_span(
                f"handler {job.type}", record_exception=False, set_status_on_exception=False
            ):
                result = self._run_async(context) if self.spec.is_async else self.spec.fn(context)
        except Suspend as suspended:
            self._suspend(suspended)
        except JobCancelled:
            self._conclude(Ending.CANCELLED)
        except (LeaseLost, asyncio.CancelledError):
            self._conclude(Ending.INTERRUPTED)
        except PermanentError as exc:
            self._conclude(
                Ending.PERMANENT, error=describe_error(exc), details={"errorType": qualname(exc)}
            )
        except Exception as exc:
            self._conclude(
                Ending.RAISED,
                error=describe_error(exc),
                details={"errorType": qualname(exc), "traceback": traceback.format_exc()[-4000:]},
            )
        else:
            problem, stored = storable_result(result, job.raw)
            if problem:
                self._conclude(Ending.UNSTORABLE, error=problem)
            else:
                self._conclude(Ending.RETURNED, result=stored)

    def _suspend(self, suspended: Suspend) -> None:
        """The handler stopped at a checkpoint or a sleep: record a continuation or a sleep (the
        attempt not counted), unless this run no longer holds the job or its owner asked to
        cancel."""
        if self.lease_lost:
            self._conclude(Ending.INTERRUPTED)
            return
        if self.cancel_requested:
            self._conclude(Ending.CANCELLED)
            return
        job = self.claim.job
        ran_ms = round((time.monotonic() - self._started) * 1000)
        active_ms = job.active_ms + ran_ms
        attempts = max(self.claim.attempt - 1, 0)
        outcome: Outcome
        if suspended.until is not None:
            outcome = Slept(attempts, suspended.until, suspended.index, active_ms)
        else:
            with self._lock:
                cursor = self._cursor
            outcome = Continued(
                attempts,
                self.engine.store.now(),
                cursor,
                job.continuations + 1,
                (*job.slice_ms, ran_ms)[-KEPT_SLICES:],
                active_ms,
            )
        self._record(outcome)
        if (
            isinstance(outcome, Continued)
            and self.final_status is not None
            and self.engine.runtime == "function"
        ):
            # No created-event comes for a job that is pending again: a wake-up document brings one,
            # so that the next slice starts at once rather than at the next tick.
            self.engine.wake(job)

    # -- durable steps, checkpoints and sleeps (jobs_lib.context.RunControl) -------------

    def now(self) -> datetime:
        """The server's time, as this process knows it."""
        return self.engine.store.now()

    def saved_step(self, name: str) -> tuple[bool, Any]:
        """(True, its result) when an earlier run recorded the step `name`, else (False, None)."""
        saved = self._steps.get(name)
        if saved is None:
            return False, None
        if saved.document is not None:
            saved.value, saved.document = (
                self.engine.store.step_document(self.claim.job_id, saved.document),
                None,
            )
        return True, saved.value

    def record_step(self, name: str, value: Any, ms: float) -> Any:
        """Record the step's result, fenced by the claim; returns it as stored (as a replay returns
        it). Raises `LeaseLost` when this run no longer holds the job: its result is not
        recorded."""
        if self.finished or self.lease_lost:
            raise LeaseLost(
                f"job {self.claim.job_id}: step {name!r} not recorded, this run no longer holds "
                f"the job ({self.lost_reason or 'ended'})"
            )
        if len(self._steps) >= MAX_STEPS:
            raise PermanentError(
                f"a job may record at most {MAX_STEPS} steps; step {name!r} is one more"
            )
        stored, size = step_value(name, value)
        record: dict[str, Any] = {
            "at": self.engine.store.now(),
            "attempt": self.claim.attempt,
            "ms": round(ms, 1),
            "size": size,
        }
        inline = size <= INLINE_STEP_BYTES and self._inline_bytes + size <= INLINE_TOTAL_BYTES
        if inline:
            record["value"] = stored
        else:
            # Named after this claim: a run that lost the job never overwrites what another
            # recorded.
            record["document"] = f"{name}-{self.claim.token[:16]}"
            self.engine.store.save_step_document(
                self.claim.job_id, record["document"], name, stored
            )
        with self._lock:
            self._cursor, self._cursor_dirty = None, False
        written = self.engine.recorder.write(
            self.claim, Update(steps={name: record}, has_cursor=True), urgent=True
        )
        if written.status is WriteStatus.LOST:
            self.lease_lost = True
            self.lost_reason = written.detail or "lease lost"
            raise LeaseLost(
                f"job {self.claim.job_id}: step {name!r} not recorded: {self.lost_reason}"
            )
        if written.status is WriteStatus.INVALID:
            raise PermanentError(
                f"step {name!r}: Firestore refused to store its result: {written.detail}"
            )
        if written.status is not WriteStatus.OK:
            raise StoreUnavailable(
                f"step {name!r}: its result could not be recorded ({written.detail}); the step "
                f"runs again on the next attempt"
            )
        self._steps[name] = SavedStep(stored)
        if inline:
            self._inline_bytes += size
        return stored

    @property
    def cursor(self) -> Any:
        """The last checkpoint (this run's, or the one the job was continued from)."""
        with self._lock:
            return self._cursor

    def checkpoint(self, cursor: Any) -> None:
        """Save `cursor` (with the next progress write, at most once a second, and with the
        continuation); raises `Suspend` when a continuable run's slice is over."""
        stored = cursor_value(cursor)
        with self._lock:
            self._cursor, self._cursor_dirty = stored, True
        if self.spec.continuable and (
            self.continue_requested
            or (self.slice_end is not None and time.monotonic() >= self.slice_end)
        ):
            raise Suspend()
        with self._lock:
            due = (
                time.monotonic() - self._progress_written >= PROGRESS_INTERVAL
                and not self._maintaining
            )
        if due:
            self.maintain(None)

    def sleep_until(self, when: datetime) -> None:
        """The handler's next durable sleep: returns at once when it has slept it already (a
        replay) or `when` has passed, else raises `Suspend` to end the invocation until `when`."""
        index = self._sleep_count
        self._sleep_count += 1
        recorded = self._sleeps.get(index)
        until = recorded if recorded is not None else when
        if until <= self.engine.store.now():
            return
        raise Suspend(until=until, index=index)

    def request_continuation(self) -> None:
        """Ask a continuable run to stop at its next checkpoint (a worker shutting down)."""
        self.continue_requested = True

    def limit_step(self, name: str, seconds: float | None) -> None:
        """A durable step with a timeout of its own starts (`seconds`), or ends (None): until then
        the keeper abandons the attempt at the step's end, not only at the handler's."""
        if seconds is None:
            self._step_limit = None
            self.deadline = self._handler_deadline
            return
        until = self.engine.store.now() + timedelta(seconds=seconds)
        self._step_limit = (name, seconds, until)
        self.deadline = min(self._handler_deadline, until)

    def _end(self, ending: Ending, **facts: Any) -> AttemptEnd:
        """The facts `decide` needs about this attempt ending as `ending`."""
        facts.setdefault("timeout", self.spec.timeout)
        return AttemptEnd(
            ending=ending,
            attempt=self.claim.attempt,
            max_attempts=self.engine.max_attempts(self.claim.job),
            now=self.engine.store.now(),
            expire_at=self.engine.expire_at(self.claim.job),
            backoff=self.spec.backoff,
            jitter=self.engine._rng.random(),
            cancel_requested=self.cancel_requested,
            lease_lost=self.lease_lost,
            **facts,
        )

    def _conclude(self, ending: Ending, **facts: Any) -> None:
        """Decide what the attempt's end means and record it."""
        outcome = decide(self._end(ending, **facts))
        if outcome is not None:
            self._record(outcome)
        elif not self.finished:
            event(
                self.logger,
                "job_interrupted",
                f"job {self.claim.job_id} stopped: {self.lost_reason or 'lease lost'}",
                level=logging.WARNING,
            )

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
            due = (
                time.monotonic() - self._progress_written >= PROGRESS_INTERVAL
                and not self._maintaining
            )
        if due:
            self.maintain(None)

    # -- recording ----------------------------------------------------------------

    def time_out(self) -> None:
        """The attempt ran past its timeout: record what `decide` says (a failed attempt, retried
        per policy, or cancelled if the owner had asked) and stop listening to it."""
        if self.finished:
            return
        step = self._step_limit
        if step is not None:  # a durable step's own time ran out, not the handler's
            name, seconds, _until = step
            self.lost_reason = f"step {name!r} timed out after {seconds:g}s"
            self._conclude(Ending.TIMED_OUT, timeout=seconds, timed_out=f"step {name!r}")
        else:
            self.lost_reason = f"timed out after {self.spec.timeout:g}s"
            self._conclude(Ending.TIMED_OUT)
        self.lease_lost = True
        self._cancel_task()

    def release(self) -> None:
        """Hand the job back (the worker is shutting down): pending again at once, the attempt not
        counted."""
        self._record(
            Released(attempts=max(self.claim.attempt - 1, 0), run_at=self.engine.store.now())
        )
        self.lease_lost = True
        self.lost_reason = "released at shutdown"
        self._cancel_task()

    def _record(self, outcome: Outcome) -> None:
        status, name = _NAMES[type(outcome)]
        with self._lock:
            if self.finished:
                event(
                    self.logger,
                    "job_result_refused",
                    f"job {self.claim.job_id}: late {status} outcome ignored ({self.lost_reason})",
                    level=logging.WARNING,
                )
                return
            self.finished = True
            progress, self._progress = self._progress, None
        record_span = self.engine.telemetry.tracer.start_span(
            "firestore record", context=span_context(self.span)
        )
        # A limited job's slot frees when its end is recorded: that write goes at once (no linger).
        written = self.engine.recorder.write(
            self.claim,
            Update(outcome=outcome, progress=progress),
            urgent=self.spec.concurrency is not None,
        )
        record_span.end()
        seconds = time.monotonic() - self._started
        duration = round(seconds * 1000, 1)
        if written.status is WriteStatus.INVALID and status != "failed":
            with self._lock:
                self.finished = False
            self._conclude(
                Ending.UNSTORABLE, error=f"Firestore refused to store the outcome: {written.detail}"
            )
            return
        if written.status is WriteStatus.OK:
            self.final_status = status
            if (
                isinstance(outcome, Completed | Failed | Cancelled)
                and self.claim.job.has_follow_ups
            ):
                self.released = self.engine.release_dependents([self.claim.job_id])
            for policy in self.engine.policies:
                try:
                    policy.ended(self.spec, outcome, self.claimed_by)
                except Exception:
                    log.warning(
                        "job %s: the %s policy's end of %s failed",
                        self.claim.job_id,
                        policy.name,
                        self.spec.type,
                        exc_info=True,
                    )
            self._measured(outcome, seconds)
            extra: dict[str, Any] = {}
            if isinstance(outcome, Failed | Retry):
                extra["error"] = outcome.error
            if isinstance(outcome, Retry):
                extra["retryInSeconds"] = round(
                    max((outcome.run_at - self.engine.store.now()).total_seconds(), 0.0), 3
                )
            level = logging.ERROR if name == "job_failed" else logging.INFO
            event(
                self.logger,
                name,
                f"job {self.claim.job_id} {name.removeprefix('job_')}",
                level=level,
                durationMs=duration,
                **extra,
            )
        elif written.status is WriteStatus.LOST:
            self.lease_lost = True
            event(
                self.logger,
                "job_lease_lost",
                f"job {self.claim.job_id}: {status} outcome refused, {written.detail}",
                level=logging.WARNING,
                durationMs=duration,
            )
        else:
            event(
                self.logger,
                "job_record_failed",
                f"job {self.claim.job_id}: could not record {status} ({written.detail}); the "
                f"lease will expire and the job run again",
                level=logging.ERROR,
                durationMs=duration,
            )

    # -- the keeper's side ----------------------------------------------------------

    def maintain(self, renew_before: datetime | None) -> None:
        """Renew the lease if it expires before `renew_before`, and write due progress."""
        with self._lock:
            if self.finished or self._maintaining:
                return
            expires = None
            progress = None
            if renew_before is not None and self.claim.lease_expires_at <= renew_before:
                expires = self.engine.store.now() + timedelta(seconds=self.engine.lease_seconds)
            cursor_due = False
            if (
                self._progress or self._cursor_dirty
            ) and time.monotonic() - self._progress_written >= PROGRESS_INTERVAL:
                progress, self._progress = self._progress, None
                cursor_due, self._cursor_dirty = self._cursor_dirty, False
                self._progress_written = time.monotonic()
            if expires is None and progress is None and not cursor_due:
                return
            self._maintaining = True
            update = Update(
                progress=progress,
                lease_expires_at=expires,
                cursor=self._cursor if cursor_due else None,
                has_cursor=cursor_due,
            )
        future = self.engine.recorder.submit(self.claim, update)
        future.add_done_callback(lambda f: self._maintained(f.result(), expires))

    def _maintained(self, outcome: WriteOutcome, expires: datetime | None) -> None:
        with self._lock:
            self._maintaining = False
        if outcome.status is WriteStatus.OK and expires is not None:
            self.claim.lease_expires_at = expires
        elif outcome.status is WriteStatus.LOST and not self.finished:
            self.lease_lost = True
            self.lost_reason = outcome.detail or "lease lost"
            event(
                self.logger,
                "job_lease_lost",
                f"job {self.claim.job_id}: lease lost ({self.lost_reason}); stopping at the next "
                f"check",
                level=logging.WARNING,
            )
            self._cancel_task()
        if self.cancel_requested:
            self._cancel_task()

    def _measured(self, outcome: Outcome, seconds: float) -> None:
        """Metrics and span status for a recorded outcome."""
        job = self.claim.job
        telemetry = self.engine.telemetry
        name = _NAMES[type(outcome)][0]
        if not isinstance(outcome, Released | Continued | Slept):
            self.engine.throughput.add(
                self.engine.store.now(), job.type, "retried" if isinstance(outcome, Retry) else name
            )
        if isinstance(outcome, Completed):
            telemetry.ended(job.type, "completed", seconds, job.created_at, self.engine.store.now())
        elif isinstance(outcome, Failed):
            reason = str(
                outcome.details.get("reason") or ("exhausted" if outcome.exhausted else "failed")
            )
            telemetry.ended(
                job.type,
                "failed",
                seconds,
                job.created_at,
                self.engine.store.now(),
                reason=reason,
                exhausted=outcome.exhausted,
            )
            telemetry.failed(self.span, outcome.error)
        elif isinstance(outcome, Retry):
            telemetry.ended(job.type, "retried", seconds, job.created_at, self.engine.store.now())
            telemetry.failed(self.span, outcome.error)
        elif isinstance(outcome, Cancelled):
            telemetry.ended(job.type, "cancelled", seconds, job.created_at, self.engine.store.now())

    def _cancel_task(self) -> None:
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)


class InvalidInput(Exception):
    """The job's metadata is not valid input for its handler (the message says which fields)."""


def validated_input(spec: HandlerSpec, job: Job) -> Any:
    """The job's metadata as its handler takes it: validated by its pydantic model, or the raw
    map."""
    metadata = job.metadata if isinstance(job.metadata, dict) else {}
    model = spec.input_model
    if model is None:
        return metadata
    from pydantic import ValidationError

    try:
        return model.model_validate(metadata)
    except ValidationError as exc:
        raise InvalidInput(
            f"metadata is not valid input for {spec.type}: {_summarise(exc)}"
        ) from None


def qualname(exc: BaseException) -> str:
    kind = type(exc)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def describe_error(exc: BaseException) -> str:
    text = str(exc).strip()
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:1500]


def _summarise(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:10]:
        where = ".".join(str(p) for p in error.get("loc", ())) or "metadata"
        parts.append(
            f"metadata.{where}: {error.get('msg', 'invalid')}"
            if where != "metadata"
            else error.get("msg", "invalid")
        )
    more = len(exc.errors()) - 10
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


__all__ = [
    "Engine",
    "Execution",
    "InvalidInput",
    "Triage",
    "Verdict",
    "describe_error",
    "new_holder_id",
    "qualname",
    "validated_input",
]
