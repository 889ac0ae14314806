"""The REST jobs API against the emulator, with ID tokens verified by firebase-admin.

firebase-admin runs in emulator mode (``FIREBASE_AUTH_EMULATOR_HOST``): it takes
the unsigned tokens the Auth emulator issues and checks audience, issuer and
subject as in production; the API checks the token times itself. Requests go
through a WSGI test client, and one test drives the deployed ``api`` function
through functions-framework.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from werkzeug.test import Client, TestResponse

from jobs_lib import JobsClient, Status
from jobs_lib.api import JobsApi
from jobs_lib.registry import HandlerRegistry
from jobs_lib.store import JobStore
from jobs_lib.store.base import shard_of

from .conftest import PROJECT, serve_main
from .test_rules import id_token

JOBS = ["jobs.create", "jobs.view", "jobs.cancel", "jobs.retry"]
SCHEDULES = ["schedules.create", "schedules.view", "schedules.update", "schedules.delete"]
ALL = JOBS + SCHEDULES


@pytest.fixture(scope="module", autouse=True)
def _auth_emulator_mode() -> Iterator[None]:
    """firebase-admin verifies unsigned emulator tokens while this variable is set."""
    previous = os.environ.get("FIREBASE_AUTH_EMULATOR_HOST")
    os.environ["FIREBASE_AUTH_EMULATOR_HOST"] = "127.0.0.1:9099"
    yield
    if previous is None:
        os.environ.pop("FIREBASE_AUTH_EMULATOR_HOST", None)
    else:
        os.environ["FIREBASE_AUTH_EMULATOR_HOST"] = previous


def token(
    uid: str = "alice",
    *,
    org: str | None = "acme",
    admin: bool = False,
    permissions: list[str] | None = None,
    **overrides: Any,
) -> str:
    claims: dict[str, Any] = {"permissions": ALL if permissions is None else permissions}
    if org is not None:
        claims["orgId"] = org
    if admin:
        claims["orgAdmin"] = True
    return id_token(uid, **{**claims, **overrides})


def auth(uid: str = "alice", **kwargs: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(uid, **kwargs)}"}


@pytest.fixture
def api(store: JobStore, registry: HandlerRegistry) -> JobsApi:
    # Users may give their jobs priorities up to 5 here (JOBS_CLIENT_MAX_PRIORITY; the default is
    # 0).
    return JobsApi(
        JobsClient(store=JobStore(store.settings.with_(client_max_priority=5)), registry=registry),
        create_limit=5,
        create_window=60,
    )


@pytest.fixture
def http(api: JobsApi) -> Client:
    return Client(api)


def error_of(response: TestResponse) -> dict[str, Any]:
    body = response.get_json()
    assert set(body) == {"error"} and body["error"]["code"] == response.status_code
    return body["error"]  # type: ignore[no-any-return]


def create(http: Client, body: dict[str, Any] | None = None, **auth_kwargs: Any) -> TestResponse:
    return http.post(
        "/v1/jobs",
        json=body or {"type": "process_notifications", "metadata": {"targetUsers": ["u1"]}},
        headers=auth(**auth_kwargs),
    )


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        {
            k: getattr(r, k, None)
            for k in ("event", "user", "action", "jobId", "type", "status", "detail")
        }
        for r in caplog.records
        if r.name == "jobs_lib.api.audit"
    ]


# -- the OpenAPI document -------------------------------------------------------------------------


def test_the_openapi_document_is_served_without_a_token(http: Client) -> None:
    response = http.get("/v1/openapi.json")
    assert response.status_code == 200
    doc = response.get_json()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {
        "/v1/jobs",
        "/v1/jobs:batch",
        "/v1/jobs/{jobId}",
        "/v1/jobs/{jobId}/cancel",
        "/v1/jobs/{jobId}/retry",
        "/v1/schedules",
        "/v1/schedules/{scheduleId}",
        "/v1/schedules/{scheduleId}/enable",
        "/v1/schedules/{scheduleId}/disable",
        "/v1/schedules/{scheduleId}/fire",
        "/v1/me",
        "/v1/overview",
        "/v1/jobs:count",
        "/v1/jobs:retryFailed",
        "/v1/queues",
        "/v1/queues/{type}/pause",
        "/v1/queues/{type}/resume",
        "/v1/flows",
        "/v1/flows/{flowId}",
        "/v1/flows/{flowId}/cancel",
    }
    assert (
        "process_notifications"
        in doc["components"]["schemas"]["CreateJobRequest"]["properties"]["type"]["enum"]
    )
    assert doc["paths"]["/v1/jobs"]["post"]["responses"]["429"]["headers"]["Retry-After"]
    assert {"CreateJobRequest", "JobEnvelope", "JobList", "ErrorResponse"} <= set(
        doc["components"]["schemas"]
    )


# -- 401 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("missing", None),
        ("not-bearer", "Basic YWxpY2U6cGFzcw=="),
        ("empty-bearer", "Bearer "),
        ("garbage", "Bearer not-a-jwt"),
        (
            "other-project",
            f"Bearer {token(aud='demo-other', iss='https://securetoken.google.com/demo-other')}",
        ),
        ("wrong-issuer", f"Bearer {token(iss='https://evil.example.com/' + PROJECT)}"),
        (
            "custom-token-audience",
            f"Bearer "
            f"{token(aud='https://identitytoolkit.googleapis.com/google.identity.identitytoolkit.v1.IdentityToolkit')}",
        ),
        ("empty-subject", f"Bearer {id_token('', permissions=ALL)}"),
        ("expired", f"Bearer {id_token('alice', expires_in=-3600, permissions=ALL)}"),
        ("issued-in-the-future", f"Bearer {token(iat=int(datetime.now(UTC).timestamp()) + 3600)}"),
    ],
)
def test_a_missing_or_bad_token_gets_401(http: Client, name: str, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    for response in (
        http.get("/v1/jobs", headers=headers),
        http.post("/v1/jobs", json={"type": "process_notifications"}, headers=headers),
        http.get("/v1/jobs/x", headers=headers),
    ):
        assert response.status_code == 401, name
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert error_of(response)["status"] == "UNAUTHENTICATED"


def test_the_token_check_is_firebase_admins(http: Client) -> None:
    """The refusal carries firebase-admin's own reason: the real verification path ran."""
    bad = token(aud="demo-other", iss="https://securetoken.google.com/demo-other")
    message = error_of(http.get("/v1/jobs", headers={"Authorization": f"Bearer {bad}"}))["message"]
    assert 'incorrect "aud" (audience) claim' in message and PROJECT in message


# -- 403: permissions ------------------------------------------------------------------------------


def test_each_endpoint_needs_its_permission(http: Client, client: JobsClient) -> None:
    job = client.enqueue("process_notifications", {}, created_by="alice", org_id="acme")
    calls = {
        "jobs.create": lambda h: http.post(
            "/v1/jobs", json={"type": "process_notifications"}, headers=h
        ),
        "jobs.view": lambda h: http.get(f"/v1/jobs/{job.id}", headers=h),
        "jobs.cancel": lambda h: http.post(f"/v1/jobs/{job.id}/cancel", headers=h),
        "jobs.retry": lambda h: http.post(f"/v1/jobs/{job.id}/retry", headers=h),
    }
    for needed, call in calls.items():
        without = auth(permissions=[p for p in ALL if p != needed])
        response = call(without)
        assert response.status_code == 403, needed
        assert needed in error_of(response)["message"]
    assert http.get("/v1/jobs", headers=auth(permissions=["jobs.create"])).status_code == 403
    assert (
        http.get("/v1/jobs", headers=auth(permissions="jobs.view")).status_code == 403
    )  # a malformed claim grants nothing
    assert client.get(job.id).status is Status.PENDING


# -- POST /v1/jobs --------------------------------------------------------------------------------


def test_create_makes_a_pending_job_owned_by_the_caller(
    http: Client, store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    when = datetime.now(UTC) + timedelta(hours=1)
    response = create(
        http,
        {
            "type": "process_notifications",
            "metadata": {"targetUsers": ["u1", "u2"], "notificationType": "digest"},
            "scheduledFor": when.isoformat(),
            "priority": 3,
            "maxAttempts": 2,
        },
    )
    assert response.status_code == 201
    body = response.get_json()
    job_id = body["job"]["id"]
    assert response.headers["Location"] == f"/v1/jobs/{job_id}"
    assert (
        body["job"]["status"] == "pending"
        and body["job"]["createdBy"] == "alice"
        and body["job"]["orgId"] == "acme"
    )
    assert (body["canCancel"], body["canRetry"]) == (True, False)
    raw = store.ref(job_id).get().to_dict()
    assert (
        raw["createdBy"] == "alice"
        and raw["orgId"] == "acme"
        and raw["type"] == "process_notifications"
    )
    assert raw["metadata"] == {"targetUsers": ["u1", "u2"], "notificationType": "digest"}
    assert (raw["priority"], raw["maxAttempts"]) == (3, 2) and raw["scheduledFor"] == when
    assert audit_lines(caplog) == [
        {
            "event": "api_job_created",
            "user": "alice",
            "action": "jobs.create",
            "jobId": job_id,
            "type": "process_notifications",
            "status": 201,
            "detail": {"orgId": "acme"},
        }
    ]


def test_a_batch_creates_every_job_for_the_caller_or_none(
    http: Client, store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    jobs = [
        {"type": "process_notifications", "metadata": {"targetUsers": [f"u{n}"]}, "priority": n}
        for n in range(3)
    ]
    response = http.post("/v1/jobs:batch", json={"jobs": jobs}, headers=auth())
    assert response.status_code == 201, response.get_json()
    created = response.get_json()["jobs"]
    assert [j["job"]["metadata"]["targetUsers"] for j in created] == [["u0"], ["u1"], ["u2"]]
    assert all(
        j["job"]["createdBy"] == "alice"
        and j["job"]["orgId"] == "acme"
        and j["job"]["status"] == "pending"
        and j["canCancel"]
        for j in created
    )
    assert all(j["job"]["createdAt"] for j in created)
    raw = {doc.id: doc.to_dict() for doc in store.collection.stream()}
    assert set(raw) == {j["job"]["id"] for j in created} and {
        d["priority"] for d in raw.values()
    } == {0, 1, 2}
    assert audit_lines(caplog) == [
        {
            "event": "api_job_created",
            "user": "alice",
            "action": "jobs.create",
            "jobId": j["job"]["id"],
            "type": "process_notifications",
            "status": 201,
            "detail": {"orgId": "acme"},
        }
        for j in created
    ]
    # One bad job refuses the whole batch, naming it; nothing more is written.
    bad = http.post(
        "/v1/jobs:batch",
        json={"jobs": [jobs[0], jobs[1], {"type": "process_notifications", "colour": "red"}]},
        headers=auth(),
    )
    assert bad.status_code == 400 and error_of(bad)["details"] == [
        {"field": "jobs.2.colour", "reason": "Extra inputs are not permitted"}
    ]
    unknown = http.post(
        "/v1/jobs:batch", json={"jobs": [jobs[0], {"type": "no_such_type"}]}, headers=auth()
    )
    assert unknown.status_code == 400 and error_of(unknown)["details"] == [
        {"field": "jobs.1.type", "reason": "no handler is registered for job type 'no_such_type'"}
    ]
    assert http.post("/v1/jobs:batch", json={"jobs": []}, headers=auth()).status_code == 400
    too_many = http.post("/v1/jobs:batch", json={"jobs": [jobs[0]] * 501}, headers=auth())
    assert too_many.status_code == 400 and error_of(too_many)["details"][0]["field"] == "jobs"
    assert len(list(store.collection.stream())) == 3
    # Each job of a batch counts against the create limit (5 per window here: 3 used).
    over = http.post("/v1/jobs:batch", json={"jobs": jobs}, headers=auth())
    assert over.status_code == 429 and "Retry-After" in over.headers
    assert len(list(store.collection.stream())) == 3


def test_a_flow_is_created_read_and_cancelled_by_its_owner_only(
    http: Client, store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    jobs = [
        {"name": "first", "type": "process_notifications", "metadata": {"targetUsers": ["u1"]}},
        {
            "name": "second",
            "type": "process_notifications",
            "metadata": {"targetUsers": ["u2"]},
            "dependsOn": ["first"],
        },
    ]
    response = http.post(
        "/v1/flows", json={"jobs": jobs, "onParentFailure": "ignore"}, headers=auth()
    )
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    flow_id = body["flowId"]
    assert response.headers["Location"] == f"/v1/flows/{flow_id}"
    by_name = {j["job"]["flowName"]: j for j in body["jobs"]}
    assert (by_name["first"]["job"]["status"], by_name["second"]["job"]["status"]) == (
        "pending",
        "blocked",
    )
    assert (
        by_name["second"]["job"]["dependsOn"] == [by_name["first"]["job"]["id"]]
        and by_name["second"]["canCancel"]
    )
    raw = store.ref(by_name["second"]["job"]["id"]).get().to_dict()
    assert (raw["createdBy"], raw["orgId"], raw["onParentFailure"], raw["flowId"]) == (
        "alice",
        "acme",
        "ignore",
        flow_id,
    )
    assert [line["jobId"] for line in audit_lines(caplog)] == [j["job"]["id"] for j in body["jobs"]]

    cycle = http.post(
        "/v1/flows", json={"jobs": [{**jobs[0], "dependsOn": ["second"]}, jobs[1]]}, headers=auth()
    )
    assert (
        cycle.status_code == 400
        and "the flow has a cycle" in error_of(cycle)["details"][0]["reason"]
    )
    unknown = http.post(
        "/v1/flows", json={"jobs": [jobs[0], {**jobs[1], "type": "no_such_type"}]}, headers=auth()
    )
    assert error_of(unknown)["details"] == [
        {"field": "jobs.1.type", "reason": "no handler is registered for job type 'no_such_type'"}
    ]
    assert http.post("/v1/flows", json={"jobs": [jobs[0]] * 501}, headers=auth()).status_code == 400
    assert len(list(store.collection.stream())) == 2

    assert http.get(f"/v1/flows/{flow_id}", headers=auth()).get_json()["flowId"] == flow_id
    assert (
        http.get(f"/v1/flows/{flow_id}", headers=auth(uid="mallory", org="evil")).status_code == 404
    )
    assert http.get("/v1/flows/nope", headers=auth()).status_code == 404
    assert (
        http.post(
            f"/v1/flows/{flow_id}/cancel", headers=auth(uid="mallory", org="evil")
        ).status_code
        == 404
    )
    cancelled = http.post(f"/v1/flows/{flow_id}/cancel", headers=auth())
    assert cancelled.status_code == 200
    assert {j["job"]["status"] for j in cancelled.get_json()["jobs"]} == {"cancelled"}


def test_a_user_without_an_org_creates_jobs_without_one(http: Client, store: JobStore) -> None:
    response = create(http, uid="solo", org=None)
    assert response.status_code == 201
    assert "orgId" not in store.ref(response.get_json()["job"]["id"]).get().to_dict()


def test_forged_owner_and_runner_fields_in_the_body_are_refused(
    http: Client, store: JobStore
) -> None:
    for field, value in {
        "createdBy": "bob",
        "orgId": "globex",
        "status": "completed",
        "attempts": 0,
        "result": 1,
        "lease": {},
    }.items():
        response = create(http, {"type": "process_notifications", field: value})
        assert response.status_code == 400, field
        assert error_of(response)["details"] == [
            {"field": field, "reason": "Extra inputs are not permitted"}
        ]
    assert list(store.collection.stream()) == []


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"metadata": {}}, "type", "Field required"),
        ({"type": "no_such_type"}, "type", "no handler is registered for job type 'no_such_type'"),
        ({"type": ""}, "type", "String should have at least 1 character"),
        (
            {"type": "process_notifications", "priority": 11},
            "priority",
            "Input should be less than or equal to 10",
        ),
        (
            {"type": "process_notifications", "priority": "high"},
            "priority",
            "Value error, must be a JSON integer",
        ),
        (
            {"type": "process_notifications", "maxAttempts": 0},
            "maxAttempts",
            "Input should be greater than or equal to 1",
        ),
        (
            {"type": "process_notifications", "scheduledFor": "2030-01-01T00:00:00"},
            "scheduledFor",
            "Input should have timezone info",
        ),
        (
            {"type": "process_notifications", "metadata": ["a"]},
            "metadata",
            "Input should be a valid dictionary",
        ),
        (
            {"type": "process_notifications", "metadata": {"blob": "x" * 70_000}},
            "metadata",
            "Value error, metadata is 70012 bytes of JSON; at most 65536 are allowed",
        ),
        (
            {"type": "process_notifications", "metadata": {"n": 2**70}},
            "metadata",
            f"Value error, integer {2**70} does not fit in 64 bits",
        ),
        (
            {"type": "process_notifications", "metadata": {"targetUsers": "u1"}},
            "metadata.targetUsers",
            "Input should be a valid list",
        ),
        (
            {"type": "process_notifications", "metadata": {"targetUsers": ["a/b"]}},
            "metadata.targetUsers",
            "Value error, 'a/b' is not a valid user id (a non-empty id without '/')",
        ),
    ],
)
def test_a_bad_body_gets_400_naming_the_field_and_reason(
    http: Client, store: JobStore, body: dict[str, Any], field: str, reason: str
) -> None:
    response = create(http, body)
    assert response.status_code == 400
    error = error_of(response)
    assert error["status"] == "INVALID_ARGUMENT"
    assert {"field": field, "reason": reason} in error["details"]
    assert list(store.collection.stream()) == []


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty body"),
        (
            b"{not json",
            "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        ),
        (b"[1, 2]", "got list"),
        (b'{"type": NaN}', "NaN is not valid JSON"),
        (b"[" * 100_000, "nested too deeply"),
    ],
)
def test_a_body_that_is_not_a_json_object_gets_400(http: Client, data: bytes, reason: str) -> None:
    response = http.post(
        "/v1/jobs", data=data, headers={**auth(), "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert error_of(response)["details"] == [{"field": "body", "reason": reason}]


# -- 429 ------------------------------------------------------------------------------------------


def away_from_a_window_boundary(
    store: JobStore, window: float = 60.0, margin: float = 10.0
) -> None:
    """Wait, if need be, so that the next `margin` seconds fall in one fixed window of the limiter
    (a test that straddled a boundary would see its count start again)."""
    import time

    left = window - store.now().timestamp() % window
    if left < margin:
        time.sleep(left + 0.05)


def test_job_creation_is_rate_limited_per_user_across_instances(
    http: Client, store: JobStore, registry: HandlerRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    away_from_a_window_boundary(store)
    for _ in range(5):
        assert create(http).status_code == 201
    refused = create(http)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert error_of(refused)["status"] == "RESOURCE_EXHAUSTED"
    # Another instance (its own process memory) reads the same count from Firestore.
    other_instance = Client(
        JobsApi(
            JobsClient(store=JobStore(store.settings), registry=registry),
            create_limit=5,
            create_window=60,
        )
    )
    assert create(other_instance).status_code == 429
    # Other users have their own budget; listing is not limited.
    assert create(http, uid="bob").status_code == 201
    assert http.get("/v1/jobs", headers=auth()).status_code == 200
    assert len(list(store.collection.stream())) == 6
    refusals = [line for line in audit_lines(caplog) if line["event"] == "api_job_refused"]
    assert [(r["user"], r["status"]) for r in refusals] == [("alice", 429), ("alice", 429)]


def test_the_rate_limit_window_passes(store: JobStore, registry: HandlerRegistry) -> None:
    quick = Client(
        JobsApi(JobsClient(store=store, registry=registry), create_limit=1, create_window=1.0)
    )
    import time

    # Start just after a window boundary, so that the two creates below share one 1-second window.
    now = store.now().timestamp()
    time.sleep(math.ceil(now) - now + 0.02)
    assert create(quick).status_code == 201
    refused = create(quick)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    time.sleep(1.1)
    assert create(quick).status_code == 201


# -- GET /v1/jobs/{id}
# ------------------------------------------------------------------------------


def test_get_shows_the_job_with_what_the_caller_may_do(
    http: Client, client: JobsClient, store: JobStore
) -> None:
    job = client.enqueue(
        "process_notifications", {"targetUsers": ["u1"]}, created_by="alice", org_id="acme"
    )
    store.ref(job.id).update(
        {
            "status": "failed",
            "error": "boom",
            "attempts": 5,
            "progress": {"percent": 40, "message": "half", "currentStep": 2, "totalSteps": 5},
        }
    )
    body = http.get(f"/v1/jobs/{job.id}", headers=auth()).get_json()
    assert (
        body["job"]["status"] == "failed"
        and body["job"]["error"] == "boom"
        and body["job"]["attempts"] == 5
    )
    assert body["job"]["progress"] == {
        "percent": 40,
        "message": "half",
        "currentStep": 2,
        "totalSteps": 5,
    }
    assert (body["canCancel"], body["canRetry"]) == (False, True)
    assert body["job"]["createdAt"].endswith("Z")
    # Without the retry permission, the same job cannot be retried by this caller.
    assert (
        http.get(f"/v1/jobs/{job.id}", headers=auth(permissions=["jobs.view"])).get_json()[
            "canRetry"
        ]
        is False
    )


def test_another_users_job_is_404_exactly_like_a_missing_one(
    http: Client, client: JobsClient
) -> None:
    bobs = client.enqueue("process_notifications", {}, created_by="bob", org_id="acme")
    for path in (f"/v1/jobs/{bobs.id}", f"/v1/jobs/{bobs.id}/cancel", f"/v1/jobs/{bobs.id}/retry"):
        method = http.get if path.count("/") == 3 else http.post
        theirs, missing = (
            method(path, headers=auth()),
            method(path.replace(bobs.id, "no-such-job"), headers=auth()),
        )
        assert theirs.status_code == missing.status_code == 404
        assert error_of(theirs)["message"].replace(bobs.id, "X") == error_of(missing)[
            "message"
        ].replace("no-such-job", "X")
    assert client.get(bobs.id).status is Status.PENDING


def test_org_admins_see_their_orgs_jobs_but_act_only_on_their_own(
    http: Client, client: JobsClient
) -> None:
    alices = client.enqueue("process_notifications", {}, created_by="alice", org_id="acme")
    seen = http.get(f"/v1/jobs/{alices.id}", headers=auth("carol", admin=True))
    assert seen.status_code == 200 and seen.get_json()["canCancel"] is False
    assert (
        http.post(f"/v1/jobs/{alices.id}/cancel", headers=auth("carol", admin=True)).status_code
        == 403
    )
    assert (
        http.get(
            f"/v1/jobs/{alices.id}", headers=auth("mallory", org="globex", admin=True)
        ).status_code
        == 404
    )
    assert http.get(f"/v1/jobs/{alices.id}", headers=auth("bob")).status_code == 404
    assert client.get(alices.id).status is Status.PENDING


def test_ids_that_cannot_name_a_document_are_404(http: Client) -> None:
    for job_id in ("__name__", "..", "%2E"):
        assert http.get(f"/v1/jobs/{job_id}", headers=auth()).status_code == 404


# -- GET /v1/jobs ----------------------------------------------------------------------------------


def seed_mixed(store: JobStore) -> list[str]:
    """Alice's jobs with createdAt as timestamps and as ISO strings, interleaved in time; newest
    first.

    Written as jobs_lib stores them, with their shard (the listings read the shard lanes; a job an
    app wrote without one is listed once the runner has given it one: tests/test_shards.py)."""
    base = datetime(2025, 4, 27, 5, 0, tzinfo=UTC)
    ids = []
    for i in range(7):
        moment = base + timedelta(minutes=i)
        created: Any = moment if i % 2 else moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        job_id = f"job{i}"
        store.ref(job_id).set(
            {
                "type": "process_notifications" if i != 3 else "other",
                "status": "completed" if i in (2, 5) else "pending",
                "metadata": {},
                "createdAt": created,
                "createdBy": "alice",
                "orgId": "acme",
                "shard": shard_of(job_id),
            }
        )
        ids.append(job_id)
    store.ref("bobs").set(
        {
            "type": "process_notifications",
            "status": "pending",
            "createdAt": base + timedelta(hours=1),
            "createdBy": "bob",
            "orgId": "acme",
            "shard": shard_of("bobs"),
        }
    )
    store.ref("globex").set(
        {
            "type": "process_notifications",
            "status": "pending",
            "createdAt": base,
            "createdBy": "mallory",
            "orgId": "globex",
            "shard": shard_of("globex"),
        }
    )
    return ids[::-1]


def list_all(http: Client, query: str = "", **auth_kwargs: Any) -> list[list[str]]:
    pages, token_ = [], None
    while True:
        url = f"/v1/jobs?pageSize=2{query}" + (f"&pageToken={token_}" if token_ else "")
        response = http.get(url, headers=auth(**auth_kwargs))
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        pages.append([j["id"] for j in body["jobs"]])
        token_ = body["nextPageToken"]
        if not token_:
            return pages


def test_list_pages_newest_first_across_timestamp_and_string_createdAt(
    http: Client, store: JobStore
) -> None:
    newest_first = seed_mixed(store)
    pages = list_all(http)
    assert [j for page in pages for j in page] == newest_first
    assert all(len(page) == 2 for page in pages[:-1])


def test_list_filters_by_status_and_type(http: Client, store: JobStore) -> None:
    seed_mixed(store)
    assert [j for p in list_all(http, "&status=completed") for j in p] == ["job5", "job2"]
    assert [j for p in list_all(http, "&type=other") for j in p] == ["job3"]
    assert [j for p in list_all(http, "&status=pending&type=process_notifications") for j in p] == [
        "job6",
        "job4",
        "job1",
        "job0",
    ]


def test_list_is_scoped_to_the_caller_or_for_admins_their_org(
    http: Client, store: JobStore
) -> None:
    seed_mixed(store)
    assert [j for p in list_all(http, uid="bob") for j in p] == ["bobs"]
    org = [j for p in list_all(http, "&scope=org", uid="carol", admin=True) for j in p]
    assert org[0] == "bobs" and set(org) == {"bobs", *(f"job{i}" for i in range(7))}
    refused = http.get("/v1/jobs?scope=org", headers=auth("bob"))
    assert refused.status_code == 403 and "orgAdmin" in error_of(refused)["message"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("pageSize=0", "pageSize"),
        ("pageSize=101", "pageSize"),
        ("status=queued", "status"),
        ("scope=everyone", "scope"),
        ("pageToken=%%%", "pageToken"),
        ("pageToken=e30", "pageToken"),
        ("colour=red", "colour"),
    ],
)
def test_list_refuses_bad_parameters(http: Client, query: str, field: str) -> None:
    response = http.get(f"/v1/jobs?{query}", headers=auth())
    assert response.status_code == 400
    assert [d["field"] for d in error_of(response)["details"]] == [field]


def test_a_page_token_only_continues_the_listing_it_came_from(
    http: Client, store: JobStore
) -> None:
    seed_mixed(store)
    token_ = http.get("/v1/jobs?pageSize=2", headers=auth()).get_json()["nextPageToken"]
    for other in (
        f"/v1/jobs?pageSize=2&status=pending&pageToken={token_}",
        f"/v1/jobs?pageSize=2&pageToken={token_}",
    ):
        response = http.get(other, headers=auth("bob") if "status" not in other else auth())
        assert (
            response.status_code == 400
            and "other filters" in error_of(response)["details"][0]["reason"]
        )


# -- cancel and retry ------------------------------------------------------------------------------


def test_cancel_a_pending_job_then_retry_it(
    http: Client, client: JobsClient, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = create(http).get_json()["job"]["id"]
    cancelled = http.post(f"/v1/jobs/{job_id}/cancel", headers=auth())
    assert cancelled.status_code == 200
    body = cancelled.get_json()
    assert body["job"]["status"] == "cancelled" and (body["canCancel"], body["canRetry"]) == (
        False,
        True,
    )
    assert client.get(job_id).status is Status.CANCELLED
    again = http.post(f"/v1/jobs/{job_id}/cancel", headers=auth())
    assert again.status_code == 409 and error_of(again)["status"] == "FAILED_PRECONDITION"
    retried = http.post(f"/v1/jobs/{job_id}/retry", headers=auth())
    assert retried.status_code == 200 and retried.get_json()["job"]["status"] == "pending"
    assert client.get(job_id).status is Status.PENDING
    assert http.post(f"/v1/jobs/{job_id}/retry", headers=auth()).status_code == 409
    events = [(line["event"], line["action"], line["status"]) for line in audit_lines(caplog)]
    assert events == [
        ("api_job_created", "jobs.create", 201),
        ("api_job_cancelled", "jobs.cancel", 200),
        ("api_job_refused", "jobs.cancel", 409),
        ("api_job_retried", "jobs.retry", 200),
        ("api_job_refused", "jobs.retry", 409),
    ]
    assert {line["jobId"] for line in audit_lines(caplog)} == {job_id}


def test_cancel_a_running_job_asks_it_to_stop(
    http: Client, client: JobsClient, store: JobStore
) -> None:
    job = client.enqueue("process_notifications", {}, created_by="alice", org_id="acme")
    [claim] = store.claim([client.get(job.id)], "worker-1", 30)
    assert claim is not None
    response = http.post(f"/v1/jobs/{job.id}/cancel", headers=auth())
    assert response.status_code == 200
    body = response.get_json()
    assert body["job"]["status"] == "in_progress" and body["job"]["cancelRequested"] is True
    assert body["canCancel"] is False
    assert client.get(job.id).cancel_requested


def test_a_completed_job_cannot_be_cancelled_or_retried(
    http: Client, client: JobsClient, store: JobStore
) -> None:
    job = client.enqueue("process_notifications", {}, created_by="alice", org_id="acme")
    store.ref(job.id).update({"status": "completed", "result": 1})
    for action in ("cancel", "retry"):
        response = http.post(f"/v1/jobs/{job.id}/{action}", headers=auth())
        assert response.status_code == 409
        assert "completed" in error_of(response)["message"]
    assert client.get(job.id).status is Status.COMPLETED


def test_refused_attempts_on_other_users_jobs_are_audited(
    http: Client, client: JobsClient, caplog: pytest.LogCaptureFixture
) -> None:
    bobs = client.enqueue("process_notifications", {}, created_by="bob", org_id="acme")
    http.post(f"/v1/jobs/{bobs.id}/cancel", headers=auth())
    http.post(f"/v1/jobs/{bobs.id}/retry", headers=auth("carol", admin=True))
    assert [
        (line["user"], line["action"], line["jobId"], line["status"])
        for line in audit_lines(caplog)
    ] == [
        ("alice", "jobs.cancel", bobs.id, 404),
        ("carol", "jobs.retry", bobs.id, 403),
    ]


def test_audit_lines_are_one_json_object_each(http: Client) -> None:
    import io

    from jobs_lib.observability.logs import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logging.getLogger("jobs_lib.api.audit").addHandler(handler)
    try:
        job_id = create(http).get_json()["job"]["id"]
    finally:
        logging.getLogger("jobs_lib.api.audit").removeHandler(handler)
    [line] = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert (
        entry["event"] == "api_job_created"
        and entry["user"] == "alice"
        and entry["jobId"] == job_id
    )
    assert entry["action"] == "jobs.create" and entry["severity"] == "INFO"


# -- routing ---------------------------------------------------------------------------------------


def test_unknown_paths_and_methods(http: Client) -> None:
    assert http.get("/v1/nothing", headers=auth()).status_code == 404
    response = http.delete("/v1/jobs/x", headers=auth())
    assert response.status_code == 405 and response.headers["Allow"] == "GET, HEAD"


# -- the deployed function
# --------------------------------------------------------------------------


def test_the_api_cloud_function_serves_the_same_api(store: JobStore) -> None:
    """functions/main.py's `api`, as functions-framework serves it (settings from the
    environment)."""
    app = serve_main("api", "http").test_client()
    instance = sys.modules["main"].jobs  # the jobs_lib of this function instance
    try:
        created = app.post(
            "/v1/jobs",
            json={"type": "process_notifications", "metadata": {"targetUsers": ["u1"]}},
            headers=auth(),
        )
        assert created.status_code == 201
        job_id = created.get_json()["job"]["id"]
        assert store.get(job_id).created_by == "alice"  # type: ignore[union-attr]
        listed = app.get("/v1/jobs", headers=auth()).get_json()
        assert [j["id"] for j in listed["jobs"]] == [job_id]
        assert app.get("/v1/jobs").status_code == 401
        assert app.get("/v1/openapi.json").get_json()["info"]["title"] == "jobs_lib REST API"
    finally:
        instance.close()


# -- schedules -------------------------------------------------------------------------------------


def new_schedule(
    http: Client, body: dict[str, Any] | None = None, **auth_kwargs: Any
) -> TestResponse:
    body = body or {
        "type": "process_notifications",
        "cron": "0 9 * * 1",
        "timezone": "Europe/Paris",
        "metadata": {"targetUsers": ["u1"]},
    }
    return http.post("/v1/schedules", json=body, headers=auth(**auth_kwargs))


def test_create_a_schedule_for_the_caller(
    http: Client, store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    response = new_schedule(http)
    assert response.status_code == 201
    body = response.get_json()
    schedule_id = body["schedule"]["id"]
    assert response.headers["Location"] == f"/v1/schedules/{schedule_id}"
    assert (
        body["canEdit"] is True
        and body["schedule"]["enabled"] is True
        and body["schedule"]["problems"] == []
    )
    raw = store.db.collection("scheduledJobs").document(schedule_id).get().to_dict()
    assert (raw["createdBy"], raw["orgId"], raw["cron"], raw["timezone"]) == (
        "alice",
        "acme",
        "0 9 * * 1",
        "Europe/Paris",
    )
    next_run = raw["nextRunAt"].astimezone(UTC)
    assert (
        next_run > datetime.now(UTC) and next_run.weekday() == 0 and next_run.hour in (7, 8)
    )  # 09:00 in Paris
    [line] = audit_lines(caplog)
    assert (line["event"], line["user"], line["action"], line["status"]) == (
        "api_schedule_created",
        "alice",
        "schedules.create",
        201,
    )
    assert [r.schedule for r in caplog.records if r.name == "jobs_lib.api.audit"] == [schedule_id]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"type": "process_notifications", "cron": "61 * * * *"}, "cron", "bad cron expression"),
        (
            {"type": "process_notifications", "cron": "0 9 * * *", "timezone": "Mars/Olympus"},
            "timezone",
            "unknown timezone 'Mars/Olympus'",
        ),
        (
            {"type": "no_such_type", "cron": "0 9 * * *"},
            "type",
            "no handler is registered for job type 'no_such_type'",
        ),
        ({"type": "process_notifications"}, "cron", "Field required"),
        (
            {
                "type": "process_notifications",
                "cron": "0 9 * * *",
                "nextRunAt": "2020-01-01T00:00:00Z",
            },
            "nextRunAt",
            "Extra inputs are not permitted",
        ),
        (
            {"type": "process_notifications", "cron": "0 9 * * *", "createdBy": "bob"},
            "createdBy",
            "Extra inputs are not permitted",
        ),
        (
            {"type": "process_notifications", "cron": "0 9 * * *", "enabled": "yes"},
            "enabled",
            "Input should be a valid boolean",
        ),
        (
            {
                "type": "process_notifications",
                "cron": "0 9 * * *",
                "metadata": {"targetUsers": [""]},
            },
            "metadata.targetUsers",
            "Value error, '' is not a valid user id (a non-empty id without '/')",
        ),
    ],
)
def test_a_bad_schedule_gets_400_naming_the_field(
    http: Client, store: JobStore, body: dict[str, Any], field: str, reason: str
) -> None:
    response = new_schedule(http, body)
    assert response.status_code == 400
    details = error_of(response)["details"]
    assert any(d["field"] == field and reason in d["reason"] for d in details), details
    assert list(store.db.collection("scheduledJobs").stream()) == []


def test_schedule_endpoints_need_the_schedule_permissions(http: Client) -> None:
    schedule_id = new_schedule(http).get_json()["schedule"]["id"]
    calls = {
        "schedules.create": lambda h: http.post(
            "/v1/schedules", json={"type": "process_notifications", "cron": "* * * * *"}, headers=h
        ),
        "schedules.view": lambda h: http.get(f"/v1/schedules/{schedule_id}", headers=h),
        "schedules.update": lambda h: http.post(f"/v1/schedules/{schedule_id}/disable", headers=h),
        "schedules.delete": lambda h: http.delete(f"/v1/schedules/{schedule_id}", headers=h),
    }
    for needed, call in calls.items():
        response = call(auth(permissions=[p for p in ALL if p != needed]))
        assert response.status_code == 403 and needed in error_of(response)["message"], needed
    assert http.get("/v1/schedules", headers=auth(permissions=JOBS)).status_code == 403
    assert http.get("/v1/schedules").status_code == 401


def test_other_users_schedules_are_404_and_org_admins_only_read_them(
    http: Client, store: JobStore
) -> None:
    schedule_id = new_schedule(http).get_json()["schedule"]["id"]
    for user, kwargs in (("bob", {}), ("mallory", {"org": "globex", "admin": True})):
        assert (
            http.get(f"/v1/schedules/{schedule_id}", headers=auth(user, **kwargs)).status_code
            == 404
        )
        assert (
            http.delete(f"/v1/schedules/{schedule_id}", headers=auth(user, **kwargs)).status_code
            == 404
        )
        assert (
            http.patch(
                f"/v1/schedules/{schedule_id}",
                json={"enabled": False},
                headers=auth(user, **kwargs),
            ).status_code
            == 404
        )
    seen = http.get(f"/v1/schedules/{schedule_id}", headers=auth("carol", admin=True))
    assert seen.status_code == 200 and seen.get_json()["canEdit"] is False
    assert (
        http.post(
            f"/v1/schedules/{schedule_id}/disable", headers=auth("carol", admin=True)
        ).status_code
        == 403
    )
    assert (
        store.db.collection("scheduledJobs").document(schedule_id).get().to_dict()["enabled"]
        is True
    )
    store.db.collection("scheduledJobs").document("system-cleanup").set(
        {"type": "process_notifications", "cron": "0 3 * * *", "system": True}
    )
    assert (
        http.get("/v1/schedules/system-cleanup", headers=auth("carol", admin=True)).status_code
        == 404
    )


def test_list_schedules_pages_through_the_callers_own(http: Client) -> None:
    mine = sorted(new_schedule(http).get_json()["schedule"]["id"] for _ in range(5))
    new_schedule(http, uid="bob")
    seen, token_ = [], None
    while True:
        url = "/v1/schedules?pageSize=2" + (f"&pageToken={token_}" if token_ else "")
        body = http.get(url, headers=auth()).get_json()
        seen.append([s["id"] for s in body["schedules"]])
        token_ = body["nextPageToken"]
        if not token_:
            break
    assert [i for page in seen for i in page] == mine and [len(p) for p in seen] == [2, 2, 1]
    org = http.get("/v1/schedules?scope=org", headers=auth("carol", admin=True)).get_json()[
        "schedules"
    ]
    assert len(org) == 6
    assert http.get("/v1/schedules?scope=org", headers=auth()).status_code == 403
    assert http.get("/v1/schedules?pageToken=nope", headers=auth()).status_code == 400


def test_update_enable_disable_and_delete_a_schedule(
    http: Client, store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    schedule_id = new_schedule(http).get_json()["schedule"]["id"]
    path = f"/v1/schedules/{schedule_id}"
    changed = http.patch(
        path,
        json={"cron": "30 6 * * *", "timezone": "UTC", "metadata": {"targetUsers": ["u2"]}},
        headers=auth(),
    )
    assert changed.status_code == 200
    view = changed.get_json()["schedule"]
    assert (view["cron"], view["timezone"], view["metadata"]) == (
        "30 6 * * *",
        "UTC",
        {"targetUsers": ["u2"]},
    )
    assert view["nextRunAt"].startswith(
        tuple(
            f"{d:%Y-%m-%d}T06:30:00"
            for d in (datetime.now(UTC), datetime.now(UTC) + timedelta(days=1))
        )
    )
    assert http.patch(path, json={}, headers=auth()).status_code == 400
    assert http.patch(path, json={"cron": "nope"}, headers=auth()).status_code == 400
    assert http.post(f"{path}/disable", headers=auth()).get_json()["schedule"]["enabled"] is False
    assert (
        store.db.collection("scheduledJobs").document(schedule_id).get().to_dict()["enabled"]
        is False
    )
    assert http.post(f"{path}/enable", headers=auth()).get_json()["schedule"]["enabled"] is True
    deleted = http.delete(path, headers=auth())
    assert deleted.status_code == 204 and deleted.data == b""
    assert not store.db.collection("scheduledJobs").document(schedule_id).get().exists
    assert http.get(path, headers=auth()).status_code == 404
    events = [line["event"] for line in audit_lines(caplog)]
    assert events == [
        "api_schedule_created",
        "api_schedule_updated",
        "api_schedule_updated",
        "api_schedule_updated",
        "api_schedule_deleted",
    ]


def test_a_schedule_whose_type_is_gone_cannot_be_re_enabled(http: Client, store: JobStore) -> None:
    store.db.collection("scheduledJobs").document("old").set(
        {
            "type": "retired_type",
            "cron": "0 9 * * *",
            "timezone": "UTC",
            "enabled": False,
            "createdBy": "alice",
            "orgId": "acme",
        }
    )
    response = http.post("/v1/schedules/old/enable", headers=auth())
    assert response.status_code == 409 and "retired_type" in error_of(response)["message"]
    assert store.db.collection("scheduledJobs").document("old").get().to_dict()["enabled"] is False


def test_schedule_creation_is_rate_limited(http: Client) -> None:
    for _ in range(5):
        assert new_schedule(http).status_code == 201
    refused = new_schedule(http)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert create(http).status_code == 201  # jobs have a budget of their own
