"""What the Cloud Functions in ``functions/main.py`` call: the created-event and the tick.

``on_job_created`` decodes the Firestore ``document.v1.created`` CloudEvent
(raw protobuf from Eventarc in production, base64 text of the same bytes from
the emulator), claims that one job with a write conditioned on the version the
event carries (no read), and runs it within the invocation. Every job-level
outcome (done, failed, poison, already taken, not due yet) is a normal return:
the platform must never redeliver a poison job.

``tick`` is the Cloud Scheduler target: a burst of the worker within a time
budget that takes up due delayed jobs and retries, jobs whose created-event
was lost, and expired leases. Triggers are hints: a duplicated or overlapping
tick, or a replayed event, finds the job already claimed and leaves it.

Time limits: an event-driven function stops at 540 s, an HTTP one at 60 min.
A handler whose timeout exceeds `EVENT_BUDGET` is left by the created-event
to the tick, which claims a job only when its handler's timeout fits in what
is left of the tick function's own timeout (``JOBS_FUNCTION_TIMEOUT``; `jobs
deploy` sizes it to the longest handler, up to 60 min). One longer than
`MAX_FUNCTION_TIMEOUT` must be declared ``worker_only=True`` (registration
refuses it otherwise) and runs on ``jobs worker``.

`Functions` holds the process's `jobs_lib.app.App`, built from the environment
on the first call (never at import, so a cold start stays cheap);
``functions/main.py`` keeps one `Functions` and calls it.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from typing import Any

from jobs_lib.app import App
from jobs_lib.builtin.continuations import CONTINUE_TYPE
from jobs_lib.engine.discovery import Discovery, sweeper_shards
from jobs_lib.engine.runner import Engine
from jobs_lib.model.job import Job, Status
from jobs_lib.observability.logs import configure, event, job_fields
from jobs_lib.registry import EVENT_BUDGET
from jobs_lib.store.events import decode_document_event, job_of_snapshot

log = logging.getLogger("jobs_lib.functions")

CREATED = "google.cloud.firestore.document.v1.created"
CREATED_WITH_AUTH = "google.cloud.firestore.document.v1.created.withAuthContext"

#: A tick leaves this margin under its function's timeout to record outcomes and release leases.
TICK_MARGIN = 20.0


class Functions:
    """The function bodies, over one `App` built on first use (one per function instance)."""

    def __init__(self, app: App | None = None) -> None:
        self._app = app
        self._lock = threading.Lock()

    @property
    def app(self) -> App:
        """The instance's app, built from the environment on first use."""
        with self._lock:
            if self._app is None:
                app = App(runtime="function")
                settings = app.settings
                configure(settings.log_level, project=settings.project)
                if settings.metrics_exporter != "none" or settings.traces_exporter != "none":
                    from jobs_lib.observability.export import enable

                    enable(
                        metrics_exporter=settings.metrics_exporter,
                        traces_exporter=settings.traces_exporter,
                        project=settings.project,
                        service="jobs_lib-functions",
                    )
                self._app = app
            return self._app

    def on_job_created(self, cloud_event: Any) -> str:
        """Handle a created-event: claim and run that one job. Returns what happened, for the
        log."""
        engine = self.app.engine
        kind = cloud_event["type"]
        if kind not in (CREATED, CREATED_WITH_AUTH):
            event(engine.log, "event_ignored", f"ignored a {kind} event", detail=cloud_event["id"])
            return "ignored"
        doc = decode_document_event(cloud_event.data, engine.store.db)
        if doc is None:
            event(
                engine.log,
                "event_ignored",
                "ignored a created-event without a document",
                detail=cloud_event["id"],
            )
            return "ignored"
        if doc.collection != engine.store.settings.collection:
            event(
                engine.log,
                "event_ignored",
                f"ignored a document in {doc.collection}, not {engine.store.settings.collection}",
            )
            return "ignored"
        outcome = run_created(engine, doc.job)
        if engine.throughput.due():
            engine.throughput.flush()  # a few writes a minute per instance, for the console's chart
        return outcome

    def on_document_created(self, document: str, snapshot: Any) -> str:
        """The same as `on_job_created`, for the firebase-functions SDK, which has already decoded
        the event: `document` is the path within the database, `snapshot` its DocumentSnapshot (None
        for a created-event without a document)."""
        engine = self.app.engine
        collection, _, job_id = document.rpartition("/")
        if snapshot is None or not getattr(snapshot, "exists", False):
            event(
                engine.log,
                "event_ignored",
                f"ignored a created-event without a document ({document})",
            )
            return "ignored"
        if collection != engine.store.settings.collection:
            event(
                engine.log,
                "event_ignored",
                f"ignored a document in {collection}, not {engine.store.settings.collection}",
            )
            return "ignored"
        outcome = run_created(engine, job_of_snapshot(job_id, snapshot))
        if engine.throughput.due():
            engine.throughput.flush()
        return outcome

    def tick(
        self,
        request: Any = None,
        *,
        schedule_time: datetime | None = None,
        sweeper: int | None = None,
    ) -> dict[str, Any]:
        """One Cloud Scheduler tick: run what is due within the budget; returns a JSON-able summary.

        With JOBS_TICK_SWEEPERS = N > 1, Cloud Scheduler calls the tick N times per schedule, each
        call naming its `sweeper` (0 to N - 1; ``{"sweeper": k}`` in the body, or ``?sweeper=k``):
        each sweeps its share of the shard lanes (`jobs_lib.engine.discovery.sweeper_shards`) on an
        instance of its own, and sweeper 0 also fires the schedules and scans what no lane holds.
        A call naming none (or one out of range, with a warning) sweeps everything.
        """
        app = self.app
        settings = app.settings
        budget = settings.tick_budget
        hard_limit = max(settings.function_timeout - TICK_MARGIN, budget)
        if sweeper is None:
            sweeper = _sweeper_of(request)
        sweepers = settings.tick_sweepers
        # A fresh engine per tick (its recorder and keeper end with it); the connection and the
        # firer are shared.
        engine = app.new_engine()
        shards: tuple[int, ...] | None = None
        if sweeper is not None and sweepers > 1:
            if 0 <= sweeper < sweepers:
                shards = sweeper_shards(sweeper, sweepers)
            else:
                event(
                    engine.log,
                    "tick_sweeper_unknown",
                    f"sweeper {sweeper} is not one of 0 to {sweepers - 1} (JOBS_TICK_SWEEPERS); "
                    f"sweeping every lane",
                    level=logging.WARNING,
                )
                sweeper = None
        discovery = Discovery(
            engine.store,
            lease_seconds=engine.lease_seconds,
            holder=engine.holder,
            exclude_types=engine.excluded_types,
            lanes=engine.lanes,
            eager=True,
            shards=shards,
        )
        worker = app.worker(
            engine=engine,
            concurrency=settings.tick_concurrency,
            burst=True,
            budget=budget,
            hard_limit=hard_limit,
            grace=0,
            poll_interval=0.1,
            schedules=False,
            discovery=discovery,
        )
        # Fire due schedule slots first, so that this tick also runs the jobs they create.
        fired = app.scheduler.fire_due() if discovery.sweeps_unsharded else None
        # Finish flows a process left (its jobs released now run in this tick).
        repaired = _repair_flows(engine) if discovery.sweeps_unsharded else None
        summary = worker.run().as_dict()
        summary["flows"] = repaired
        summary["sweeper"] = sweeper if shards is not None else None
        summary["shards"] = list(shards) if shards is not None else "all"
        if engine.telemetry.recording_metrics:
            worker.record_queue_stats()  # the queue gauges, as of the end of this tick
        summary["schedules"] = fired.as_dict() if fired is not None else None
        headers = getattr(request, "headers", {}) or {}
        summary["scheduleTime"] = (
            schedule_time.isoformat()
            if schedule_time
            else headers.get("X-CloudScheduler-ScheduleTime")
        )
        summary["budgetSeconds"] = budget
        event(
            engine.log,
            "tick_done",
            f"tick claimed {summary['claimed']} jobs in {summary['seconds']}s",
            stats=summary,
        )
        return summary

    def api(self, request: Any) -> Any:
        """Answer one REST API request (the API's dependencies are imported on the first one)."""
        return self.app.api().handle(request)

    def close(self) -> None:
        """Stop what the app started (tests call this between instances)."""
        with self._lock:
            app, self._app = self._app, None
        if app is not None:
            app.close()


def _sweeper_of(request: Any) -> int | None:
    """The sweeper a tick request names (JSON body ``{"sweeper": k}`` or ``?sweeper=k``), if any."""
    if request is None:
        return None
    value: Any = None
    try:
        body = request.get_json(
            force=True, silent=True
        )  # Cloud Scheduler may send it as octet-stream
    except Exception:  # not a JSON request: no sweeper named in the body
        body = None
    if isinstance(body, dict):
        value = body.get("sweeper")
    if value is None:
        value = (getattr(request, "args", None) or {}).get("sweeper")
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return -1  # named but unreadable: swept as everything, with a warning


#: Released jobs a created-event invocation runs itself after the job it was called for.
INLINE_RELEASED = 10


def run_created(engine: Engine, job: Job) -> str:
    """Claim the job as the event showed it and run it here.

    When the document changed since the event (its version is stale), the
    claim, or the settling of a poison or cancelled job, is refused: read it
    once as it is now and decide again, so a poison job is settled in this
    invocation rather than left for a tick.
    """
    spec = engine.spec_for(job)
    if (
        job.type == CONTINUE_TYPE
        and job.status is Status.PENDING
        and isinstance(job.metadata, dict)
        and isinstance(job.metadata.get("jobId"), str)
    ):
        return _run_continued(engine, job, job.metadata["jobId"])
    if spec is not None and (
        spec.worker_only or (spec.timeout > EVENT_BUDGET and not spec.continuable)
    ):
        where = "jobs worker" if spec.worker_only else "the tick"
        event(
            engine.log,
            "job_deferred",
            f"job {job.id} left to {where}: its timeout of {spec.timeout:g}s exceeds what an "
            f"event function may run",
            **job_fields(job.id, job.type),
        )
        engine.adopt([job])  # an app's job: into its shard lane, where they will find it
        return "deferred"
    started = time.monotonic()
    turn = _fair_turn(engine, job, started)
    if turn is not None:
        return turn
    for _ in range(2):
        report = engine.claim_report([job], limit=1, max_timeout=EVENT_BUDGET)
        if report.executions:
            outcome = report.executions[0].run() or "unrecorded"
            _run_released(engine, report.executions[0].released, started)
            return outcome
        if not report.tried and job.id not in report.settle_refused:
            # Settled as poison or cancelled, or left for later: not due yet, its type paused or at
            # its limit (an app's job was given its shard lane by the claim's triage, where the tick
            # and the workers find it), or taken by another.
            return "not_runnable"
        fresh = engine.store.get(job.id)  # changed since the event: look at it as it is now
        if fresh is None:
            return "deleted"
        job = fresh
    return "taken"


def _fair_turn(engine: Engine, job: Job, started: float) -> str | None:
    """A fair type's event runs the job its draw picks (jobs_lib.limits.fair): another key's, whose
    turn it is, leaving its own pending for a later event or the tick. None: run its own."""
    if job.status is not Status.PENDING:
        return None
    try:
        others = engine.substitute(job)
    except Exception:
        log.warning("fair shares: could not pick a key; running the event's own job", exc_info=True)
        return None
    for other in others:
        report = engine.claim_report([other], limit=1, max_timeout=EVENT_BUDGET)
        if not report.executions:
            continue
        engine.adopt([job])  # an app's job waits its turn in its shard lane, where runners find it
        event(
            engine.log,
            "job_fair_turn",
            f"job {job.id}'s event runs {other.id} of another key (fair shares); it waits its turn",
            level=logging.DEBUG,
            **job_fields(job.id, job.type),
        )
        outcome = report.executions[0].run() or "unrecorded"
        _run_released(engine, report.executions[0].released, started)
        return outcome
    return None


def _run_continued(engine: Engine, wake: Job, job_id: str) -> str:
    """A wake-up document's created-event: delete it and run the next slice of the job it names."""
    try:
        engine.store.delete(wake.id, "delete:wake")
    except (
        Exception
    ):  # left, it is a no-op job that a tick completes, and it expires within the hour
        log.warning("could not delete the wake-up document %s", wake.id, exc_info=True)
    job = engine.store.get(job_id)
    if job is None:
        return "deleted"
    if job.status is not Status.PENDING:
        return "not_runnable"
    return run_created(engine, job)


def _repair_flows(engine: Engine) -> dict[str, int] | None:
    try:
        repaired = engine.flows.repair()
    except Exception:
        log.exception("repairing flows failed; the next tick tries again")
        return None
    return {"released": len(repaired.released), "ended": len(repaired.ended)}


def _run_released(engine: Engine, released: list[str], started: float) -> None:
    """Run here, one after another, the first jobs a run's end released (pending now, and no
    created-event will come for them): within the event's budget, at most `INLINE_RELEASED`;
    the rest start at the next tick or in a worker."""
    todo = list(released[:INLINE_RELEASED])
    while todo:
        left = EVENT_BUDGET - (time.monotonic() - started)
        if left <= 1.0:
            return
        found = engine.store.get_many(todo[:1], "released")
        todo = todo[1:]
        for execution in engine.claim(list(found.values()), limit=1, max_timeout=left):
            execution.run()
            todo += execution.released[: max(INLINE_RELEASED - len(todo), 0)]


__all__ = [
    "CREATED",
    "CREATED_WITH_AUTH",
    "Functions",
    "run_created",
]
