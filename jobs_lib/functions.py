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
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.cloud.firestore_v1.types import document as document_types
from google.events.cloud.firestore import DocumentEventData

from jobs_lib.config import Settings
from jobs_lib.job import Job
from jobs_lib.logs import event, job_fields
from jobs_lib.registry import EVENT_BUDGET, default_registry, load_handler_modules
from jobs_lib.runner import Engine
from jobs_lib.store import JobStore
from jobs_lib.wire import decode_value, from_timestamp_pb
from jobs_lib.worker import Worker, make_scheduler

log = logging.getLogger("jobs_lib.functions")

CREATED = "google.cloud.firestore.document.v1.created"
CREATED_WITH_AUTH = "google.cloud.firestore.document.v1.created.withAuthContext"

#: Default seconds a tick keeps claiming jobs (it fires every minute).
DEFAULT_TICK_BUDGET = 50.0
#: Default timeout of the deployed tick function: jobs it claims may run until then.
#: `jobs deploy` sets it (and JOBS_FUNCTION_TIMEOUT) to fit the longest handler.
DEFAULT_FUNCTION_TIMEOUT = 540.0

_lock = threading.Lock()
_engine: Engine | None = None


def _shared_engine() -> Engine:
    """The process's engine, built on first use (never at import, so a cold start stays cheap)."""
    global _engine
    with _lock:
        if _engine is None:
            load_handler_modules()
            _engine = Engine(JobStore(Settings.from_env()), default_registry, runtime="function")
        return _engine


@dataclass(frozen=True)
class CreatedDocument:
    """The document a created-event carries."""

    job_id: str
    collection: str
    fields: dict[str, Any]
    update_time: datetime


def decode_document_event(data: bytes | str | None, client: Any = None) -> CreatedDocument | None:
    """Decode a Firestore document event's data; None when it carries no document.

    Eventarc sends the ``DocumentEventData`` protobuf as raw bytes; the emulator
    sends the same bytes base64-encoded. Raw protobuf starts with a byte outside
    the base64 alphabet, so strict base64 decoding tells them apart.
    """
    if not data:
        return None
    raw = data.encode() if isinstance(data, str) else bytes(data)
    try:
        payload = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        payload = raw
    message = DocumentEventData.pb()()
    message.ParseFromString(payload)
    if not message.HasField("value") or not message.value.name:
        return None  # e.g. the emulator's "created" for a delete of a missing document
    # google.events and google.cloud.firestore share the Document wire format.
    document = document_types.Document.pb()()
    document.ParseFromString(message.value.SerializeToString())
    fields = {key: decode_value(value, client) for key, value in document.fields.items()}
    path = document.name.split("/documents/", 1)[1]
    collection, _, job_id = path.rpartition("/")
    return CreatedDocument(job_id, collection, fields, from_timestamp_pb(document.update_time))


def on_job_created(cloud_event: Any) -> str:
    """Handle a created-event: claim and run that one job. Returns what happened, for the log."""
    engine = _shared_engine()
    kind = cloud_event["type"]
    if kind not in (CREATED, CREATED_WITH_AUTH):
        event(engine.log, "event_ignored", f"ignored a {kind} event", detail=cloud_event["id"])
        return "ignored"
    doc = decode_document_event(cloud_event.data, engine.store.db)
    if doc is None:
        event(engine.log, "event_ignored", "ignored a created-event without a document", detail=cloud_event["id"])
        return "ignored"
    if doc.collection != engine.store.settings.collection:
        event(engine.log, "event_ignored", f"ignored a document in {doc.collection}, not {engine.store.settings.collection}")
        return "ignored"
    return run_created(engine, Job.from_document(doc.job_id, doc.fields, doc.update_time))


def run_created(engine: Engine, job: Job) -> str:
    """Claim the job as the event showed it and run it here; on a stale version, read it once and retry."""
    spec = engine.spec_for(job)
    if spec is not None and (spec.worker_only or spec.timeout > EVENT_BUDGET):
        where = "jobs worker" if spec.worker_only else "the tick"
        event(engine.log, "job_deferred", f"job {job.id} left to {where}: its timeout of {spec.timeout:g}s exceeds what an event function may run", **job_fields(job.id, job.type))
        return "deferred"
    for _ in range(2):
        executions = engine.claim([job], limit=1, max_timeout=EVENT_BUDGET)
        if executions:
            return executions[0].run() or "unrecorded"
        tried, _won = engine.last_claim
        if not tried:
            return "not_runnable"  # settled as poison or cancelled, not due yet, or taken by another
        fresh = engine.store.get(job.id)  # changed since the event: look at it as it is now
        if fresh is None:
            return "deleted"
        job = fresh
    return "taken"


def tick(request: Any = None) -> dict[str, Any]:
    """One Cloud Scheduler tick: run what is due within the budget; returns a JSON-able summary."""
    budget = float(os.environ.get("JOBS_TICK_BUDGET", DEFAULT_TICK_BUDGET))
    # Leave a margin under the function's own timeout to record outcomes and release leases.
    hard_limit = max(float(os.environ.get("JOBS_FUNCTION_TIMEOUT", DEFAULT_FUNCTION_TIMEOUT)) - 20.0, budget)
    concurrency = int(os.environ.get("JOBS_TICK_CONCURRENCY", "10"))
    shared = _shared_engine()
    # A fresh engine per tick (its recorder and keeper end with it); the Firestore client is shared.
    engine = Engine(shared.store, shared.registry, runtime="function")
    worker = Worker(engine, concurrency=concurrency, burst=True, budget=budget, hard_limit=hard_limit, grace=0, poll_interval=0.1, schedules=False)
    # Fire due schedule slots first, so that this tick also runs the jobs they create.
    fired = make_scheduler(engine).fire_due()
    summary = worker.run().as_dict()
    summary["schedules"] = fired.as_dict()
    headers = getattr(request, "headers", {}) or {}
    summary["scheduleTime"] = headers.get("X-CloudScheduler-ScheduleTime")
    summary["budgetSeconds"] = budget
    event(engine.log, "tick_done", f"tick claimed {summary['claimed']} jobs in {summary['seconds']}s", stats=summary)
    return summary


__all__ = ["CREATED", "CREATED_WITH_AUTH", "CreatedDocument", "decode_document_event", "on_job_created", "run_created", "tick"]
