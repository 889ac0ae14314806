"""The operators' endpoints of the REST API: what the console reads and does.

    GET  /v1/me                    who the caller is, what they may do   (a token)
    GET  /v1/overview              per-type queue figures, the chart     jobs.view, operator/admin
    GET  /v1/jobs:count            how many jobs match (bulk retry)      jobs.view, operator/admin
    POST /v1/jobs:retryFailed      retry every failed job that matches   jobs.retry, operator
    GET  /v1/queues                job types, paused or not              jobs.view
    POST /v1/queues/{type}/pause   stop starting jobs of a type          queues.manage, operator
    POST /v1/queues/{type}/resume  start them again                      queues.manage, operator

Operators (the ``operator: true`` claim) see and act on every job; an org
admin sees the figures of their own organisation. Every action is audited
on ``jobs_lib.api.audit`` like the jobs endpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from werkzeug.wrappers import Request, Response

from jobs_lib.api.auth import Caller
from jobs_lib.api.http import Endpoints, field_errors, json_response, parse_query, read_json_body
from jobs_lib.api.models import FieldError
from jobs_lib.client import JobsClient
from jobs_lib.console.overview import Overview
from jobs_lib.errors import ApiError
from jobs_lib.model.job import Status

#: At most this many jobs are retried by one bulk request (the confirmation says how many match).
MAX_BULK = 10_000


class CountQuery(BaseModel):
    """``GET /v1/jobs:count`` query parameters."""

    model_config = ConfigDict(extra="forbid")

    status: Status = Field(description="Count jobs in this state.")
    type: str | None = Field(
        default=None, min_length=1, max_length=100, description="Only jobs of this type."
    )
    orgId: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Only this organisation's jobs (operators; an org admin always counts their "
        "own).",
    )


class RetryFailedRequest(BaseModel):
    """``POST /v1/jobs:retryFailed``: which failed jobs to send back to pending."""

    model_config = ConfigDict(extra="forbid")

    type: str | None = Field(
        default=None, min_length=1, max_length=100, description="Only failed jobs of this type."
    )
    orgId: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Only this organisation's failed jobs.",
    )
    expected: int | None = Field(
        default=None,
        ge=0,
        description="The count the operator confirmed; the answer says how many were retried.",
    )


class OverviewQuery(BaseModel):
    """``GET /v1/overview`` query parameters."""

    model_config = ConfigDict(extra="forbid")

    orgId: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Operators: one organisation's figures.",
    )


class QueueAction(BaseModel):
    """The answer to a pause or resume: every paused type now."""

    type: str
    paused: bool
    pausedTypes: list[str]
    action: Literal["pause", "resume"]


class OperatorEndpoints:
    """The console's routes on a `JobsApi` (which supplies auth, audit and the registry)."""

    def __init__(self, api: Endpoints, client: JobsClient) -> None:
        self.api = api
        self.client = client
        self.overview = Overview(client.store, api.registry)

    def routes(self) -> list[tuple[str, str, Callable[..., Response]]]:
        """(path, method, handler) for each endpoint."""
        return [
            ("/v1/me", "GET", self.me),
            ("/v1/overview", "GET", self.get_overview),
            ("/v1/jobs:count", "GET", self.count),
            ("/v1/jobs:retryFailed", "POST", self.retry_failed),
            ("/v1/queues", "GET", self.queues),
            ("/v1/queues/<job_type>/pause", "POST", self.pause),
            ("/v1/queues/<job_type>/resume", "POST", self.resume),
        ]

    @staticmethod
    def _org_scope(caller: Caller, org_id: str | None) -> str | None:
        """The organisation whose figures the caller may read: any (or all) for an operator, their
        own for an org admin."""
        if caller.operator:
            return org_id
        if caller.org_admin and caller.org_id:
            if org_id not in (None, caller.org_id):
                raise ApiError(403, "an org admin sees only their own organisation's figures")
            return caller.org_id
        raise ApiError(
            403,
            "the overview needs the operator claim (or orgAdmin, for an organisation's figures)",
        )

    def me(self, request: Request) -> Response:
        """``GET /v1/me``: the verified caller, so the console shows only what they may do."""
        caller = self.api.caller(request, "")
        return json_response(
            {
                "uid": caller.uid,
                "orgId": caller.org_id,
                "orgAdmin": caller.org_admin,
                "operator": caller.operator,
                "permissions": sorted(caller.permissions),
            }
        )

    def get_overview(self, request: Request) -> Response:
        """``GET /v1/overview``."""
        caller = self.api.caller(request, "jobs.view")
        query = parse_query(request, OverviewQuery)
        return json_response(self.overview.figures(self._org_scope(caller, query.orgId)))

    def count(self, request: Request) -> Response:
        """``GET /v1/jobs:count``."""
        caller = self.api.caller(request, "jobs.view")
        query = parse_query(request, CountQuery)
        org = self._org_scope(caller, query.orgId)
        return json_response(
            {
                "count": self.client.store.count_matching(
                    status=query.status.value, job_type=query.type, org_id=org
                )
            }
        )

    def retry_failed(self, request: Request) -> Response:
        """``POST /v1/jobs:retryFailed``."""
        caller = self.api.caller(request, "jobs.retry")
        try:
            body = RetryFailedRequest.model_validate(read_json_body(request))
        except ValidationError as exc:
            raise ApiError(400, "invalid request", field_errors(exc)) from None
        if not caller.operator:
            self.api.audit(
                caller,
                "jobs.retry",
                None,
                body.type,
                403,
                f"{caller.uid} may not retry other users' jobs in bulk",
            )
            raise ApiError(403, "retrying failed jobs in bulk needs the operator claim")
        ids = self.client.retry_failed(body.type, MAX_BULK, org_id=body.orgId)
        what = f"failed {body.type or 'jobs of every type'}" + (
            f" of org {body.orgId}" if body.orgId else ""
        )
        self.api.audit(
            caller,
            "jobs.retry",
            None,
            body.type,
            200,
            f"{caller.uid} retried {len(ids)} {what} (confirmed {body.expected})",
        )
        return json_response({"retried": len(ids), "expected": body.expected, "ids": ids[:100]})

    def queues(self, request: Request) -> Response:
        """``GET /v1/queues``."""
        self.api.caller(request, "jobs.view")
        paused = self.client.paused()
        return json_response(
            {
                "queues": [{"type": t, "paused": t in paused} for t in self.api.registry.types()],
                "pausedTypes": sorted(paused),
            }
        )

    def pause(self, request: Request, job_type: str) -> Response:
        """``POST /v1/queues/{type}/pause``."""
        return self._queue(request, job_type, "pause")

    def resume(self, request: Request, job_type: str) -> Response:
        """``POST /v1/queues/{type}/resume``."""
        return self._queue(request, job_type, "resume")

    def _queue(
        self, request: Request, job_type: str, action: Literal["pause", "resume"]
    ) -> Response:
        caller = self.api.caller(request, "queues.manage")
        if not caller.operator:
            self.api.audit(
                caller,
                "queues.manage",
                None,
                job_type,
                403,
                f"{caller.uid} may not {action} {job_type}: not an operator",
            )
            raise ApiError(403, f"to {action} a job type needs the operator claim")
        if job_type not in self.api.registry:
            raise ApiError(
                404,
                f"no job type {job_type!r} is registered",
                [FieldError(field="type", reason="unknown type")],
            )
        if action == "pause":
            self.client.pause(job_type)
        else:
            self.client.resume(job_type)
        paused = self.client.paused()
        self.api.audit(
            caller, "queues.manage", None, job_type, 200, f"{caller.uid} {action}d {job_type}"
        )
        return json_response(
            QueueAction(
                type=job_type, paused=job_type in paused, pausedTypes=sorted(paused), action=action
            )
        )


__all__ = ["MAX_BULK", "CountQuery", "OperatorEndpoints", "OverviewQuery", "RetryFailedRequest"]
