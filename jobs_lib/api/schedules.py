"""The schedule endpoints of the REST API, over `jobs_lib.engine.schedules.ScheduleClient`.

    POST   /v1/schedules                 create a schedule for the caller   schedules.create  201
    GET    /v1/schedules                 the caller's schedules (id order)  schedules.view    200
    GET    /v1/schedules/{id}            a schedule, plus canEdit           schedules.view    200
    PATCH  /v1/schedules/{id}            change cron, timezone, metadata,   schedules.update  200
                                         enabled or priority
    POST   /v1/schedules/{id}/enable     turn it on (next slot from now)    schedules.update  200
    POST   /v1/schedules/{id}/disable    turn it off                        schedules.update  200
    DELETE /v1/schedules/{id}            delete it (its jobs stay)          schedules.delete  204

Schedules have permissions of their own (``schedules.*`` claims) so an app can
let users run jobs without letting them set up recurring ones. Isolation is
the jobs': the creator sees and changes a schedule, an org admin sees their
org's; another user's schedule, and schedules declared in code, answer 404.
Creating schedules is rate limited per user like creating jobs.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import ValidationError
from werkzeug.wrappers import Request, Response

from jobs_lib.api.auth import Caller
from jobs_lib.api.http import (
    Endpoints,
    field_errors,
    json_response,
    listing_scope,
    parse_query,
    read_json_body,
    valid_id,
)
from jobs_lib.api.models import (
    CreateScheduleRequest,
    FieldError,
    ListSchedulesQuery,
    ScheduleEnvelope,
    ScheduleList,
    ScheduleView,
    UpdateScheduleRequest,
)
from jobs_lib.engine.schedules import Schedule, ScheduleClient
from jobs_lib.errors import ApiError, InvalidPageToken, InvalidSchedule, ScheduleNotFound
from jobs_lib.model import cron
from jobs_lib.store import JobStore
from jobs_lib.store.listing import ScheduleListing


def check_timing(cron_expression: str | None, timezone: str | None) -> list[FieldError]:
    """Field errors for an unusable cron expression or timezone (each named on its own)."""
    errors = []
    if timezone is not None:
        try:
            cron.zone(timezone)
        except cron.CronError as exc:
            errors.append(FieldError(field="timezone", reason=str(exc)))
    if cron_expression is not None:
        try:
            cron.check(cron_expression, "UTC")
        except cron.CronError as exc:
            errors.append(FieldError(field="cron", reason=str(exc)))
    return errors


class ScheduleEndpoints:
    """The ``/v1/schedules`` routes of a `JobsApi` (which supplies auth, audit and rate limits)."""

    def __init__(self, api: Endpoints, client: ScheduleClient, store: JobStore) -> None:
        self.api = api
        self.client = client
        self.listing = ScheduleListing(store)

    def routes(self) -> list[tuple[str, str, Callable[..., Response]]]:
        """(path, method, handler) for each endpoint."""
        return [
            ("/v1/schedules", "POST", self.create),
            ("/v1/schedules", "GET", self.list),
            ("/v1/schedules/<schedule_id>", "GET", self.get),
            ("/v1/schedules/<schedule_id>", "PATCH", self.update),
            ("/v1/schedules/<schedule_id>", "DELETE", self.delete),
            ("/v1/schedules/<schedule_id>/enable", "POST", self.enable),
            ("/v1/schedules/<schedule_id>/disable", "POST", self.disable),
            ("/v1/schedules/<schedule_id>/fire", "POST", self.fire),
        ]

    # -- helpers ------------------------------------------------------------------------------

    def _visible(self, caller: Caller, schedule_id: str) -> Schedule:
        """The schedule, if the caller may see it; 404 alike for a missing one and another
        user's."""
        try:
            schedule = self.client.get(schedule_id) if valid_id(schedule_id) else None
        except ScheduleNotFound:
            schedule = None
        if schedule is None or not caller.sees(schedule.created_by, schedule.org_id):
            raise ApiError(404, f"no schedule {schedule_id!r}")
        return schedule

    def _owned(self, caller: Caller, schedule_id: str, permission: str) -> Schedule:
        try:
            schedule = self._visible(caller, schedule_id)
        except ApiError as exc:
            self.api.audit(
                caller,
                permission,
                schedule_id if valid_id(schedule_id) else None,
                None,
                exc.code,
                f"{caller.uid} asked for schedule {schedule_id!r}: none they may see",
            )
            raise
        if not caller.owns(schedule.created_by):
            self.api.audit(
                caller,
                permission,
                schedule.id,
                schedule.type,
                403,
                f"{caller.uid} may not change schedule {schedule.id}, created by another user",
            )
            raise ApiError(403, "only the user who created a schedule may change or delete it")
        return schedule

    def _envelope(self, caller: Caller, schedule: Schedule) -> ScheduleEnvelope:
        return ScheduleEnvelope(
            schedule=ScheduleView.of(schedule),
            canEdit=caller.owns(schedule.created_by) and caller.can("schedules.update"),
        )

    def _check_priority(self, caller: Caller, priority: int | None) -> list[FieldError]:
        most = self.client.store.settings.client_max_priority
        if priority is not None and priority > most and not caller.operator:
            return [
                FieldError(
                    field="priority",
                    reason=f"at most {most}: the highest priority a user may give their own jobs "
                    f"(JOBS_CLIENT_MAX_PRIORITY)",
                )
            ]
        return []

    def _check_metadata(self, job_type: str, metadata: dict[str, object]) -> None:
        spec = self.api.registry.get(job_type)
        if spec is not None and spec.input_model is not None:
            try:
                spec.input_model.model_validate(metadata)
            except ValidationError as exc:
                raise ApiError(
                    400, f"invalid metadata for {job_type}", field_errors(exc, "metadata.")
                ) from None

    # -- endpoints ----------------------------------------------------------------------------

    def create(self, request: Request) -> Response:
        """``POST /v1/schedules``."""
        caller = self.api.caller(request, "schedules.create")
        try:
            body = CreateScheduleRequest.model_validate(read_json_body(request))
        except ValidationError as exc:
            raise ApiError(400, "invalid schedule", field_errors(exc)) from None
        errors = check_timing(body.cron, body.timezone)
        if self.api.registry.is_internal(body.type):
            errors.insert(
                0,
                FieldError(
                    field="type",
                    reason=f"{body.type!r} is an internal job type of the runner: users cannot "
                    f"schedule it",
                ),
            )
        elif self.api.registry.get(body.type) is None:
            errors.insert(
                0,
                FieldError(
                    field="type", reason=f"no handler is registered for job type {body.type!r}"
                ),
            )
        errors += self._check_priority(caller, body.priority)
        if errors:
            raise ApiError(400, "invalid schedule", errors)
        self._check_metadata(body.type, body.metadata)
        most = self.client.store.settings.schedules_per_user
        if self.client.count_of(caller.uid) >= most:
            self.api.audit(
                caller,
                "schedules.create",
                None,
                body.type,
                409,
                f"{caller.uid} refused: already has {most} schedules",
            )
            raise ApiError(
                409,
                f"you have {most} schedules, the most one user may have "
                f"(JOBS_SCHEDULES_PER_USER); delete one first",
            )
        decision = self.api.schedule_limiter.hit(caller.uid)
        if not decision.allowed:
            self.api.audit(
                caller,
                "schedules.create",
                None,
                body.type,
                429,
                f"{caller.uid} refused: over {decision.limit} schedule creates per window",
            )
            raise ApiError(
                429,
                f"too many schedules created: at most {decision.limit} per "
                f"{self.api.schedule_limiter.window:g}s",
                headers={"Retry-After": str(decision.retry_after)},
            )
        try:
            schedule = self.client.create(
                body.type,
                body.cron,
                timezone=body.timezone,
                metadata=body.metadata,
                enabled=body.enabled,
                priority=body.priority,
                created_by=caller.uid,
                org_id=caller.org_id,
            )
        except InvalidSchedule as exc:
            raise ApiError(
                400, "invalid schedule", [FieldError(field="body", reason=str(exc))]
            ) from None
        self.api.audit(
            caller,
            "schedules.create",
            schedule.id,
            schedule.type,
            201,
            f"{caller.uid} created schedule {schedule.id} ({schedule.type}, {schedule.cron!r} "
            f"{schedule.timezone})",
        )
        return json_response(
            self._envelope(caller, schedule), 201, {"Location": f"/v1/schedules/{schedule.id}"}
        )

    def list(self, request: Request) -> Response:
        """``GET /v1/schedules``."""
        caller = self.api.caller(request, "schedules.view")
        query = parse_query(request, ListSchedulesQuery)
        scope = listing_scope(caller, query.scope, "schedules")
        try:
            rows, next_token = self.listing.page(
                scope, page_size=query.pageSize, page_token=query.pageToken
            )
        except InvalidPageToken as exc:
            raise ApiError(
                400, "invalid query parameters", [FieldError(field="pageToken", reason=str(exc))]
            ) from None
        schedules = [ScheduleView.of(schedule) for schedule in rows]
        return json_response(ScheduleList(schedules=schedules, nextPageToken=next_token))

    def get(self, request: Request, schedule_id: str) -> Response:
        """``GET /v1/schedules/{id}``."""
        caller = self.api.caller(request, "schedules.view")
        return json_response(self._envelope(caller, self._visible(caller, schedule_id)))

    def update(self, request: Request, schedule_id: str) -> Response:
        """``PATCH /v1/schedules/{id}``."""
        caller = self.api.caller(request, "schedules.update")
        try:
            body = UpdateScheduleRequest.model_validate(read_json_body(request))
        except ValidationError as exc:
            raise ApiError(400, "invalid schedule", field_errors(exc)) from None
        if not body.model_fields_set:
            raise ApiError(
                400,
                "nothing to change",
                [
                    FieldError(
                        field="body",
                        reason="give at least one of cron, timezone, metadata, enabled, priority",
                    )
                ],
            )
        errors = check_timing(body.cron, body.timezone) + self._check_priority(
            caller, body.priority
        )
        if errors:
            raise ApiError(400, "invalid schedule", errors)
        schedule = self._owned(caller, schedule_id, "schedules.update")
        if body.metadata is not None and schedule.type:
            self._check_metadata(schedule.type, body.metadata)
        return self._change(
            caller,
            schedule,
            lambda: self.client.update(
                schedule.id,
                cron_expression=body.cron,
                timezone=body.timezone,
                metadata=body.metadata,
                enabled=body.enabled,
                priority=body.priority,
            ),
            "updated",
        )

    def enable(self, request: Request, schedule_id: str) -> Response:
        """``POST /v1/schedules/{id}/enable``."""
        caller = self.api.caller(request, "schedules.update")
        schedule = self._owned(caller, schedule_id, "schedules.update")
        return self._change(caller, schedule, lambda: self.client.enable(schedule.id), "enabled")

    def disable(self, request: Request, schedule_id: str) -> Response:
        """``POST /v1/schedules/{id}/disable``."""
        caller = self.api.caller(request, "schedules.update")
        schedule = self._owned(caller, schedule_id, "schedules.update")
        return self._change(caller, schedule, lambda: self.client.disable(schedule.id), "disabled")

    def fire(self, request: Request, schedule_id: str) -> Response:
        """``POST /v1/schedules/{id}/fire``: run its job now (its next slot is unchanged)."""
        caller = self.api.caller(request, "schedules.update")
        schedule = self._owned(caller, schedule_id, "schedules.fire")
        self.api.refuse_over_limit(
            caller, 1, schedule.type
        )  # a fired job is a job created: it counts
        try:
            fired, job_id = self.client.fire_now(schedule.id)
        except InvalidSchedule as exc:
            self.api.audit(caller, "schedules.fire", schedule.id, schedule.type, 409, str(exc))
            raise ApiError(409, str(exc)) from None
        self.api.audit(
            caller,
            "schedules.fire",
            schedule.id,
            schedule.type,
            200,
            f"{caller.uid} fired schedule {schedule.id} now as job {job_id}",
        )
        return json_response(
            {**self._envelope(caller, fired).model_dump(mode="json"), "jobId": job_id}
        )

    def _change(
        self, caller: Caller, schedule: Schedule, change: Callable[[], Schedule], verb: str
    ) -> Response:
        try:
            changed = change()
        except InvalidSchedule as exc:
            # The stored schedule itself is unusable (say, its type is no longer registered).
            self.api.audit(caller, "schedules.update", schedule.id, schedule.type, 409, str(exc))
            raise ApiError(409, f"schedule {schedule.id} cannot be {verb}: {exc}") from None
        except ScheduleNotFound:
            raise ApiError(404, f"no schedule {schedule.id!r}") from None
        self.api.audit(
            caller,
            "schedules.update",
            changed.id,
            changed.type,
            200,
            f"{caller.uid} {verb} schedule {changed.id} (enabled={changed.enabled})",
        )
        return json_response(self._envelope(caller, changed))

    def delete(self, request: Request, schedule_id: str) -> Response:
        """``DELETE /v1/schedules/{id}``."""
        caller = self.api.caller(request, "schedules.delete")
        schedule = self._owned(caller, schedule_id, "schedules.delete")
        try:
            self.client.delete(schedule.id)
        except ScheduleNotFound:
            raise ApiError(404, f"no schedule {schedule_id!r}") from None
        self.api.audit(
            caller,
            "schedules.delete",
            schedule.id,
            schedule.type,
            204,
            f"{caller.uid} deleted schedule {schedule.id}",
        )
        return Response(status=204)


__all__ = ["ScheduleEndpoints", "check_timing"]
