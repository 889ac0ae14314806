"""HTTP plumbing shared by the API's endpoints: errors, JSON bodies, ids."""

from __future__ import annotations

import json
import re
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError
from werkzeug.wrappers import Request, Response

from jobs_lib.api.auth import Caller
from jobs_lib.api.create_limit import RateLimiter
from jobs_lib.api.models import FieldError
from jobs_lib.errors import ApiError
from jobs_lib.registry import HandlerRegistry
from jobs_lib.store.listing import Scope

QueryT = TypeVar("QueryT", bound=BaseModel)

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
RESERVED_ID = re.compile(r"^__.*__$")


class Endpoints(Protocol):
    """What a group of routes needs from the API that mounts it: auth, audit, the registry,
    limits."""

    registry: HandlerRegistry
    schedule_limiter: RateLimiter

    def caller(self, request: Request, permission: str) -> Caller: ...

    def audit(
        self,
        caller: Caller,
        action: str,
        target: str | None,
        job_type: str | None,
        outcome: int,
        message: str,
    ) -> None: ...

    def refuse_over_limit(self, caller: Caller, count: int, job_type: str | None) -> None: ...


def field_errors(error: ValidationError, prefix: str = "") -> list[FieldError]:
    """A pydantic error as (field, reason) pairs; `prefix` places them under a field."""
    return [
        FieldError(
            field=prefix + ".".join(str(p) for p in e["loc"])
            if e["loc"]
            else prefix.rstrip(".") or "body",
            reason=e["msg"],
        )
        for e in error.errors()
    ]


def json_response(
    body: BaseModel | dict[str, Any], code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A JSON answer."""
    data = body.model_dump(mode="json", exclude_none=False) if isinstance(body, BaseModel) else body
    response = Response(
        json.dumps(data, separators=(",", ":")), status=code, mimetype="application/json"
    )
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def error_response(error: ApiError) -> Response:
    """The shared error body: {"error": {code, status, message, details}}."""
    body = {
        "error": {
            "code": error.code,
            "status": STATUS_NAMES.get(error.code, "UNKNOWN"),
            "message": error.message,
            "details": [d.model_dump() for d in error.details],
        }
    }
    headers = dict(error.headers)
    if error.code == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="jobs"')
    return json_response(body, error.code, headers)


def valid_id(job_id: str) -> bool:
    """A possible Firestore document id (others cannot name a job: 404, not a server error)."""
    try:
        size = len(job_id.encode())
    except UnicodeEncodeError:
        return False
    return (
        0 < size <= 1500
        and "/" not in job_id
        and job_id not in (".", "..")
        and not RESERVED_ID.match(job_id)
    )


def read_json_body(request: Request) -> dict[str, Any]:
    """The request body as a JSON object; 400 naming `body` otherwise (NaN, Infinity and
    nesting deeper than Python parses are refused too)."""
    raw = request.get_data(cache=False)
    if not raw.strip():
        raise ApiError(
            400,
            "the request body must be a JSON object",
            [FieldError(field="body", reason="empty body")],
        )

    def refuse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        body = json.loads(raw, parse_constant=refuse_constant)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ApiError(
            400, "the request body is not valid JSON", [FieldError(field="body", reason=reason)]
        ) from None
    if not isinstance(body, dict):
        raise ApiError(
            400,
            "the request body must be a JSON object",
            [FieldError(field="body", reason=f"got {type(body).__name__}")],
        )
    return body


def parse_query(request: Request, model: type[QueryT]) -> QueryT:
    """The request's query parameters as `model`; 400 with the fields at fault otherwise."""
    try:
        return model.model_validate(request.args.to_dict(flat=True))
    except ValidationError as exc:
        raise ApiError(400, "invalid query parameters", field_errors(exc)) from None


def listing_scope(
    caller: Caller, scope: str, noun: str, org_id: str | None = None, created_by: str | None = None
) -> Scope:
    """Whose `noun` a listing shows: the caller's own; with ``scope=org`` their org's (orgAdmin
    only); with ``scope=all`` everyone's (operators only), optionally one org's or one creator's."""
    if scope == "all":
        if not caller.operator:
            raise ApiError(403, f"listing every user's {noun} needs the operator claim")
        if org_id and created_by:
            raise ApiError(
                400,
                "invalid query parameters",
                [FieldError(field="createdBy", reason="filter by orgId or by createdBy, not both")],
            )
        if org_id:
            return Scope("orgId", org_id)
        if created_by:
            return Scope("createdBy", created_by)
        return Scope(None, None)
    if org_id or created_by:
        raise ApiError(
            403, "filtering by orgId or createdBy needs scope=all, which needs the operator claim"
        )
    if scope == "org":
        if not (caller.org_admin and caller.org_id):
            raise ApiError(403, f"listing an organisation's {noun} needs the orgAdmin claim")
        return Scope("orgId", caller.org_id)
    return Scope("createdBy", caller.uid)


__all__ = [
    "STATUS_NAMES",
    "ApiError",
    "error_response",
    "field_errors",
    "json_response",
    "listing_scope",
    "parse_query",
    "read_json_body",
    "valid_id",
]
