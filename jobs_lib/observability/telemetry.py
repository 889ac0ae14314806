"""Metrics and traces through the OpenTelemetry API: recorded everywhere, exported where the app
says.

jobs_lib depends on ``opentelemetry-api`` only. Until the application (or
`jobs_lib.observability.export`, the optional ``[telemetry]`` extra) installs an
SDK, every instrument below is a no-op that costs a method call. One set of
metrics wherever jobs run (the worker, the created-event function, the tick,
the API), each with the attributes ``type`` and ``runtime`` (``worker`` or
``function``) and, where it applies, ``outcome``:

    counter    jobs_enqueued          jobs created (client, API, schedules)
    counter    jobs_started           attempts started (claims won)
    counter    jobs_completed         jobs that ended completed
    counter    jobs_failed            jobs that ended failed (outcome: why)
    counter    jobs_retried           failed attempts sent back to pending
    counter    jobs_cancelled         jobs that ended cancelled
    counter    jobs_recovered         claims of a job whose lease had expired
    counter    jobs_dead_lettered     jobs failed after their last attempt
    histogram  job_run (s)            handler start to recorded outcome (outcome)
    histogram  job_queue (s)          scheduledFor (or createdAt) to start
    histogram  job_end_to_end (s)     createdAt to the final state (outcome)
    updown     jobs_in_progress       attempts running in this process
    gauge      jobs_due               due pending jobs, per type (from `QueueStats`)
    gauge      jobs_oldest_due (s)    age of the oldest due job, per type

Through the Prometheus exporter these become ``jobs_enqueued_total``, ...,
``job_run_seconds``, ``jobs_oldest_due_seconds`` (counters end in
``_total``, times in seconds).

Traces: `enqueue` stores the caller's W3C ``traceparent`` in the job; each
attempt runs in a span (``job <type>``) whose parent is that context on the
first attempt and which links to it on retries; the claim, the handler and
the outcome's write are child spans. Every log line about the job carries
``logging.googleapis.com/trace``, ``logging.googleapis.com/spanId`` and the
trace id as ``correlationId`` (the original app's log field), so Cloud Logging groups a job's
lines with its trace.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Link, Span, SpanKind, StatusCode

log = logging.getLogger("jobs_lib.telemetry")

#: A W3C traceparent: version, 32 hex trace id, 16 hex span id, flags.
TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
#: Seconds buckets for the time histograms (10 ms to 1 h).
TIME_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)


@dataclass(frozen=True)
class QueueStats:
    """Per type: how many pending jobs are due now, and how long the oldest has waited (seconds)."""

    due: int
    oldest_due_seconds: float


class Telemetry:
    """jobs_lib's instruments on one meter and one tracer (the global providers unless given)."""

    def __init__(
        self,
        runtime: str = "worker",
        *,
        meter_provider: metrics.MeterProvider | None = None,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self.runtime = runtime
        self._meter_provider = meter_provider
        self._attribute_sets: dict[tuple[str | None, str | None], dict[str, str]] = {}
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("jobs_lib")
        self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("jobs_lib")
        self._counters = {
            name: meter.create_counter(f"jobs_{name}", unit="1", description=description)
            for name, description in (
                ("enqueued", "jobs created"),
                ("started", "attempts started"),
                ("completed", "jobs that ended completed"),
                ("failed", "jobs that ended failed"),
                ("retried", "failed attempts sent back to pending"),
                ("cancelled", "jobs that ended cancelled"),
                ("recovered", "claims of jobs whose lease had expired"),
                ("dead_lettered", "jobs failed after their last attempt"),
            )
        }
        self._run = meter.create_histogram(
            "job_run",
            unit="s",
            description="handler start to recorded outcome",
            explicit_bucket_boundaries_advisory=TIME_BUCKETS,
        )
        self._queue = meter.create_histogram(
            "job_queue",
            unit="s",
            description="scheduledFor (or createdAt) to start",
            explicit_bucket_boundaries_advisory=TIME_BUCKETS,
        )
        self._end_to_end = meter.create_histogram(
            "job_end_to_end",
            unit="s",
            description="createdAt to the final state",
            explicit_bucket_boundaries_advisory=TIME_BUCKETS,
        )
        self._in_progress = meter.create_up_down_counter(
            "jobs_in_progress", unit="1", description="attempts running in this process"
        )
        self._queue_stats: dict[str, QueueStats] = {}
        self._stats_lock = threading.Lock()
        meter.create_observable_gauge(
            "jobs_due", [self._observe_due], unit="1", description="due pending jobs"
        )
        meter.create_observable_gauge(
            "jobs_oldest_due",
            [self._observe_oldest],
            unit="s",
            description="age of the oldest due pending job",
        )

    # -- metrics ---------------------------------------------------------------------------

    @property
    def recording_metrics(self) -> bool:
        """True once an SDK records these metrics (only then are the queue gauges worth their
        reads)."""
        provider = self._meter_provider or metrics.get_meter_provider()
        return type(provider).__name__ not in ("NoOpMeterProvider", "_ProxyMeterProvider")

    def _attributes(self, job_type: str | None, outcome: str | None = None) -> dict[str, str]:
        # One dict per label set, built once: every job records several measurements with the same
        # labels.
        key = (job_type, outcome)
        attributes = self._attribute_sets.get(key)
        if attributes is None:
            attributes = {"type": job_type or "unknown", "runtime": self.runtime}
            if outcome is not None:
                attributes["outcome"] = outcome
            if len(self._attribute_sets) < 10_000:
                self._attribute_sets[key] = attributes
        return attributes

    def count(self, name: str, job_type: str | None, outcome: str | None = None) -> None:
        """Add one to the counter `name` (``enqueued``, ``started``, ``failed``, ...)."""
        self._counters[name].add(1, self._attributes(job_type, outcome))

    def started(
        self, job_type: str | None, queued_since: datetime | None, now: datetime, recovered: bool
    ) -> None:
        """An attempt started: count it, its wait in the queue, and the process's running jobs."""
        self.count("started", job_type)
        if recovered:
            self.count("recovered", job_type)
        if queued_since is not None:
            self._queue.record(
                max((now - queued_since).total_seconds(), 0.0), self._attributes(job_type)
            )
        self._in_progress.add(1, self._attributes(job_type))

    def stopped(self, job_type: str | None) -> None:
        """An attempt this process ran is over (recorded or not)."""
        self._in_progress.add(-1, self._attributes(job_type))

    def ended(
        self,
        job_type: str | None,
        outcome: str,
        run_seconds: float | None,
        created_at: datetime | None,
        now: datetime,
        reason: str | None = None,
        exhausted: bool = False,
    ) -> None:
        """An outcome was recorded: ``completed``, ``failed``, ``retried`` or ``cancelled``."""
        counter_outcome = reason if outcome == "failed" else None
        self.count(outcome, job_type, counter_outcome)
        if exhausted:
            self.count("dead_lettered", job_type)
        if run_seconds is not None:
            self._run.record(max(run_seconds, 0.0), self._attributes(job_type, outcome))
        if outcome != "retried" and created_at is not None:
            self._end_to_end.record(
                max((now - created_at).total_seconds(), 0.0), self._attributes(job_type, outcome)
            )

    def set_queue_stats(self, stats: Mapping[str, QueueStats]) -> None:
        """The latest per-type queue figures (the gauges report these when read)."""
        with self._stats_lock:
            self._queue_stats = dict(stats)

    def _observe_due(self, _options: CallbackOptions) -> Iterable[Observation]:
        with self._stats_lock:
            stats = dict(self._queue_stats)
        return [Observation(s.due, self._attributes(t)) for t, s in sorted(stats.items())]

    def _observe_oldest(self, _options: CallbackOptions) -> Iterable[Observation]:
        with self._stats_lock:
            stats = dict(self._queue_stats)
        return [
            Observation(s.oldest_due_seconds, self._attributes(t)) for t, s in sorted(stats.items())
        ]

    # -- traces ----------------------------------------------------------------------------

    @staticmethod
    def current_traceparent() -> str | None:
        """The caller's W3C traceparent, if a span is active (what `enqueue` stores in the job)."""
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        value = carrier.get("traceparent")
        return value if value and TRACEPARENT.match(value) else None

    @staticmethod
    def context_from_headers(headers: Mapping[str, str]) -> otel_context.Context:
        """The trace context a request carries (``traceparent``), for the API."""
        return propagate.extract({k.lower(): v for k, v in headers.items()})

    def start_attempt(
        self,
        job_id: str,
        job_type: str | None,
        attempt: int,
        traceparent: Any,
        start_time: int | None = None,
    ) -> Span:
        """The span of one attempt: child of the enqueuer's trace on the first attempt, linked to it
        later.

        A malformed ``traceparent`` starts a new trace, with a warning.
        """
        parent_span = None
        if traceparent is not None:
            if isinstance(traceparent, str) and TRACEPARENT.match(traceparent.strip().lower()):
                parent_span = trace.get_current_span(
                    propagate.extract({"traceparent": traceparent.strip().lower()})
                ).get_span_context()
            if parent_span is None or not parent_span.is_valid:
                log.warning(
                    "job %s has a malformed traceparent %r; its run starts a new trace",
                    job_id,
                    str(traceparent)[:100],
                    extra={"event": "trace_invalid", "jobId": job_id, "type": job_type},
                )
                parent_span = None
        attributes: dict[str, str | int] = {
            "jobs.job_id": job_id,
            "jobs.type": job_type or "unknown",
            "jobs.attempt": attempt,
            "jobs.runtime": self.runtime,
        }
        if parent_span is not None and attempt <= 1:
            parent = trace.set_span_in_context(
                trace.NonRecordingSpan(parent_span), otel_context.Context()
            )
            return self.tracer.start_span(
                f"job {job_type}",
                context=parent,
                kind=SpanKind.CONSUMER,
                attributes=attributes,
                start_time=start_time,
            )
        links = [Link(parent_span, {"jobs.link": "enqueued"})] if parent_span is not None else []
        return self.tracer.start_span(
            f"job {job_type}",
            context=otel_context.Context(),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
            start_time=start_time,
        )

    def child(
        self, name: str, parent: Span, start_time: int | None = None, end_time: int | None = None
    ) -> Span:
        """A child span of an attempt (ended at once when `end_time` is given)."""
        span = self.tracer.start_span(
            name, context=trace.set_span_in_context(parent), start_time=start_time
        )
        if end_time is not None:
            span.end(end_time)
        return span

    @staticmethod
    def failed(span: Span, message: str) -> None:
        """Mark a span as failed."""
        span.set_status(StatusCode.ERROR, message[:500])


def log_fields(span: Span | None, project: str) -> dict[str, Any]:
    """The fields that make Cloud Logging group a line with its trace (and the original app's
    correlationId)."""
    context = (span or trace.get_current_span()).get_span_context()
    if not context.is_valid:
        return {}
    trace_id = format(context.trace_id, "032x")
    return {
        "logging.googleapis.com/trace": f"projects/{project}/traces/{trace_id}",
        "logging.googleapis.com/spanId": format(context.span_id, "016x"),
        "logging.googleapis.com/trace_sampled": bool(context.trace_flags.sampled),
        "correlationId": trace_id,
    }


def span_context(span: Span) -> otel_context.Context:
    """A context whose current span is `span` (to parent spans started on another thread)."""
    return trace.set_span_in_context(span)


def used(span: Span) -> AbstractContextManager[Span]:
    """``with`` the span current, not ending it on exit (the attempt ends it after recording)."""
    return trace.use_span(span, end_on_exit=False)


__all__ = [
    "TIME_BUCKETS",
    "TRACEPARENT",
    "QueueStats",
    "Telemetry",
    "log_fields",
    "span_context",
    "used",
]
