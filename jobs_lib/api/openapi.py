"""The OpenAPI 3.1 document of the jobs API, built from the pydantic models it validates with.

Served at ``GET /v1/openapi.json``; the fuzz test (schemathesis) reads the
same document, so what is described is what is checked.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic.json_schema import models_json_schema

from jobs_lib.api.models import (
    CreateFlowRequest,
    CreateJobRequest,
    CreateJobsRequest,
    CreateScheduleRequest,
    ErrorResponse,
    FlowView,
    JobEnvelope,
    JobEnvelopeList,
    JobList,
    ListJobsQuery,
    ScheduleEnvelope,
    ScheduleList,
    UpdateScheduleRequest,
)
from jobs_lib.model.job import Status
from jobs_lib.store.listing import MAX_PAGE_SIZE

_ERRORS = {
    "400": "Invalid input: `error.details` names each field and why.",
    "401": "Missing, malformed or expired Firebase ID token.",
    "403": "The token lacks the permission this action needs, or the caller may not act on this "
    "job.",
    "404": "No such job or schedule, or one the caller may not see.",
    "409": "The job's (or schedule's) state does not allow this action.",
    "429": "Too many jobs or schedules created; retry after `Retry-After` seconds.",
    "503": "Firestore or the token keys could not be reached; retry after `Retry-After` seconds.",
}


def _error(code: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _ERRORS[code],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }
    if code in ("429", "503"):
        response["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait.",
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    if code == "401":
        response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    return response


def _ok(description: str, schema: str, code: str = "200") -> dict[str, Any]:
    return {
        code: {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        }
    }


def _operation(
    op_id: str, summary: str, permission: str, ok: dict[str, Any], errors: list[str], **extra: Any
) -> dict[str, Any]:
    return {
        "operationId": op_id,
        "summary": summary,
        "description": f"Needs the `{permission}` permission (custom claim `permissions`).",
        "security": [{"firebaseIdToken": []}],
        "responses": {**ok, **{code: _error(code) for code in errors}},
        **extra,
    }


def _query_parameters() -> list[dict[str, Any]]:
    """ListJobsQuery as query parameters (written out: a query string has no nulls or refs)."""
    described = ListJobsQuery.model_fields
    schemas: dict[str, dict[str, Any]] = {
        "status": {"type": "string", "enum": [s.value for s in Status]},
        "type": {"type": "string", "minLength": 1, "maxLength": 100},
        "pageSize": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": 20},
        "pageToken": {"type": "string", "maxLength": 2000},
        "scope": {"type": "string", "enum": ["mine", "org", "all"], "default": "mine"},
        "orgId": {"type": "string", "minLength": 1, "maxLength": 200},
        "createdBy": {"type": "string", "minLength": 1, "maxLength": 200},
        "createdAfter": {"type": "string", "format": "date-time"},
        "createdBefore": {"type": "string", "format": "date-time"},
    }
    assert set(schemas) == set(described), "ListJobsQuery and its OpenAPI parameters disagree"
    return [
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": schema,
            "description": described[name].description or "",
        }
        for name, schema in schemas.items()
    ]


SCHEDULE_ID = {
    "name": "scheduleId",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
    "description": "The schedule's document id.",
}
SCHEDULE_LIST_PARAMETERS = [
    {
        "name": "pageSize",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": 20},
    },
    {
        "name": "pageToken",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "maxLength": 2000},
        "description": "`nextPageToken` of the previous page; any other value answers 400.",
    },
    {
        "name": "scope",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": ["mine", "org", "all"], "default": "mine"},
    },
]


def _body(name: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
    }


def _schedule_paths() -> dict[str, Any]:
    body = _body
    one = _ok("The schedule.", "ScheduleEnvelope")
    return {
        "/v1/schedules": {
            "post": _operation(
                "createSchedule",
                "Create a schedule for the caller",
                "schedules.create",
                _ok("The schedule was created.", "ScheduleEnvelope", "201"),
                ["400", "401", "403", "429", "503"],
                requestBody=body("CreateScheduleRequest"),
            ),
            "get": _operation(
                "listSchedules",
                "The caller's schedules (or their org's), in id order",
                "schedules.view",
                _ok("A page of schedules.", "ScheduleList"),
                ["400", "401", "403", "503"],
                parameters=SCHEDULE_LIST_PARAMETERS,
            ),
        },
        "/v1/schedules/{scheduleId}": {
            "get": _operation(
                "getSchedule",
                "A schedule, with canEdit",
                "schedules.view",
                one,
                ["401", "403", "404", "503"],
                parameters=[SCHEDULE_ID],
            ),
            "patch": _operation(
                "updateSchedule",
                "Change a schedule (a new cron or timezone recomputes nextRunAt)",
                "schedules.update",
                one,
                ["400", "401", "403", "404", "409", "503"],
                parameters=[SCHEDULE_ID],
                requestBody=body("UpdateScheduleRequest"),
            ),
            "delete": _operation(
                "deleteSchedule",
                "Delete a schedule (the jobs it fired stay)",
                "schedules.delete",
                {"204": {"description": "Deleted."}},
                ["401", "403", "404", "503"],
                parameters=[SCHEDULE_ID],
            ),
        },
        "/v1/schedules/{scheduleId}/enable": {
            "post": _operation(
                "enableSchedule",
                "Turn a schedule on: it next fires at its first slot from now",
                "schedules.update",
                one,
                ["401", "403", "404", "409", "503"],
                parameters=[SCHEDULE_ID],
            ),
        },
        "/v1/schedules/{scheduleId}/disable": {
            "post": _operation(
                "disableSchedule",
                "Turn a schedule off",
                "schedules.update",
                one,
                ["401", "403", "404", "409", "503"],
                parameters=[SCHEDULE_ID],
            ),
        },
        "/v1/schedules/{scheduleId}/fire": {
            "post": _operation(
                "fireSchedule",
                "Run a schedule's job now (its next slot is unchanged)",
                "schedules.update",
                _object("The schedule, and `jobId` of the job it created."),
                ["401", "403", "404", "409", "503"],
                parameters=[SCHEDULE_ID],
            ),
        },
    }


def _object(description: str) -> dict[str, Any]:
    return {
        "200": {
            "description": description,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    }


def _query(
    name: str, schema: dict[str, Any], description: str, required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema,
        "description": description,
    }


def _operator_paths() -> dict[str, Any]:
    """The console's endpoints (jobs_lib.api.operations)."""
    status = {"type": "string", "enum": [s.value for s in Status]}
    text = {"type": "string", "minLength": 1, "maxLength": 200}
    job_type = {
        "name": "type",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
        "description": "A registered job type.",
    }
    return {
        "/v1/me": {
            "get": _operation(
                "me",
                "Who the caller is and what they may do",
                "any",
                _object("The caller's uid, org, roles and permissions."),
                ["401", "503"],
            )
        },
        "/v1/overview": {
            "get": _operation(
                "overview",
                "Per-type queue figures and completions per minute (operators; org admins: their "
                "org)",
                "jobs.view",
                _object("The figures, and the reads they cost."),
                ["400", "401", "403", "503"],
                parameters=[_query("orgId", text, "Operators: one organisation's figures.")],
            )
        },
        "/v1/jobs:count": {
            "get": _operation(
                "countJobs",
                "How many jobs match (a count aggregation)",
                "jobs.view",
                _object("`count`."),
                ["400", "401", "403", "503"],
                parameters=[
                    _query("status", status, "The state to count.", required=True),
                    _query("type", {**text, "maxLength": 100}, "Only this type."),
                    _query("orgId", text, "Only this organisation's."),
                ],
            )
        },
        "/v1/jobs:retryFailed": {
            "post": _operation(
                "retryFailed",
                "Retry every failed job matching a filter (operators)",
                "jobs.retry",
                _object("`retried`, `expected`, and the first 100 `ids`."),
                ["400", "401", "403", "503"],
                requestBody={
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "type": {**text, "maxLength": 100},
                                    "orgId": text,
                                    "expected": {"type": "integer", "minimum": 0},
                                },
                            }
                        }
                    },
                },
            )
        },
        "/v1/queues": {
            "get": _operation(
                "listQueues",
                "Job types, paused or not",
                "jobs.view",
                _object("`queues` and `pausedTypes`."),
                ["401", "403", "503"],
            )
        },
        "/v1/queues/{type}/pause": {
            "post": _operation(
                "pauseQueue",
                "Stop starting jobs of a type (operators)",
                "queues.manage",
                _object("The paused types now."),
                ["401", "403", "404", "503"],
                parameters=[job_type],
            )
        },
        "/v1/queues/{type}/resume": {
            "post": _operation(
                "resumeQueue",
                "Start jobs of a type again (operators)",
                "queues.manage",
                _object("The paused types now."),
                ["401", "403", "404", "503"],
                parameters=[job_type],
            )
        },
    }


JOB_ID = {
    "name": "jobId",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
    "description": "The job's document id.",
}


FLOW_ID = {
    "name": "flowId",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
    "description": "The flow's id.",
}


def openapi_document(
    job_types: Iterable[str] | None = None, max_priority: int | None = None
) -> dict[str, Any]:
    """The API's OpenAPI 3.1 document; `job_types` (the types users may create) become the enum of
    ``type``, and `max_priority` (``JOBS_CLIENT_MAX_PRIORITY``) the most a user's ``priority`` may
    be."""
    _, schemas = models_json_schema(
        [
            (m, "validation")
            for m in (
                CreateJobRequest,
                CreateJobsRequest,
                CreateFlowRequest,
                FlowView,
                JobEnvelope,
                JobEnvelopeList,
                JobList,
                ErrorResponse,
                CreateScheduleRequest,
                UpdateScheduleRequest,
                ScheduleEnvelope,
                ScheduleList,
            )
        ],
        ref_template="#/components/schemas/{model}",
    )
    components = schemas.get("$defs", {})
    create = components["CreateJobRequest"]["properties"]
    for model in ("CreateJobRequest", "CreateScheduleRequest", "FlowJobRequest"):
        props = components[model]["properties"]
        if job_types is not None:
            props["type"] = {**props["type"], "enum": sorted(job_types)}
        props["metadata"]["propertyNames"] = {"minLength": 1, "not": {"pattern": "^__.*__$"}}
    for model in (
        "CreateJobRequest",
        "CreateScheduleRequest",
        "FlowJobRequest",
        "UpdateScheduleRequest",
    ):
        priority = components[model]["properties"].get("priority")
        if max_priority is not None and priority is not None:
            target = next(
                (option for option in priority.get("anyOf", []) if option.get("type") == "integer"),
                priority,
            )
            target["maximum"] = max_priority
            priority["description"] = (
                priority.get("description") or ""
            ) + " Users may give at most JOBS_CLIENT_MAX_PRIORITY; operators up to 10."
    create["metadata"]["description"] += (
        " Rules beyond this schema answer 400 with details naming `metadata` or `metadata.<field>`:"
        " the handler's own (say, a user id without '/') and Firestore's (at most 20 levels deep,"
        " no empty or `__reserved__` keys at any level, integers within 64 bits, at most 64 KiB "
        "of JSON)."
    )
    list_params = _query_parameters()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "jobs_lib REST API",
            "version": "1.0.0",
            "description": "Create, inspect, cancel and retry background jobs. Authenticate with "
            "a Firebase ID token (`Authorization: Bearer ...`).",
        },
        "paths": {
            "/v1/jobs": {
                "post": _operation(
                    "createJob",
                    "Create a job for the caller",
                    "jobs.create",
                    {**_ok("The job was created.", "JobEnvelope", "201")},
                    ["400", "401", "403", "429", "503"],
                    requestBody={
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/CreateJobRequest"}
                            }
                        },
                    },
                ),
                "get": _operation(
                    "listJobs",
                    "The caller's jobs (or their org's), newest first",
                    "jobs.view",
                    _ok("A page of jobs.", "JobList"),
                    ["400", "401", "403", "503"],
                    parameters=list_params,
                ),
            },
            "/v1/jobs:batch": {
                "post": _operation(
                    "createJobs",
                    "Create up to 500 jobs for the caller at once (all checked before any is "
                    "created)",
                    "jobs.create",
                    {**_ok("The jobs were created, in the order asked.", "JobEnvelopeList", "201")},
                    ["400", "401", "403", "429", "503"],
                    requestBody={
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/CreateJobsRequest"}
                            }
                        },
                    },
                ),
            },
            "/v1/jobs/{jobId}": {
                "get": _operation(
                    "getJob",
                    "A job, with canCancel and canRetry",
                    "jobs.view",
                    _ok("The job.", "JobEnvelope"),
                    ["401", "403", "404", "503"],
                    parameters=[JOB_ID],
                ),
            },
            "/v1/jobs/{jobId}/cancel": {
                "post": _operation(
                    "cancelJob",
                    "Cancel a pending job, or ask a running one to stop",
                    "jobs.cancel",
                    _ok("The job after the request.", "JobEnvelope"),
                    ["401", "403", "404", "409", "503"],
                    parameters=[JOB_ID],
                ),
            },
            "/v1/jobs/{jobId}/retry": {
                "post": _operation(
                    "retryJob",
                    "Send a failed or cancelled job back to pending",
                    "jobs.retry",
                    _ok("The job after the request.", "JobEnvelope"),
                    ["401", "403", "404", "409", "503"],
                    parameters=[JOB_ID],
                ),
            },
            "/v1/flows": {
                "post": _operation(
                    "createFlow",
                    "Create up to 500 jobs that wait for one another (dependsOn), in one atomic "
                    "write",
                    "jobs.create",
                    {
                        **_ok(
                            "The flow was created: its jobs, those that wait `blocked`.",
                            "FlowView",
                            "201",
                        )
                    },
                    ["400", "401", "403", "429", "503"],
                    requestBody={
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/CreateFlowRequest"}
                            }
                        },
                    },
                ),
            },
            "/v1/flows/{flowId}": {
                "get": _operation(
                    "getFlow",
                    "A flow's jobs and their states",
                    "jobs.view",
                    _ok("The flow.", "FlowView"),
                    ["401", "403", "404", "503"],
                    parameters=[FLOW_ID],
                ),
            },
            "/v1/flows/{flowId}/cancel": {
                "post": _operation(
                    "cancelFlow",
                    "Cancel what has not finished in a flow (running jobs are asked to stop)",
                    "jobs.cancel",
                    _ok("The flow after the request.", "FlowView"),
                    ["401", "403", "404", "503"],
                    parameters=[FLOW_ID],
                ),
            },
            **_schedule_paths(),
            **_operator_paths(),
        },
        "components": {
            "schemas": components,
            "securitySchemes": {
                "firebaseIdToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "Firebase ID token (JWT)",
                }
            },
        },
    }


__all__ = ["openapi_document"]
