"""The REST jobs API (the original app's export API, in our document vocabulary), as a WSGI app and
an HTTP function.

    POST /v1/jobs                    create a job for the caller          jobs.create   201
    GET  /v1/jobs                    the caller's jobs, newest first      jobs.view     200
    GET  /v1/jobs/{id}               a job, plus canCancel and canRetry   jobs.view     200
    POST /v1/jobs/{id}/cancel        cancel (or ask a running job to stop) jobs.cancel  200
    POST /v1/jobs/{id}/retry         send a failed/cancelled job back     jobs.retry    200
    POST /v1/flows                   jobs that wait for one another       jobs.create   201
    GET  /v1/flows/{id}              a flow's jobs and their states       jobs.view     200
    POST /v1/flows/{id}/cancel       cancel what has not finished         jobs.cancel   200
    GET  /v1/openapi.json            this API's OpenAPI document          (no token)
    ... and /v1/schedules (create, list, get, update, enable, disable, delete):
    see jobs_lib.api.schedules

Every other request needs ``Authorization: Bearer <Firebase ID token>``.
Answers: 400 invalid input (each field and why), 401 no valid token, 403 a
permission the token lacks, 404 no such job *or another user's job* (so ids
leak nothing), 409 the job's state does not allow the action, 429 too many
creates (with ``Retry-After``). Errors share one body: ``{"error": {"code",
"status", "message", "details": [{"field", "reason"}]}}``.

Isolation follows firestore.rules: a caller sees the jobs they created, and an
org admin (``orgAdmin`` claim) sees their organisation's too (``scope=org``
when listing); only the creator may cancel or retry. Every create, cancel and
retry, allowed or refused, is logged as one structured line on
``jobs_lib.api.audit``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from jobs_lib.api.auth import Caller, TokenVerifier
from jobs_lib.api.create_limit import RateLimiter
from jobs_lib.api.http import (
    STATUS_NAMES,
    error_response,
    field_errors,
    json_response,
    listing_scope,
    parse_query,
    read_json_body,
    valid_id,
)
from jobs_lib.api.models import (
    CreateFlowRequest,
    CreateJobRequest,
    CreateJobsRequest,
    FieldError,
    FlowView,
    JobEnvelope,
    JobEnvelopeList,
    JobList,
    JobView,
    ListJobsQuery,
)
from jobs_lib.api.openapi import openapi_document
from jobs_lib.api.operations import OperatorEndpoints
from jobs_lib.api.schedules import ScheduleEndpoints
from jobs_lib.client import JobsClient
from jobs_lib.config import Settings
from jobs_lib.console import ConsoleRoutes
from jobs_lib.engine.followups import plan
from jobs_lib.engine.schedules import ScheduleClient
from jobs_lib.errors import (
    ApiError,
    AuthUnavailable,
    ConfigurationError,
    InvalidJobState,
    InvalidPageToken,
    JobNotFound,
    StoreUnavailable,
    Unauthenticated,
)
from jobs_lib.model.job import Job
from jobs_lib.observability.logs import event
from jobs_lib.observability.telemetry import Telemetry
from jobs_lib.registry import HandlerRegistry
from jobs_lib.store import open_store
from jobs_lib.store.listing import JobListing

log = logging.getLogger("jobs_lib.api")
audit_log = logging.getLogger("jobs_lib.api.audit")

#: Audit events of successful actions (refusals are ``api_job_refused`` / ``api_schedule_refused``).
AUDIT_EVENTS = {
    "jobs.create": "api_job_created",
    "jobs.cancel": "api_job_cancelled",
    "jobs.retry": "api_job_retried",
    "schedules.create": "api_schedule_created",
    "schedules.update": "api_schedule_updated",
    "schedules.delete": "api_schedule_deleted",
    "schedules.fire": "api_schedule_fired",
    "queues.manage": "api_queue_changed",
}

#: Defaults for the per-user limit on job creation (``JOBS_API_CREATE_LIMIT`` per
#: ``JOBS_API_CREATE_WINDOW`` seconds).
DEFAULT_CREATE_LIMIT = 60
DEFAULT_CREATE_WINDOW = 60.0


#: The bodies that hold a list of jobs (`JobsApi._checked_jobs`).
JobsBody = TypeVar("JobsBody", CreateJobsRequest, CreateFlowRequest)


class JobsApi:
    """The jobs API over a `JobsClient`; call `handle` with a request, or mount it as a WSGI app."""

    def __init__(
        self,
        client: JobsClient | None = None,
        *,
        settings: Settings | None = None,
        registry: HandlerRegistry | None = None,
        verifier: TokenVerifier | None = None,
        create_limit: int | None = None,
        create_window: float | None = None,
        schedules: ScheduleClient | None = None,
    ) -> None:
        if client is None:
            client = JobsClient(store=open_store(settings))
        self.client = client
        store = self.client.store
        self.registry = registry if registry is not None else self.client.registry
        self.verifier = verifier or TokenVerifier(store.settings.project)
        self.listing = JobListing(store)
        limit = create_limit if create_limit is not None else store.settings.api_create_limit
        window = create_window if create_window is not None else store.settings.api_create_window
        self.create_limiter = RateLimiter(store, limit=limit, window=window, action="create")
        #: Schedules fire jobs for ever, so creating them is limited the same way, on a budget of
        #: their own.
        self.schedule_limiter = RateLimiter(
            store, limit=limit, window=window, action="create_schedule"
        )
        self._document: dict[str, Any] | None = None
        self.schedules = ScheduleEndpoints(
            self,
            schedules
            or ScheduleClient(store=store.schedules, registry=self.registry, jobs=self.client),
            store,
        )
        self.operations = OperatorEndpoints(self, self.client)
        self.console = ConsoleRoutes(store.settings)
        routes: list[tuple[str, str, Callable[..., Response]]] = [
            ("/v1/openapi.json", "GET", self._openapi),
            ("/v1/jobs", "POST", self.create_job),
            ("/v1/jobs:batch", "POST", self.create_jobs),
            ("/v1/jobs", "GET", self.list_jobs),
            ("/v1/jobs/<job_id>", "GET", self.get_job),
            ("/v1/jobs/<job_id>/cancel", "POST", self.cancel_job),
            ("/v1/jobs/<job_id>/retry", "POST", self.retry_job),
            ("/v1/flows", "POST", self.create_flow),
            ("/v1/flows/<flow_id>", "GET", self.get_flow),
            ("/v1/flows/<flow_id>/cancel", "POST", self.cancel_flow),
            *self.schedules.routes(),
            *self.operations.routes(),
            *self.console.routes(),
        ]
        self._handlers = {f"{method} {path}": fn for path, method, fn in routes}
        self.url_map = Map(
            [
                Rule(path, endpoint=f"{method} {path}", methods=[method])
                for path, method, _fn in routes
            ],
            strict_slashes=False,
        )

    # -- plumbing -----------------------------------------------------------------------------

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """WSGI entry point."""
        return self.handle(Request(environ))(environ, start_response)

    def handle(self, request: Request) -> Response:
        """Answer one request; never raises."""
        try:
            endpoint, args = self.url_map.bind_to_environ(request.environ).match()
            return self._handlers[str(endpoint)](request, **args)
        except ApiError as exc:
            return error_response(exc)
        except MethodNotAllowed as exc:
            allowed = ", ".join(sorted(exc.valid_methods or []))
            return error_response(
                ApiError(
                    405,
                    f"{request.method} is not allowed on {request.path}",
                    headers={"Allow": allowed},
                )
            )
        except NotFound:
            return error_response(ApiError(404, f"no such endpoint: {request.path}"))
        except HTTPException as exc:
            code = exc.code or 400
            return error_response(
                ApiError(code if code in STATUS_NAMES else 400, exc.description or "bad request")
            )
        except StoreUnavailable as exc:
            log.warning("firestore unavailable: %s", exc)
            return error_response(
                ApiError(
                    503,
                    "the job store is unavailable; try again shortly",
                    headers={"Retry-After": "5"},
                )
            )
        except Exception:
            log.exception("unexpected error answering %s %s", request.method, request.path)
            return error_response(ApiError(500, "internal error"))

    def caller(self, request: Request, permission: str) -> Caller:
        """The verified caller, if their token grants `permission`; 401, 403 or 503 otherwise."""
        try:
            caller = self.verifier.verify(request.headers.get("Authorization"))
        except Unauthenticated as exc:
            raise ApiError(401, str(exc)) from None
        except AuthUnavailable as exc:
            raise ApiError(503, str(exc), headers={"Retry-After": "5"}) from None
        if permission and not caller.can(permission):
            raise ApiError(403, f"this action needs the '{permission}' permission")
        return caller

    def _visible_job(self, caller: Caller, job_id: str) -> Job:
        """The job, if the caller may see it; 404 alike for a missing job and another user's."""
        job = self.client.store.get(job_id) if valid_id(job_id) else None
        if job is None or not caller.sees(job.created_by, job.org_id):
            raise ApiError(404, f"no job {job_id!r}")
        return job

    def _envelope(self, caller: Caller, job: Job) -> JobEnvelope:
        owner = caller.owns(job.created_by)
        return JobEnvelope(
            job=JobView.of(job),
            canCancel=owner
            and caller.can("jobs.cancel")
            and job.can_cancel
            and not job.cancel_requested,
            canRetry=owner and caller.can("jobs.retry") and job.can_retry,
        )

    def audit(
        self,
        caller: Caller,
        action: str,
        target: str | None,
        job_type: str | None,
        outcome: int,
        message: str,
    ) -> None:
        """One structured line on ``jobs_lib.api.audit``: who (user, their org), what (action,
        outcome status), which job or schedule. Refusals are WARNING lines with event
        ``api_*_refused``."""
        kind = action.split(".")[0][:-1]  # "jobs.cancel" -> "job", "schedules.update" -> "schedule"
        name = (
            AUDIT_EVENTS.get(action, f"api_{kind}_action")
            if outcome < 300
            else f"api_{kind}_refused"
        )
        ids = {"jobId": target} if kind == "job" else {"schedule": target}
        event(
            audit_log,
            name,
            message,
            level=logging.INFO if outcome < 300 else logging.WARNING,
            user=caller.uid,
            action=action,
            type=job_type,
            status=outcome,
            detail={"orgId": caller.org_id},
            **ids,
        )

    # -- endpoints ----------------------------------------------------------------------------

    def _openapi(self, request: Request) -> Response:
        if self._document is None:
            self._document = openapi_document(
                self.registry.user_types(), self.client.store.settings.client_max_priority
            )
        return json_response(self._document)

    def create_job(self, request: Request) -> Response:
        """``POST /v1/jobs``."""
        caller = self.caller(request, "jobs.create")
        body = read_json_body(request)
        try:
            spec_in = CreateJobRequest.model_validate(body)
        except ValidationError as exc:
            raise ApiError(400, "invalid job", field_errors(exc)) from None
        problems = self._check_job(spec_in, caller)
        if problems:
            raise ApiError(
                400,
                "invalid job"
                if problems[0].field == "type"
                else f"invalid metadata for {spec_in.type}",
                problems,
            )
        self.refuse_over_limit(caller, 1, spec_in.type)
        # A caller that sends a W3C traceparent header gets the job's run in its trace.
        token = otel_context.attach(Telemetry.context_from_headers(dict(request.headers)))
        try:
            job = self._enqueue(spec_in, caller)
        finally:
            otel_context.detach(token)
        self.audit(
            caller,
            "jobs.create",
            job.id,
            job.type,
            201,
            f"{caller.uid} created job {job.id} ({job.type})",
        )
        return json_response(self._envelope(caller, job), 201, {"Location": f"/v1/jobs/{job.id}"})

    def _check_job(
        self, spec_in: CreateJobRequest, caller: Caller, prefix: str = ""
    ) -> list[FieldError]:
        """What is wrong with a job beyond its schema: an internal or unregistered type, a priority
        above what users may give themselves, metadata its handler refuses."""
        most = self.client.store.settings.client_max_priority
        if spec_in.priority > most and not caller.operator:
            return [
                FieldError(
                    field=f"{prefix}priority",
                    reason=f"at most {most}: the highest priority a user may give their own job "
                    f"(JOBS_CLIENT_MAX_PRIORITY)",
                )
            ]
        spec = self.registry.get(spec_in.type)
        if self.registry.is_internal(spec_in.type):
            return [
                FieldError(
                    field=f"{prefix}type",
                    reason=f"{spec_in.type!r} is an internal job type of the runner (its "
                    f"deliveries and housekeeping): users cannot create it",
                )
            ]
        if spec is None:
            return [
                FieldError(
                    field=f"{prefix}type",
                    reason=f"no handler is registered for job type {spec_in.type!r}",
                )
            ]
        if spec.input_model is not None:
            try:
                spec.input_model.model_validate(spec_in.metadata)
            except ValidationError as exc:
                return field_errors(exc, f"{prefix}metadata.")
        return []

    def create_jobs(self, request: Request) -> Response:
        """``POST /v1/jobs:batch``: every job checked first (nothing is created when one is wrong),
        then all created for the caller, 500 to a Firestore RPC; each counts against the create
        limit."""
        caller = self.caller(request, "jobs.create")
        batch = self._checked_jobs(request, caller, CreateJobsRequest, "invalid jobs")
        self.refuse_over_limit(caller, len(batch.jobs), None)
        token = otel_context.attach(Telemetry.context_from_headers(dict(request.headers)))
        try:
            jobs = self.client.enqueue_many(
                [self._enqueue_arguments(j, caller) for j in batch.jobs]
            )
        finally:
            otel_context.detach(token)
        for job in jobs:  # one line per job, as POST /v1/jobs writes: an auditor searches by job id
            self.audit(
                caller,
                "jobs.create",
                job.id,
                job.type,
                201,
                f"{caller.uid} created job {job.id} ({job.type}) in a batch of {len(jobs)}",
            )
        return json_response(
            JobEnvelopeList(jobs=[self._envelope(caller, job) for job in jobs]), 201
        )

    def _checked_jobs(
        self, request: Request, caller: Caller, model: type[JobsBody], invalid: str
    ) -> JobsBody:
        """The body as `model` (a list of jobs under ``jobs``), each job checked as POST /v1/jobs
        checks one; 400 naming ``jobs.N.field`` for the first problems, before anything is
        written."""
        try:
            body = model.model_validate(read_json_body(request))
        except ValidationError as exc:
            raise ApiError(400, invalid, field_errors(exc)) from None
        errors = [
            error
            for n, spec_in in enumerate(body.jobs)
            for error in self._check_job(spec_in, caller, f"jobs.{n}.")
        ]
        if errors:
            raise ApiError(400, invalid, errors)
        return body

    def refuse_over_limit(self, caller: Caller, count: int, job_type: str | None) -> None:
        """Count `count` creates against the caller's limit; 429 (audited) when over it."""
        decision = self.create_limiter.hit(caller.uid, count)
        if not decision.allowed:
            what = f"a batch of {count}" if count > 1 else "a job"
            self.audit(
                caller,
                "jobs.create",
                None,
                job_type,
                429,
                f"{caller.uid} refused {what}: over {decision.limit} creates per window",
            )
            raise ApiError(
                429,
                f"too many jobs created: at most {decision.limit} per "
                f"{self.create_limiter.window:g}s",
                headers={"Retry-After": str(decision.retry_after)},
            )

    def create_flow(self, request: Request) -> Response:
        """``POST /v1/flows``: checked whole (names, references, cycles, each job as for POST
        /v1/jobs), then created in one atomic write; each job counts against the create limit."""
        caller = self.caller(request, "jobs.create")
        flow_in = self._checked_jobs(request, caller, CreateFlowRequest, "invalid flow")
        items = [
            {"name": j.name, "depends_on": j.dependsOn, **self._enqueue_arguments(j, caller)}
            for j in flow_in.jobs
        ]
        try:
            plan(items, atomic=True)
        except ConfigurationError as exc:
            raise ApiError(
                400, "invalid flow", [FieldError(field="jobs", reason=str(exc))]
            ) from None
        self.refuse_over_limit(caller, len(items), None)
        flow = self.client.flow(items, on_parent_failure=flow_in.onParentFailure)
        jobs = self.client.flow_jobs(flow.id)
        for job in jobs:
            self.audit(
                caller,
                "jobs.create",
                job.id,
                job.type,
                201,
                f"{caller.uid} created job {job.id} ({job.type}) in flow {flow.id}",
            )
        return json_response(
            self._flow_view(caller, flow.id, jobs), 201, {"Location": f"/v1/flows/{flow.id}"}
        )

    def _flow_view(self, caller: Caller, flow_id: str, jobs: list[Job]) -> FlowView:
        return FlowView(flowId=flow_id, jobs=[self._envelope(caller, job) for job in jobs])

    def _visible_flow(self, caller: Caller, flow_id: str) -> list[Job]:
        """The flow's jobs, if the caller may see them; 404 alike for no flow and another user's."""
        jobs = self.client.flow_jobs(flow_id, limit=5_000) if valid_id(flow_id) else []
        if not jobs or not all(caller.sees(job.created_by, job.org_id) for job in jobs):
            raise ApiError(404, f"no flow {flow_id!r}")
        return jobs

    def get_flow(self, request: Request, flow_id: str) -> Response:
        """``GET /v1/flows/{id}``."""
        caller = self.caller(request, "jobs.view")
        return json_response(self._flow_view(caller, flow_id, self._visible_flow(caller, flow_id)))

    def cancel_flow(self, request: Request, flow_id: str) -> Response:
        """``POST /v1/flows/{id}/cancel``: only the user who created the flow."""
        caller = self.caller(request, "jobs.cancel")
        jobs = self._visible_flow(caller, flow_id)
        if not all(caller.owns(job.created_by) for job in jobs):
            self.audit(
                caller,
                "jobs.cancel",
                None,
                None,
                403,
                f"{caller.uid} may not cancel flow {flow_id}, created by another user",
            )
            raise ApiError(403, "only the user who created a flow may cancel it")
        touched = self.client.cancel_flow(flow_id)
        for job_id in touched:
            self.audit(
                caller,
                "jobs.cancel",
                job_id,
                None,
                200,
                f"{caller.uid} cancelled job {job_id} with flow {flow_id}",
            )
        return json_response(self._flow_view(caller, flow_id, self.client.flow_jobs(flow_id)))

    def _enqueue(self, spec_in: CreateJobRequest, caller: Caller) -> Job:
        return self.client.enqueue(**self._enqueue_arguments(spec_in, caller))

    def _enqueue_arguments(self, spec_in: CreateJobRequest, caller: Caller) -> dict[str, Any]:
        """`JobsClient.enqueue`'s arguments for a job the API creates for `caller`. A time in the
        past means now: a job dated years back would go before every other user's (docs:
        discussions/security.md)."""
        when = spec_in.scheduledFor
        if when is not None and when < self.client.store.now():
            when = None
        return {
            "type": spec_in.type,
            "metadata": spec_in.metadata,
            "scheduled_for": when,
            "priority": spec_in.priority,
            "max_attempts": spec_in.maxAttempts,
            "org_id": caller.org_id,
            "created_by": caller.uid,
        }

    def list_jobs(self, request: Request) -> Response:
        """``GET /v1/jobs``."""
        caller = self.caller(request, "jobs.view")
        query = parse_query(request, ListJobsQuery)
        scope = listing_scope(caller, query.scope, "jobs", query.orgId, query.createdBy)
        try:
            page = self.listing.page(
                scope,
                status=query.status.value if query.status else None,
                job_type=query.type,
                page_size=query.pageSize,
                page_token=query.pageToken,
                created_after=query.createdAfter,
                created_before=query.createdBefore,
            )
        except InvalidPageToken as exc:
            raise ApiError(
                400, "invalid query parameters", [FieldError(field="pageToken", reason=str(exc))]
            ) from None
        return json_response(
            JobList(jobs=[JobView.of(j) for j in page.jobs], nextPageToken=page.next_token)
        )

    def get_job(self, request: Request, job_id: str) -> Response:
        """``GET /v1/jobs/{id}``."""
        caller = self.caller(request, "jobs.view")
        return json_response(self._envelope(caller, self._visible_job(caller, job_id)))

    def cancel_job(self, request: Request, job_id: str) -> Response:
        """``POST /v1/jobs/{id}/cancel``."""
        return self._act(request, job_id, "jobs.cancel", self.client.cancel, "cancelled")

    def retry_job(self, request: Request, job_id: str) -> Response:
        """``POST /v1/jobs/{id}/retry``."""
        return self._act(request, job_id, "jobs.retry", self.client.retry, "retried")

    def _act(
        self,
        request: Request,
        job_id: str,
        permission: str,
        action: Callable[[str], Job],
        verb: str,
    ) -> Response:
        caller = self.caller(request, permission)
        try:
            job = self._visible_job(caller, job_id)
        except ApiError as exc:
            self.audit(
                caller,
                permission,
                job_id if valid_id(job_id) else None,
                None,
                exc.code,
                f"{caller.uid} asked for job {job_id!r}: none they may see",
            )
            raise
        if not caller.owns(job.created_by):
            self.audit(
                caller,
                permission,
                job.id,
                job.type,
                403,
                f"{caller.uid} may not act on job {job.id}, created by another user",
            )
            raise ApiError(403, "only the user who created a job may cancel or retry it")
        if self.registry.is_internal(job.type):
            self.audit(
                caller,
                permission,
                job.id,
                job.type,
                403,
                f"{caller.uid} may not act on job {job.id}: {job.type} is internal",
            )
            raise ApiError(
                403,
                f"jobs of the internal type {job.type!r} belong to the runner: users cannot "
                f"cancel or retry them",
            )
        try:
            done = action(job.id)
        except InvalidJobState as exc:
            self.audit(caller, permission, job.id, job.type, 409, str(exc))
            raise ApiError(409, str(exc)) from None
        except JobNotFound:  # deleted meanwhile
            raise ApiError(404, f"no job {job_id!r}") from None
        self.audit(
            caller,
            permission,
            done.id,
            done.type,
            200,
            f"{caller.uid} {verb} job {done.id} (now {done.status.value if done.status else '?'})",
        )
        return json_response(self._envelope(caller, done))


__all__ = ["DEFAULT_CREATE_LIMIT", "DEFAULT_CREATE_WINDOW", "ApiError", "JobsApi"]
