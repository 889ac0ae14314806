"""The REST API's request and response bodies, as pydantic models (and so its OpenAPI schemas).

Field names are the job document's (docs/reference/document.md), not the original API's
(``type`` not ``jobType``, ``metadata`` not ``payload``, ``attempts`` not
``retryCount``), so a job reads the same in Firestore, in Python and here.
"""

from __future__ import annotations

import base64
import json
import math
import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    field_validator,
)

from jobs_lib.model.job import Job, Status
from jobs_lib.store.results import encodable

#: The shape of an RFC 3339 date-time (pydantic then checks the values).
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:\d{2})$")

#: Largest metadata the API accepts, in bytes of JSON (a job document may hold 1 MiB in all).
MAX_METADATA_BYTES = 64 * 1024
MAX_PRIORITY = 10
MAX_ATTEMPTS = 20
#: Jobs per POST /v1/jobs:batch (one Firestore BatchWrite RPC).
MAX_BATCH = 500


def json_integer(value: Any) -> Any:
    """JSON Schema's integer: 3 and 3.0 are, true and "3" are not (pydantic's lax mode takes
    them)."""
    if isinstance(value, (bool, str)):
        raise ValueError("must be a JSON integer")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def bounded_metadata(value: dict[str, Any]) -> dict[str, Any]:
    """Metadata Firestore can store, within `MAX_METADATA_BYTES` of JSON."""
    problem = firestore_problem(value)
    if problem:
        raise ValueError(problem)
    try:
        size = len(json.dumps(value, allow_nan=False).encode())
    except ValueError:
        raise ValueError("metadata must be plain JSON (no NaN or Infinity)") from None
    if size > MAX_METADATA_BYTES:
        raise ValueError(
            f"metadata is {size} bytes of JSON; at most {MAX_METADATA_BYTES} are allowed"
        )
    return value


class CreateJobRequest(BaseModel):
    """``POST /v1/jobs``: a job to run, for the caller (and the caller's org)."""

    model_config = ConfigDict(extra="forbid")

    # Strict types: JSON `false` is not a priority, nor `"3"` a number of attempts.
    type: StrictStr = Field(
        min_length=1, max_length=100, description="A registered job type (its handler's name)."
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="The job's input; checked against the handler's input model.",
    )
    scheduledFor: AwareDatetime | None = Field(
        default=None, description="Earliest run time (RFC 3339 with an offset); absent means now."
    )
    priority: int = Field(
        default=0, ge=0, le=MAX_PRIORITY, description="Higher runs first among due jobs."
    )
    maxAttempts: int | None = Field(
        default=None, ge=1, le=MAX_ATTEMPTS, description="Overrides the handler's default."
    )

    @field_validator("priority", "maxAttempts", mode="before")
    @classmethod
    def _json_integer(cls, value: Any) -> Any:
        return json_integer(value)

    @field_validator("scheduledFor", mode="before")
    @classmethod
    def _text_time(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str):
            raise ValueError(
                "scheduledFor must be an RFC 3339 string such as '2030-01-01T09:00:00Z'"
            )
        return value

    @field_validator("metadata")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        return bounded_metadata(value)


class ListJobsQuery(BaseModel):
    """``GET /v1/jobs`` query parameters."""

    model_config = ConfigDict(extra="forbid")

    status: Status | None = Field(default=None, description="Only jobs in this state.")
    type: str | None = Field(
        default=None, min_length=1, max_length=100, description="Only jobs of this type."
    )
    pageSize: int = Field(default=20, ge=1, le=100, description="Jobs per page.")
    pageToken: str | None = Field(
        default=None,
        max_length=2000,
        description="`nextPageToken` of the previous page, with the same filters; any other "
        "value answers 400.",
    )
    scope: Literal["mine", "org", "all"] = Field(
        default="mine",
        description="`mine`: the caller's jobs; `org`: the caller's organisation's (org admins "
        "only); `all`: everyone's (operators only).",
    )
    orgId: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="With scope=all: only this organisation's jobs.",
    )
    createdBy: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="With scope=all: only this user's jobs.",
    )
    createdAfter: AwareDatetime | None = Field(
        default=None,
        description="Only jobs created at or after this time (RFC 3339 with an offset).",
    )
    createdBefore: AwareDatetime | None = Field(
        default=None, description="Only jobs created before this time (RFC 3339 with an offset)."
    )

    @field_validator("createdAfter", "createdBefore", mode="before")
    @classmethod
    def _rfc3339(cls, value: Any) -> Any:
        # pydantic would read "0.5" as seconds since 1970; a query wants a date-time.
        if value is not None and not (isinstance(value, str) and RFC3339.match(value)):
            raise ValueError("must be an RFC 3339 date-time such as '2030-01-01T09:00:00Z'")
        return value


class Progress(BaseModel):
    """What the handler last reported."""

    percent: float | None = None
    message: str | None = None
    currentStep: int | None = None
    totalSteps: int | None = None


class StepView(BaseModel):
    """A durable step the job recorded (``ctx.step``): when, by which attempt, how long it ran, how
    large its result is and where it is kept (the value itself is the handler's business)."""

    name: str
    at: datetime | None = None
    attempt: int | None = None
    ms: float | None = None
    size: int | None = None
    stored: Literal["inline", "document"] = Field(
        description="In the job document, or (a large result) in a document of the job's `steps` "
        "subcollection."
    )


class JobView(BaseModel):
    """A job as the API shows it. Times are RFC 3339 strings, whatever the document holds."""

    id: str
    type: str | None
    status: Status | None
    metadata: Any = None
    createdAt: datetime | None = None
    scheduledFor: datetime | None = None
    startedAt: datetime | None = None
    completedAt: datetime | None = None
    updatedAt: datetime | None = None
    priority: int = 0
    attempts: int = 0
    maxAttempts: int | None = None
    result: Any = None
    error: str | None = None
    errorDetails: Any = Field(
        default=None,
        description="What the runner recorded beside the error: attempt, reason, errorType, "
        "traceback.",
    )
    progress: Progress | None = None
    cancelRequested: bool = False
    orgId: str | None = None
    createdBy: str | None = None
    leaseHolder: str | None = Field(
        default=None,
        description="The worker or function instance that holds (or last held) the job.",
    )
    flowId: str | None = Field(
        default=None, description="The flow the job belongs to (POST /v1/flows)."
    )
    flowName: str | None = Field(default=None, description="Its name in that flow.")
    dependsOn: list[str] = Field(
        default_factory=list,
        description="The ids of the jobs it waits for; while any has not completed, it is "
        "`blocked`.",
    )
    leaseExpiresAt: datetime | None = None
    steps: list[StepView] = Field(
        default_factory=list,
        description="The durable steps it recorded (`ctx.step`), in the order they were recorded.",
    )
    continuations: int = Field(
        default=0,
        description="How many times it was continued in another invocation (a continuable "
        "handler's slices).",
    )
    sliceMs: list[int] = Field(
        default_factory=list,
        description="How long each of its latest slices ran, in milliseconds (at most the last "
        "50).",
    )
    activeMs: int = Field(
        default=0,
        description="Time it ran before its last continuation or sleep, over every slice, in "
        "milliseconds.",
    )
    sleeps: list[datetime] = Field(
        default_factory=list,
        description="When each of its durable sleeps (`ctx.sleep`) ended or ends, in order.",
    )

    @classmethod
    def of(cls, job: Job) -> JobView:
        """The view of a job read from Firestore."""
        progress = None
        if job.progress:
            progress = Progress(
                **{
                    k: _number_or_text(job.progress.get(k), k)
                    for k in ("percent", "message", "currentStep", "totalSteps")
                }
            )
        return cls(
            id=job.id,
            type=job.type,
            status=job.status,
            metadata=plain_json(job.metadata),
            createdAt=job.created_at,
            scheduledFor=job.scheduled_for,
            startedAt=job.started_at,
            completedAt=job.completed_at,
            updatedAt=job.updated_at,
            priority=job.priority,
            attempts=job.attempts,
            maxAttempts=job.max_attempts,
            result=plain_json(job.result),
            error=job.error,
            errorDetails=plain_json(job.error_details),
            progress=progress,
            cancelRequested=job.cancel_requested,
            orgId=job.org_id,
            createdBy=job.created_by,
            leaseHolder=job.lease.holder if job.lease else None,
            flowId=job.flow_id,
            flowName=job.flow_name,
            dependsOn=list(job.depends_on),
            leaseExpiresAt=job.lease.expires_at if job.lease else None,
            steps=_steps(job),
            continuations=job.continuations,
            sliceMs=job.slice_ms,
            activeMs=job.active_ms,
            sleeps=job.sleeps,
        )


def _steps(job: Job) -> list[StepView]:
    """A job's recorded steps as the API shows them, oldest first."""
    views = []
    for name, record in job.steps.items():
        at = record.get("at")
        views.append(
            StepView(
                name=name,
                at=at if isinstance(at, datetime) else None,
                attempt=record.get("attempt") if isinstance(record.get("attempt"), int) else None,
                ms=record.get("ms") if isinstance(record.get("ms"), int | float) else None,
                size=record.get("size") if isinstance(record.get("size"), int) else None,
                stored="document" if isinstance(record.get("document"), str) else "inline",
            )
        )
    return sorted(
        views, key=lambda v: (v.at is None, v.at or datetime.min.replace(tzinfo=UTC), v.name)
    )


class CreateJobsRequest(BaseModel):
    """``POST /v1/jobs:batch``: up to 500 jobs, created together for the caller."""

    model_config = ConfigDict(extra="forbid")

    jobs: list[CreateJobRequest] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description=f"The jobs, each as for POST /v1/jobs (1 to {MAX_BATCH}).",
    )


class FlowJobRequest(CreateJobRequest):
    """One job of ``POST /v1/flows``: a job as for POST /v1/jobs, its name in the flow, the names it
    waits for."""

    name: StrictStr = Field(
        min_length=1,
        max_length=200,
        description="The job's name in the flow (what other jobs' dependsOn name).",
    )
    dependsOn: list[StrictStr] = Field(
        default_factory=list,
        max_length=50,
        description="The names of the jobs of this flow it waits for (at most 50).",
    )


class CreateFlowRequest(BaseModel):
    """``POST /v1/flows``: up to 500 jobs that wait for one another, created in one atomic write."""

    model_config = ConfigDict(extra="forbid")

    jobs: list[FlowJobRequest] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description=f"The flow's jobs (1 to {MAX_BATCH}). Rules beyond this schema answer 400 "
        f"with details naming `jobs`: names unique, dependsOn naming other jobs of "
        f"the flow, no cycle.",
    )
    onParentFailure: Literal["fail", "ignore", "wait"] = Field(
        default="fail",
        description="A failed or cancelled parent: `fail` cancels the jobs that wait for it, "
        "`ignore` runs them once every parent has ended, `wait` keeps them blocked "
        "until it is retried to success.",
    )


class JobEnvelope(BaseModel):
    """A job and what the caller may do with it now."""

    job: JobView
    canCancel: bool = Field(
        description="The job is pending or running and the caller may cancel it."
    )
    canRetry: bool = Field(
        description="The job failed or was cancelled and the caller may retry it."
    )


class FlowView(BaseModel):
    """A flow: its id and its jobs (with their names in the flow) and what the caller may do with
    each."""

    flowId: str
    jobs: list[JobEnvelope]


class JobEnvelopeList(BaseModel):
    """The jobs a batch created, in the order asked."""

    jobs: list[JobEnvelope]


class JobList(BaseModel):
    """A page of jobs, newest first."""

    jobs: list[JobView]
    nextPageToken: str | None = Field(
        default=None, description="Pass as `pageToken` for the next page; absent on the last."
    )


class CreateScheduleRequest(BaseModel):
    """``POST /v1/schedules``: a recurring job, for the caller (and the caller's org)."""

    model_config = ConfigDict(extra="forbid")

    type: StrictStr = Field(min_length=1, max_length=100, description="A registered job type.")
    cron: StrictStr = Field(
        min_length=1,
        max_length=100,
        description="A five-field cron expression, e.g. `0 9 * * 1`; one the scheduler cannot "
        "read answers 400 naming `cron`.",
    )
    timezone: StrictStr = Field(
        default="UTC",
        min_length=1,
        max_length=64,
        description="IANA timezone the cron expression is read in; an unknown one answers 400 "
        "naming `timezone`.",
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="Each fired job's input; checked against the handler's input model.",
    )
    enabled: StrictBool = Field(default=True, description="A disabled schedule fires nothing.")
    priority: int = Field(
        default=0, ge=0, le=MAX_PRIORITY, description="Priority of the jobs it fires."
    )

    @field_validator("metadata")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        return bounded_metadata(value)

    @field_validator("priority", mode="before")
    @classmethod
    def _json_integer(cls, value: Any) -> Any:
        return json_integer(value)


class UpdateScheduleRequest(BaseModel):
    """``PATCH /v1/schedules/{id}``: the fields to change (at least one)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    cron: StrictStr | None = Field(default=None, min_length=1, max_length=100)
    timezone: StrictStr | None = Field(default=None, min_length=1, max_length=64)
    metadata: dict[str, Any] | None = None
    enabled: StrictBool | None = None
    priority: int | None = Field(default=None, ge=0, le=MAX_PRIORITY)

    @field_validator("metadata")
    @classmethod
    def _bounded(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else bounded_metadata(value)

    @field_validator("priority", mode="before")
    @classmethod
    def _json_integer(cls, value: Any) -> Any:
        return json_integer(value)


class ListSchedulesQuery(BaseModel):
    """``GET /v1/schedules`` query parameters."""

    model_config = ConfigDict(extra="forbid")

    pageSize: int = Field(default=20, ge=1, le=100, description="Schedules per page.")
    pageToken: str | None = Field(
        default=None,
        max_length=2000,
        description="`nextPageToken` of the previous page; any other value answers 400.",
    )
    scope: Literal["mine", "org", "all"] = Field(
        default="mine", description="`mine`, `org` (org admins only) or `all` (operators only)."
    )


class ScheduleView(BaseModel):
    """A schedule as the API shows it."""

    id: str
    type: str | None
    cron: str | None
    timezone: str
    metadata: Any = None
    enabled: bool
    priority: int = 0
    nextRunAt: datetime | None = None
    lastRunAt: datetime | None = None
    lastJobId: str | None = None
    error: str | None = None
    problems: list[str] = Field(
        default_factory=list, description="Why the schedule cannot fire, if it cannot."
    )
    orgId: str | None = None
    createdBy: str | None = None

    @classmethod
    def of(cls, schedule: Any) -> ScheduleView:
        """The view of a `jobs_lib.engine.schedules.Schedule`."""
        return cls(
            id=schedule.id,
            type=schedule.type,
            cron=schedule.cron,
            timezone=schedule.timezone,
            metadata=plain_json(schedule.metadata),
            enabled=schedule.enabled,
            priority=schedule.priority,
            nextRunAt=schedule.next_run_at,
            lastRunAt=schedule.last_run_at,
            lastJobId=schedule.last_job_id,
            error=schedule.error,
            problems=list(schedule.problems),
            orgId=schedule.org_id,
            createdBy=schedule.created_by,
        )


class ScheduleEnvelope(BaseModel):
    """A schedule and whether the caller may change it."""

    schedule: ScheduleView
    canEdit: bool = Field(description="The caller created it and holds `schedules.update`.")


class ScheduleList(BaseModel):
    """A page of schedules, in id order."""

    schedules: list[ScheduleView]
    nextPageToken: str | None = None


class FieldError(BaseModel):
    """One invalid input."""

    field: str
    reason: str


class ErrorBody(BaseModel):
    """What went wrong."""

    code: int
    status: str
    message: str
    details: list[FieldError] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx answer."""

    error: ErrorBody


#: Firestore's limits on what a document can hold.
MAX_DEPTH = 20
_INT64 = (-(2**63), 2**63 - 1)


def firestore_problem(value: Any, depth: int = 0) -> str | None:
    """Why Firestore would refuse to store this JSON value (too deep, a reserved or empty
    key, an integer outside int64, a string that is not valid Unicode), or None."""
    if depth > MAX_DEPTH:
        return f"nested more than {MAX_DEPTH} levels deep"
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return None
    if isinstance(value, int):
        return (
            None if _INT64[0] <= value <= _INT64[1] else f"integer {value} does not fit in 64 bits"
        )
    if isinstance(value, str):
        return None if encodable(value) else "strings must be valid Unicode (no lone surrogates)"
    if isinstance(value, dict):
        for key, item in value.items():
            if not key or not encodable(key) or (key.startswith("__") and key.endswith("__")):
                return (
                    f"{key!r} cannot be a field name (empty, reserved __name__ form, or "
                    f"not valid Unicode)"
                )
            problem = firestore_problem(item, depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, list):
        for item in value:
            if isinstance(item, list):
                return "a list cannot directly contain another list"
            problem = firestore_problem(item, depth + 1)
            if problem:
                return problem
        return None
    return f"{type(value).__name__} is not a JSON value"


def plain_json(value: Any) -> Any:
    """A Firestore value as JSON: times as RFC 3339, bytes as base64, references as paths."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    path = getattr(value, "path", None)  # DocumentReference
    if isinstance(path, str):
        return path
    if hasattr(value, "latitude") and hasattr(value, "longitude"):
        return {"latitude": value.latitude, "longitude": value.longitude}
    return str(value)


def _number_or_text(value: Any, key: str) -> Any:
    """Progress fields as written by handlers; anything of the wrong kind is dropped, not fatal."""
    if key == "message":
        return value if isinstance(value, str) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return int(value) if key in ("currentStep", "totalSteps") else value


__all__ = [
    "MAX_ATTEMPTS",
    "MAX_BATCH",
    "MAX_METADATA_BYTES",
    "MAX_PRIORITY",
    "CreateFlowRequest",
    "CreateJobRequest",
    "CreateJobsRequest",
    "CreateScheduleRequest",
    "ErrorBody",
    "ErrorResponse",
    "FieldError",
    "FlowJobRequest",
    "FlowView",
    "JobEnvelope",
    "JobEnvelopeList",
    "JobList",
    "JobView",
    "ListJobsQuery",
    "ListSchedulesQuery",
    "Progress",
    "ScheduleEnvelope",
    "ScheduleList",
    "ScheduleView",
    "UpdateScheduleRequest",
    "bounded_metadata",
    "firestore_problem",
    "json_integer",
    "plain_json",
]
