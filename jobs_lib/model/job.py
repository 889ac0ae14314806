"""The job as a typed value, read defensively from whatever an app wrote.

`Job.from_document` never raises: a field it cannot read is recorded in
`Job.problems`, and the runner ends such a job ``failed`` with those messages.
Absent ``status`` means pending; timestamps may be Firestore timestamps or
ISO-8601 strings; unknown fields are kept in `Job.extra`.
"""

from __future__ import annotations

import base64
import hashlib
import math
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from jobs_lib.model.clock import TimeParseError, parse_time


class Status(StrEnum):
    """The states of a job (the words the original app uses)."""

    PENDING = "pending"
    #: Part of a flow, waiting for the jobs it depends on (``dependsOn``) to finish.
    BLOCKED = "blocked"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True for the final states."""
        return self in FINISHED


FINISHED = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})

#: Fields the runner understands; anything else an app writes is kept in `Job.extra`.
KNOWN_FIELDS = frozenset(
    {
        "type",
        "status",
        "metadata",
        "createdAt",
        "scheduledFor",
        "priority",
        "maxAttempts",
        "orgId",
        "createdBy",
        "cancelRequested",
        "startedAt",
        "completedAt",
        "updatedAt",
        "attempts",
        "result",
        "error",
        "errorDetails",
        "progress",
        "lease",
        "leaseExpiresAt",
        "expireAt",
        "key",
        "traceparent",
        # flows (jobs_lib.engine.followups)
        "dependsOn",
        "flowId",
        "flowName",
        "onParentFailure",
        "dependentsSettled",
        # completion webhooks (jobs_lib.engine.webhooks)
        "webhook",
        "webhookJobId",
        "webhookFor",
        # durable jobs (jobs_lib.engine.durable)
        "steps",
        "stepDocuments",
        "cursor",
        "continuations",
        "sliceMs",
        "activeMs",
        "sleeps",
    }
)


#: Larger attempt counts are nonsense (and one more would not fit Firestore's 64-bit integers).
MAX_ATTEMPTS_FIELD = 1_000_000


@dataclass(frozen=True)
class Lease:
    """Who holds a running job and until when; `token` fences later writes."""

    holder: str
    token: str
    expires_at: datetime | None


@dataclass(frozen=True)
class Job:
    """One `backgroundJobs` document as the runner sees it."""

    id: str
    type: str | None
    status: Status | None
    metadata: Any = field(default_factory=dict)
    created_at: datetime | None = None
    scheduled_for: datetime | None = None
    priority: int = 0
    max_attempts: int | None = None
    attempts: int = 0
    org_id: str | None = None
    created_by: str | None = None
    cancel_requested: bool = False
    started_at: datetime | None = None
    completed_at: datetime | None = None
    updated_at: datetime | None = None
    result: Any = None
    error: str | None = None
    progress: dict[str, Any] | None = None
    lease: Lease | None = None
    #: The ids of the jobs this one waits for (a flow's ``dependsOn``).
    depends_on: tuple[str, ...] = ()
    #: The flow this job belongs to, and its name in that flow.
    flow_id: str | None = None
    flow_name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: The document's update time when read: the precondition for the next write.
    version: datetime | None = None
    #: The document's create time (Firestore's own, known even when the app wrote no createdAt).
    create_time: datetime | None = None
    #: Why this document cannot run, one message per unreadable field.
    problems: tuple[str, ...] = ()
    #: The document's fields as read: for showing it whole and measuring it. Everything else
    #: reads the typed fields and properties of this class.
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_document(
        cls,
        job_id: str,
        data: dict[str, Any] | None,
        version: datetime | None = None,
        *,
        created: datetime | None = None,
    ) -> Job:
        """Read a document's fields; never raises (see `problems`). `created` is the document's
        create time as Firestore reports it."""
        data = dict(data or {})
        problems: list[str] = []

        def time_field(name: str) -> datetime | None:
            try:
                return parse_time(data.get(name), name)
            except TimeParseError as exc:
                problems.append(str(exc))
                return None

        def int_field(name: str, default: int | None) -> int | None:
            value = data.get(name)
            if value is None:
                return default
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or (isinstance(value, float) and (not math.isfinite(value) or value != int(value)))
            ):
                problems.append(f"{name} must be a whole number, got {value!r}")
                return default
            return int(value)

        job_type = data.get("type")
        if not isinstance(job_type, str) or not job_type.strip():
            problems.append(
                "type is missing: every job needs a string 'type' naming its handler"
                if job_type is None
                else f"type must be a non-empty string, got {job_type!r}"
            )
            job_type = job_type if isinstance(job_type, str) else None

        raw_status = data.get("status")
        status: Status | None
        if raw_status is None:
            status = Status.PENDING
        else:
            try:
                status = Status(raw_status)
            except ValueError:
                status = None
                problems.append(
                    f"status {describe_value(raw_status)} is not one of "
                    f"{', '.join(s.value for s in Status)}; "
                    "create jobs with status 'pending' or without a status"
                )

        metadata = data.get("metadata", {})
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict):
            problems.append(
                f"metadata must be a map of input parameters, got {type(metadata).__name__} "
                f"{metadata!r}"[:300]
            )

        attempts = int_field("attempts", 0) or 0
        if not 0 <= attempts <= MAX_ATTEMPTS_FIELD:
            problems.append(f"attempts must be between 0 and {MAX_ATTEMPTS_FIELD}, got {attempts}")
            attempts = 0
        max_attempts = int_field("maxAttempts", None)
        if max_attempts is not None and max_attempts < 1:
            problems.append(f"maxAttempts must be at least 1, got {max_attempts}")
            max_attempts = None

        lease_data = data.get("lease")
        lease = None
        if isinstance(lease_data, dict):
            lease = Lease(
                holder=str(lease_data.get("holder", "")),
                token=str(lease_data.get("token", "")),
                expires_at=_quiet_time(data.get("leaseExpiresAt")),
            )

        depends_on: tuple[str, ...] = ()
        raw_depends = data.get("dependsOn")
        if raw_depends is not None:
            if isinstance(raw_depends, list) and all(isinstance(p, str) and p for p in raw_depends):
                depends_on = tuple(raw_depends)
            else:
                problems.append(
                    f"dependsOn must be an array of job ids, got {describe_value(raw_depends)}"
                )
        if status is Status.BLOCKED and not depends_on and raw_depends is None:
            problems.append(
                "status 'blocked' needs dependsOn (the ids of the jobs it waits for); create "
                "jobs with status 'pending' or through JobsClient.flow"
            )

        progress = data.get("progress")
        error = data.get("error")
        return cls(
            id=job_id,
            type=job_type,
            status=status,
            metadata=metadata,
            created_at=time_field("createdAt"),
            scheduled_for=time_field("scheduledFor"),
            priority=int_field("priority", 0) or 0,
            max_attempts=max_attempts,
            attempts=attempts,
            org_id=_str_or_none(data.get("orgId")),
            created_by=_str_or_none(data.get("createdBy")),
            cancel_requested=data.get("cancelRequested") is True,
            started_at=_quiet_time(data.get("startedAt")),
            completed_at=_quiet_time(data.get("completedAt")),
            updated_at=_quiet_time(data.get("updatedAt")),
            result=data.get("result"),
            error=error if isinstance(error, str) else (None if error is None else str(error)),
            progress=progress if isinstance(progress, dict) else None,
            lease=lease,
            depends_on=depends_on,
            flow_id=_str_or_none(data.get("flowId")),
            flow_name=_str_or_none(data.get("flowName")),
            extra={k: v for k, v in data.items() if k not in KNOWN_FIELDS},
            version=version,
            create_time=created,
            problems=tuple(problems),
            raw=data,
        )

    def is_due(self, now: datetime) -> bool:
        """True when the job may start: no ``scheduledFor`` or one not after ``now``."""
        return self.scheduled_for is None or self.scheduled_for <= now

    @property
    def leased_by_a_runner(self) -> bool:
        """True when the lease has the shape jobs_lib writes: a holder, a token and an expiry
        time."""
        return (
            self.lease is not None
            and bool(self.lease.token)
            and bool(self.lease.holder)
            and self.lease.expires_at is not None
        )

    def lease_expired(self, now: datetime) -> bool:
        """True for a running job whose lease has lapsed (or that never had one)."""
        expires = self.lease.expires_at if self.lease else None
        return expires is None or expires <= now

    @property
    def can_cancel(self) -> bool:
        """Blocked, pending and running jobs can be cancelled."""
        return self.status in (Status.PENDING, Status.BLOCKED, Status.IN_PROGRESS)

    @property
    def has_follow_ups(self) -> bool:
        """True for a job with something to do when it ends: jobs of its flow that wait for it (the
        runner releases them), or a webhook to call."""
        return "dependentsSettled" in self.raw or bool(self.raw.get("webhook"))

    # -- fields as written, for the runner's checks ---------------------------------------------

    def field_value(self, name: str) -> Any:
        """A field of the document as stored, by name: one a handler's options name (its
        ``concurrency_key`` or ``rate_key``), which the job's type does not know in advance."""
        return self.raw.get(name)

    @property
    def written_status(self) -> bool:
        """Whether the document has a ``status`` (an app may leave it out: it counts as pending)."""
        return self.raw.get("status") is not None

    @property
    def written_shard(self) -> Any:
        """``shard`` as stored: a shard lane's number, or anything an app wrote (or None)."""
        return self.raw.get("shard")

    @property
    def written_scheduled_for(self) -> Any:
        """``scheduledFor`` as stored: a timestamp, an ISO-8601 string, or anything an app wrote."""
        return self.raw.get("scheduledFor")

    @property
    def key(self) -> Any:
        """The idempotency key `enqueue` wrote (clients cannot write one), or None."""
        return self.raw.get("key")

    @property
    def traceparent(self) -> str | None:
        """The W3C trace context of whoever enqueued it."""
        value = self.raw.get("traceparent")
        return value if isinstance(value, str) else None

    @property
    def webhook(self) -> Any:
        """``webhook``: a URL given to `enqueue`, True for the handler's own, or None."""
        return self.raw.get("webhook")

    @property
    def has_webhook_field(self) -> bool:
        return "webhook" in self.raw

    def with_handler_webhook(self) -> Job:
        """This job, marked to call its handler's webhook when it ends."""
        return replace(self, raw={**self.raw, "webhook": True})

    @property
    def webhook_for(self) -> Any:
        """On a webhook delivery job: the id of the job whose end it delivers."""
        return self.raw.get("webhookFor")

    @property
    def on_parent_failure(self) -> Any:
        """In a flow: what the job does when a job it waits for fails (``fail`` by default)."""
        return self.raw.get("onParentFailure", "fail")

    @property
    def dependents_settled(self) -> Any:
        """On a flow's parent: True once the jobs that wait for it were dealt with."""
        return self.raw.get("dependentsSettled")

    @property
    def error_details(self) -> Any:
        """``errorDetails`` as the runner wrote it (the reason, the attempt, ...)."""
        return self.raw.get("errorDetails")

    # -- durable jobs (jobs_lib.engine.durable) ---------------------------------------------

    @property
    def steps(self) -> dict[str, Any]:
        """The durable steps the job recorded, by name (``value``, or ``document`` for a large one;
        ``at``, ``attempt``, ``ms``, ``size``)."""
        steps = self.raw.get("steps")
        return (
            {k: v for k, v in steps.items() if isinstance(v, dict)}
            if isinstance(steps, dict)
            else {}
        )

    @property
    def cursor(self) -> Any:
        """The job's last checkpoint (``ctx.checkpoint``), None when it has none."""
        return self.raw.get("cursor")

    @property
    def continuations(self) -> int:
        """How many times the job was continued in another invocation."""
        return _count(self.raw.get("continuations"))

    @property
    def slice_ms(self) -> list[int]:
        """The lengths of its latest slices (runs that ended in a continuation), in milliseconds."""
        value = self.raw.get("sliceMs")
        return (
            [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
            if isinstance(value, list)
            else []
        )

    @property
    def active_ms(self) -> int:
        """Time the job ran before its last continuation or sleep, over all its slices, in
        milliseconds."""
        return _count(self.raw.get("activeMs"))

    @property
    def sleep_times(self) -> dict[int, datetime]:
        """Its durable sleeps: the n-th sleep of the handler -> when it ends (or ended)."""
        value = self.raw.get("sleeps")
        if not isinstance(value, dict):
            return {}
        return {
            int(k): v
            for k, v in value.items()
            if isinstance(k, str) and k.isdigit() and isinstance(v, datetime)
        }

    @property
    def sleeps(self) -> list[datetime]:
        """When each of its durable sleeps ended (or ends), in the order the handler slept."""
        return [v for _k, v in sorted(self.sleep_times.items())]

    @property
    def can_retry(self) -> bool:
        """Failed and cancelled jobs can be retried by hand."""
        return self.status in (Status.FAILED, Status.CANCELLED)


def key_to_id(job_type: str, key: str) -> str:
    """The document id an idempotency key names: 26 base32 characters of a hash of type and key."""
    digest = hashlib.sha256(f"{job_type}\x00{key}".encode()).digest()
    return base64.b32encode(digest).decode().rstrip("=")[:26]


def describe_value(value: Any, limit: int = 120) -> str:
    """A field's value as a person reads it in an error: strings quoted, other kinds named."""
    if isinstance(value, str):
        text = repr(value)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, datetime):
        text = f"(a timestamp, {value.isoformat()})"
    elif isinstance(value, int | float):
        text = f"({value!r}, a number)"
    elif isinstance(value, dict):
        text = (
            f"(a map with keys {', '.join(sorted(map(str, value)))[:60]})"
            if value
            else "(an empty map)"
        )
    elif isinstance(value, list | tuple):
        text = f"(an array of {len(value)})"
    elif isinstance(value, bytes):
        text = f"({len(value)} bytes)"
    else:
        text = f"(a {type(value).__name__})"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _quiet_time(value: Any) -> datetime | None:
    """Runner-written times: unreadable ones are treated as absent, not as poison."""
    try:
        return parse_time(value)
    except TimeParseError:
        return None


def _count(value: Any) -> int:
    """A positive integer field as written, else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


__all__ = ["FINISHED", "Job", "Lease", "Status", "describe_value", "key_to_id"]
