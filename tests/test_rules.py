"""firestore.rules, as a matrix of requests over the emulator's REST API with user tokens.

The Python client always bypasses rules (it authenticates as ``owner``), so
it only seeds the documents each case acts on. Every case sends one REST
request as one user (or none), asserts the exact answer (200 allowed, 403
denied) and, for a denied write, that the document is unchanged.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobs_lib.devstack import emulator as emulator_mod
from jobs_lib.model.job import key_to_id
from jobs_lib.store import JobStore

from .conftest import PROJECT, ROOT

#: Stands for a server timestamp in a REST write (a field transform to the request time).
SERVER_TIME = object()

ALLOW, DENY = 200, 403


# -- tokens ------------------------------------------------------------------------------------


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def id_token(uid: str, project: str = PROJECT, *, expires_in: float = 3600, **claims: Any) -> str:
    """An unsigned Firebase ID token as the emulators accept it (alg none, trailing dot).

    It carries what firebase-admin checks (aud, iss, sub, iat, exp, auth_time)
    plus custom claims (orgId, orgAdmin, permissions).
    """
    now = int(time.time())
    payload = {
        "iss": f"https://securetoken.google.com/{project}",
        "aud": project,
        "sub": uid,
        "user_id": uid,
        "iat": now - 10,
        "auth_time": now - 10,
        "exp": int(now + expires_in),
        "firebase": {"identities": {}, "sign_in_provider": "custom"},
        **claims,
    }
    return _b64({"alg": "none", "typ": "JWT"}) + "." + _b64(payload) + "."


# Who acts in the matrix. acme is an organisation with a member, a second member and an
# admin; globex is another organisation with its own admin; solo uses no organisation.
USERS: dict[str, dict[str, Any] | None] = {
    "anonymous": None,
    "alice": {"orgId": "acme"},
    "bob": {"orgId": "acme"},
    "carol": {"orgId": "acme", "orgAdmin": True},
    "mallory": {"orgId": "globex", "orgAdmin": True},
    "solo": {},
}


def token_for(user: str) -> str | None:
    claims = USERS[user]
    return None if claims is None else id_token(user, **claims)


# -- the REST API --------------------------------------------------------------------------------


def encode(value: Any) -> dict[str, Any]:
    """A Python value as a Firestore REST ``Value``."""
    if value is None:
        return {"nullValue": None}
    if isinstance(value, bool):
        return {"booleanValue": value}
    if isinstance(value, int):
        return {"integerValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, datetime):
        return {"timestampValue": value.astimezone(UTC).isoformat().replace("+00:00", "Z")}
    if isinstance(value, dict):
        return {"mapValue": {"fields": {k: encode(v) for k, v in value.items()}}}
    if isinstance(value, list):
        return {"arrayValue": {"values": [encode(v) for v in value]}}
    raise TypeError(f"cannot encode {value!r}")


@dataclass
class Rest:
    """The emulator's Firestore REST API, as one user (or anonymous) sees it."""

    base: str
    token: str | None
    project: str = PROJECT
    database: str = "(default)"

    @property
    def documents(self) -> str:
        return f"projects/{self.project}/databases/{self.database}/documents"

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.base}/v1/{path}", data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def _commit(self, write: dict[str, Any]) -> int:
        status, _body = self._send("POST", f"{self.documents}:commit", {"writes": [write]})
        return status

    @staticmethod
    def _fields(data: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        data = {
            k: v() if callable(v) else v for k, v in data.items()
        }  # times relative to the request (`soon`)
        fields = {k: encode(v) for k, v in data.items() if v is not SERVER_TIME}
        transforms = [
            {"fieldPath": k, "setToServerValue": "REQUEST_TIME"}
            for k, v in data.items()
            if v is SERVER_TIME
        ]
        return fields, transforms

    def get(self, path: str) -> int:
        return self._send("GET", f"{self.documents}/{path}")[0]

    def create(self, path: str, data: dict[str, Any]) -> int:
        fields, transforms = self._fields(data)
        write: dict[str, Any] = {
            "update": {"name": f"{self.documents}/{path}", "fields": fields},
            "currentDocument": {"exists": False},
        }
        if transforms:
            write["updateTransforms"] = transforms
        return self._commit(write)

    def set(self, path: str, data: dict[str, Any]) -> int:
        """Write the whole document, whether or not it exists (setDoc without merge)."""
        fields, transforms = self._fields(data)
        write: dict[str, Any] = {"update": {"name": f"{self.documents}/{path}", "fields": fields}}
        if transforms:
            write["updateTransforms"] = transforms
        return self._commit(write)

    def update(self, path: str, data: dict[str, Any]) -> int:
        """Set only the given fields (an update mask), as a client SDK's updateDoc does."""
        fields, transforms = self._fields(data)
        write: dict[str, Any] = {
            "update": {"name": f"{self.documents}/{path}", "fields": fields},
            "updateMask": {"fieldPaths": list(fields)},
            "currentDocument": {"exists": True},
        }
        if transforms:
            write["updateTransforms"] = transforms
        return self._commit(write)

    def delete(self, path: str) -> int:
        return self._commit({"delete": f"{self.documents}/{path}"})

    def query(self, collection: str, **equals: Any) -> int:
        """Run a query with equality filters; 200 with the documents or 403."""
        query: dict[str, Any] = {"from": [{"collectionId": collection}]}
        filters = [
            {"fieldFilter": {"field": {"fieldPath": k}, "op": "EQUAL", "value": encode(v)}}
            for k, v in equals.items()
        ]
        if len(filters) == 1:
            query["where"] = filters[0]
        elif filters:
            query["where"] = {"compositeFilter": {"op": "AND", "filters": filters}}
        return self._send("POST", f"{self.documents}:runQuery", {"structuredQuery": query})[0]


def load_rules(emulator: emulator_mod.Emulator, text: str, project: str | None = None) -> None:
    """Replace the emulator's security rules (enforced for REST requests with a user token) for
    its project or another."""
    body = json.dumps({"rules": {"files": [{"name": "firestore.rules", "content": text}]}}).encode()
    request = urllib.request.Request(
        f"{emulator.url}/emulator/v1/projects/{project or emulator.project}:securityRules",
        data=body,
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


@pytest.fixture(scope="module")
def rules(emulator: emulator_mod.Emulator) -> Iterator[None]:
    """The project's firestore.rules, loaded into the session emulator."""
    load_rules(emulator, (ROOT / "firestore.rules").read_text())
    yield


# -- the documents every case starts from ---------------------------------------------------------

NOW = datetime.now(UTC)


def soon(seconds: float = 0.0, *, iso: bool = False) -> Callable[[], Any]:
    """A time `seconds` from the moment the request is sent (the rules compare times a client
    writes with the request's own time; a module-level NOW may be long past when a case runs)."""

    def value() -> Any:
        moment = datetime.now(UTC) + timedelta(seconds=seconds)
        return (
            moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
            if iso
            else moment
        )

    return value


def job_doc(owner: str, org: str | None, status: str = "pending", **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "type": "process_notifications",
        "status": status,
        "metadata": {"targetUsers": ["u1"]},
        "createdAt": NOW,
        "createdBy": owner,
        **extra,
    }
    if org is not None:
        doc["orgId"] = org
    return doc


SEED: dict[str, dict[str, Any]] = {
    "backgroundJobs/alice-pending": job_doc("alice", "acme"),
    "backgroundJobs/alice-running": job_doc(
        "alice",
        "acme",
        "in_progress",
        attempts=1,
        lease={"holder": "w1", "token": "t"},
        leaseExpiresAt=NOW + timedelta(minutes=5),
    ),
    "backgroundJobs/alice-done": job_doc(
        "alice", "acme", "completed", attempts=1, result=3, completedAt=NOW
    ),
    "backgroundJobs/bob-pending": job_doc("bob", "acme"),
    "backgroundJobs/solo-pending": job_doc("solo", None),
    "scheduledJobs/alice-daily": {
        "type": "process_notifications",
        "metadata": {},
        "cron": "0 9 * * *",
        "timezone": "Europe/Paris",
        "enabled": True,
        "nextRunAt": NOW + timedelta(hours=1),
        "createdBy": "alice",
        "orgId": "acme",
    },
    "scheduledJobs/bob-daily": {
        "type": "process_notifications",
        "metadata": {},
        "cron": "0 9 * * *",
        "timezone": "UTC",
        "enabled": True,
        "nextRunAt": NOW + timedelta(hours=1),
        "createdBy": "bob",
        "orgId": "acme",
    },
    "backgroundJobs_partitions/0": {"holder": "w1", "expiresAt": NOW},
    "backgroundJobs_rateLimits/create-alice-1": {"count": 1},
    "backgroundJobs_fair/k1": {"type": "process_notifications", "key": "acme"},
    "backgroundJobs_control/fair": {"weights": {"process_notifications": {"acme": 1}}},
}


@pytest.fixture
def world(rules: None, store: JobStore, emulator: emulator_mod.Emulator) -> Callable[[str], Rest]:
    """An empty database seeded with SEED (through the Admin path); returns a REST client per
    user."""
    batch = store.db.batch()
    for path, data in SEED.items():
        batch.set(store.db.document(path), data)
    batch.commit()
    return lambda user: Rest(emulator.url, token_for(user))


def snapshot(store: JobStore, path: str) -> dict[str, Any] | None:
    snap = store.db.document(path).get()
    return snap.to_dict() if snap.exists else None


# -- the matrix ---------------------------------------------------------------------------------


def new_job(owner: str = "alice", org: str | None = "acme", **fields: Any) -> dict[str, Any]:
    """What a browser app writes to create a job (the original app), as `owner`."""
    doc: dict[str, Any] = {
        "type": "process_notifications",
        "status": "pending",
        "metadata": {"targetUsers": ["u1", "u2"], "notificationType": "course_reminder"},
        "createdAt": SERVER_TIME,
        "createdBy": owner,
    }
    if org is not None:
        doc["orgId"] = org
    doc.update(fields)
    return {k: v for k, v in doc.items() if v is not DROP}


def new_schedule(owner: str = "alice", org: str | None = "acme", **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "type": "process_notifications",
        "metadata": {"notificationType": "digest"},
        "cron": "0 9 * * 1",
        "timezone": "Europe/Paris",
        "enabled": True,
        "createdBy": owner,
    }
    if org is not None:
        doc["orgId"] = org
    doc.update(fields)
    return {k: v for k, v in doc.items() if v is not DROP}


#: Leaves a field out of `new_job` / `new_schedule`.
DROP = object()

RUNNER_FIELDS: dict[str, Any] = {
    "startedAt": NOW,
    "completedAt": NOW,
    "updatedAt": NOW,
    "result": 42,
    "error": "none",
    "errorDetails": {"type": "X"},
    "attempts": 0,
    "lease": {"holder": "me", "token": "forged"},
    "leaseExpiresAt": NOW + timedelta(days=1),
    "progress": {"percent": 100},
    "expireAt": NOW + timedelta(days=365),
}

SCHEDULER_FIELDS: dict[str, Any] = {
    "nextRunAt": NOW,
    "lastRunAt": NOW,
    "lastJobId": "j1",
    "error": "none",
    "updatedAt": NOW,
}


@dataclass(frozen=True)
class Case:
    """One request by one user and the answer the rules must give."""

    user: str
    op: str  # get | create | set | update | delete | query
    path: str
    expect: int
    data: Any = None

    def send(self, rest: Rest) -> int:
        if self.op == "get":
            return rest.get(self.path)
        if self.op == "create":
            return rest.create(self.path, self.data)
        if self.op == "set":
            return rest.set(self.path, self.data)
        if self.op == "update":
            return rest.update(self.path, self.data)
        if self.op == "delete":
            return rest.delete(self.path)
        if self.op == "query":
            return rest.query(self.path, **(self.data or {}))
        raise AssertionError(self.op)


J = "backgroundJobs"
S = "scheduledJobs"

CASES: dict[str, Case] = {
    # ---- creating jobs ----
    "job/create/own-pending": Case("alice", "create", f"{J}/n1", ALLOW, new_job()),
    "job/create/own-without-status": Case(
        "alice", "create", f"{J}/n1", ALLOW, new_job(status=DROP)
    ),
    "job/create/iso-string-times-as-seed-000": Case(
        "alice",
        "create",
        f"{J}/n1",
        ALLOW,
        new_job(createdAt=soon(iso=True), scheduledFor=soon(iso=True), metadata={}),
    ),
    "job/create/iso-string-times-a-client-clock-behind": Case(
        "alice",
        "create",
        f"{J}/n1",
        ALLOW,
        new_job(createdAt=soon(-300, iso=True), scheduledFor=soon(-300, iso=True)),
    ),
    "job/create/delayed-with-priority-and-attempts": Case(
        "alice",
        "create",
        f"{J}/n1",
        ALLOW,
        new_job(scheduledFor=soon(3600), priority=0, maxAttempts=3),
    ),
    "job/create/delayed-iso-string": Case(
        "alice", "create", f"{J}/n1", ALLOW, new_job(scheduledFor=soon(86400, iso=True))
    ),
    "job/create/no-org-user-without-org": Case(
        "solo", "create", f"{J}/n1", ALLOW, new_job("solo", None)
    ),
    "job/create/500-target-users": Case(
        "alice",
        "create",
        f"{J}/n1",
        ALLOW,
        new_job(metadata={"targetUsers": [f"user-{i}" for i in range(500)]}),
    ),
    "job/create/with-the-apps-traceparent": Case(
        "alice",
        "create",
        f"{J}/n1",
        ALLOW,
        new_job(traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ),
    "job/create/oversized-traceparent": Case(
        "alice", "create", f"{J}/n1", DENY, new_job(traceparent="0" * 65)
    ),
    "job/create/unauthenticated": Case("anonymous", "create", f"{J}/n1", DENY, new_job()),
    "job/create/for-another-user": Case("alice", "create", f"{J}/n1", DENY, new_job("bob")),
    "job/create/without-createdBy": Case(
        "alice", "create", f"{J}/n1", DENY, new_job(createdBy=DROP)
    ),
    "job/create/into-another-org": Case("alice", "create", f"{J}/n1", DENY, new_job(org="globex")),
    "job/create/org-member-without-orgId": Case(
        "alice", "create", f"{J}/n1", DENY, new_job(org=None)
    ),
    "job/create/no-org-user-claiming-an-org": Case(
        "solo", "create", f"{J}/n1", DENY, new_job("solo", "acme")
    ),
    "job/create/status-in_progress": Case(
        "alice", "create", f"{J}/n1", DENY, new_job(status="in_progress")
    ),
    "job/create/status-completed": Case(
        "alice", "create", f"{J}/n1", DENY, new_job(status="completed")
    ),
    "job/create/status-queued": Case("alice", "create", f"{J}/n1", DENY, new_job(status="queued")),
    "job/create/type-not-for-clients": Case(
        "alice", "create", f"{J}/n1", DENY, new_job(type="housekeeping")
    ),
    "job/create/without-type": Case("alice", "create", f"{J}/n1", DENY, new_job(type=DROP)),
    "job/create/501-target-users": Case(
        "alice",
        "create",
        f"{J}/n1",
        DENY,
        new_job(metadata={"targetUsers": [f"user-{i}" for i in range(501)]}),
    ),
    "job/create/oversized-body": Case(
        "alice",
        "create",
        f"{J}/n1",
        DENY,
        new_job(metadata={"targetUsers": ["u1"], "body": "x" * 2001}),
    ),
    "job/create/oversized-target-ids": Case(
        "alice", "create", f"{J}/n1", DENY, new_job(metadata={"targetUsers": ["x" * 1500] * 50})
    ),
    "job/create/unknown-metadata-key": Case(
        "alice", "create", f"{J}/n1", DENY, new_job(metadata={"targetUsers": ["u1"], "blob": "x"})
    ),
    "job/create/nested-data-map": Case(
        "alice", "create", f"{J}/n1", DENY, new_job(metadata={"data": {"deep": {"deeper": "x"}}})
    ),
    "job/create/metadata-not-a-map": Case(
        "alice", "create", f"{J}/n1", DENY, new_job(metadata="x")
    ),
    "job/create/priority-above-10": Case(
        "alice", "create", f"{J}/n1", DENY, new_job(priority=1000)
    ),
    "job/create/priority-above-the-clients-most": Case(
        "alice", "create", f"{J}/n1", DENY, new_job(priority=1)
    ),
    "job/create/max-attempts-1000": Case(
        "alice", "create", f"{J}/n1", DENY, new_job(maxAttempts=1000)
    ),
    "job/create/backdated-createdAt": Case(
        "alice", "create", f"{J}/n1", DENY, new_job(createdAt=NOW - timedelta(days=30))
    ),
    # Times (README: Security model): a timestamp or a strict ISO-8601 UTC string, about now.
    "job/create/createdAt-string-from-the-year-9999": Case(
        "alice", "create", f"{J}/n1", DENY, new_job(createdAt="9999-12-31T23:59:59Z")
    ),
    "job/create/createdAt-string-a-day-ahead": Case(
        "alice", "create", f"{J}/n1", DENY, new_job(createdAt=soon(86400, iso=True))
    ),
    "job/create/createdAt-string-seed-000-dated-2025": Case(
        "alice", "create", f"{J}/n1", DENY, new_job(createdAt="2025-04-27T05:39:36.941Z")
    ),
    "job/create/scheduledFor-timestamp-in-year-1": Case(
        "alice", "create", f"{J}/n1", DENY, new_job(scheduledFor=datetime(1, 1, 1, tzinfo=UTC))
    ),
    "job/create/scheduledFor-string-in-year-1": Case(
        "alice", "create", f"{J}/n1", DENY, new_job(scheduledFor="0001-01-01T00:00:00Z")
    ),
    "job/create/scheduledFor-string-an-hour-ago": Case(
        "alice", "create", f"{J}/n1", DENY, new_job(scheduledFor=soon(-3600, iso=True))
    ),
    "job/create/scheduledFor-with-a-leading-space": Case(
        "alice", "create", f"{J}/n1", DENY, new_job(scheduledFor=" 2099-01-01T00:00:00Z")
    ),
    "job/create/scheduledFor-with-an-offset": Case(
        "alice", "create", f"{J}/n1", DENY, new_job(scheduledFor="2099-01-01T00:00:00-12:00")
    ),
    "job/create/scheduledFor-date-only": Case(
        "alice", "create", f"{J}/n1", DENY, new_job(scheduledFor="2099-01-01")
    ),
    "job/create/scheduledFor-impossible-date": Case(
        "alice", "create", f"{J}/n1", DENY, new_job(scheduledFor="2099-02-30T00:00:00Z")
    ),
    "job/create/scheduledFor-a-number": Case(
        "alice", "create", f"{J}/n1", DENY, new_job(scheduledFor=4102444800)
    ),
    # Ids and types the library derives or owns (README: Security model).
    "job/create/schedule-slot-id": Case(
        "alice", "create", f"{J}/sched-system-jobs-cleanup-20991231T2345Z", DENY, new_job()
    ),
    "job/create/idempotency-key-id": Case(
        "alice",
        "create",
        f"{J}/{key_to_id('process_notifications', 'welcome:victim')}",
        DENY,
        new_job(),
    ),
    "job/set/idempotency-key-id-with-setDoc": Case(
        "alice",
        "set",
        f"{J}/{key_to_id('process_notifications', 'welcome:victim')}",
        DENY,
        new_job(),
    ),
    "job/create/webhook-delivery-type": Case(
        "alice", "create", f"{J}/n1", DENY, new_job(type="jobs.webhook", metadata={})
    ),
    "job/create/cleanup-type": Case(
        "alice", "create", f"{J}/n1", DENY, new_job(type="jobs.cleanup", metadata={})
    ),
    "job/create/unknown-field": Case("alice", "create", f"{J}/n1", DENY, new_job(isAdmin=True)),
    "job/create/already-cancel-requested": Case(
        "alice", "create", f"{J}/n1", DENY, new_job(cancelRequested=True)
    ),
    **{
        f"job/create/forged-{name}": Case(
            "alice", "create", f"{J}/n1", DENY, new_job(**{name: value})
        )
        for name, value in RUNNER_FIELDS.items()
    },
    "job/set/new-job-with-setDoc": Case("alice", "set", f"{J}/n1", ALLOW, new_job()),
    "job/set/overwrite-other-users-job": Case("alice", "set", f"{J}/bob-pending", DENY, new_job()),
    "job/set/overwrite-own-job-as-pending": Case(
        "alice", "set", f"{J}/alice-done", DENY, new_job()
    ),
    # ---- reading jobs ----
    "job/read/own": Case("alice", "get", f"{J}/alice-pending", ALLOW),
    "job/read/own-finished": Case("alice", "get", f"{J}/alice-done", ALLOW),
    "job/read/no-org-user-own": Case("solo", "get", f"{J}/solo-pending", ALLOW),
    "job/read/unauthenticated": Case("anonymous", "get", f"{J}/alice-pending", DENY),
    "job/read/same-org-other-user": Case("bob", "get", f"{J}/alice-pending", DENY),
    "job/read/org-admin": Case("carol", "get", f"{J}/alice-pending", ALLOW),
    "job/read/other-org-admin": Case("mallory", "get", f"{J}/alice-pending", DENY),
    "job/read/admin-of-org-other-users-no-org-job": Case("carol", "get", f"{J}/solo-pending", DENY),
    "job/query/own": Case("bob", "query", J, ALLOW, {"createdBy": "bob"}),
    "job/query/own-by-status": Case(
        "alice", "query", J, ALLOW, {"createdBy": "alice", "status": "pending"}
    ),
    "job/query/everything": Case("alice", "query", J, DENY, {}),
    "job/query/another-users": Case("bob", "query", J, DENY, {"createdBy": "alice"}),
    "job/query/org-as-admin": Case("carol", "query", J, ALLOW, {"orgId": "acme"}),
    "job/query/org-as-member": Case("bob", "query", J, DENY, {"orgId": "acme"}),
    "job/query/other-org-as-admin": Case("mallory", "query", J, DENY, {"orgId": "acme"}),
    "job/query/unauthenticated": Case("anonymous", "query", J, DENY, {"status": "pending"}),
    # ---- updating jobs: only cancelRequested: true, own, unfinished ----
    "job/cancel/own-pending": Case(
        "alice", "update", f"{J}/alice-pending", ALLOW, {"cancelRequested": True}
    ),
    "job/cancel/own-running": Case(
        "alice", "update", f"{J}/alice-running", ALLOW, {"cancelRequested": True}
    ),
    "job/cancel/own-finished": Case(
        "alice", "update", f"{J}/alice-done", DENY, {"cancelRequested": True}
    ),
    "job/cancel/set-false": Case(
        "alice", "update", f"{J}/alice-pending", DENY, {"cancelRequested": False}
    ),
    "job/cancel/with-status": Case(
        "alice",
        "update",
        f"{J}/alice-pending",
        DENY,
        {"cancelRequested": True, "status": "cancelled"},
    ),
    "job/cancel/unauthenticated": Case(
        "anonymous", "update", f"{J}/alice-pending", DENY, {"cancelRequested": True}
    ),
    "job/cancel/other-user": Case(
        "bob", "update", f"{J}/alice-pending", DENY, {"cancelRequested": True}
    ),
    "job/cancel/org-admin-not-owner": Case(
        "carol", "update", f"{J}/alice-pending", DENY, {"cancelRequested": True}
    ),
    "job/update/status": Case("alice", "update", f"{J}/alice-done", DENY, {"status": "pending"}),
    "job/update/metadata": Case(
        "alice", "update", f"{J}/alice-pending", DENY, {"metadata": {"targetUsers": ["everyone"]}}
    ),
    "job/update/result": Case("alice", "update", f"{J}/alice-running", DENY, {"result": "forged"}),
    "job/update/lease": Case(
        "alice", "update", f"{J}/alice-running", DENY, {"lease": {"holder": "me", "token": "t2"}}
    ),
    "job/update/reassign-owner": Case(
        "alice", "update", f"{J}/alice-pending", DENY, {"createdBy": "bob"}
    ),
    "job/update/scheduledFor": Case(
        "alice", "update", f"{J}/alice-pending", DENY, {"scheduledFor": NOW}
    ),
    # ---- deleting jobs ----
    "job/delete/own": Case("alice", "delete", f"{J}/alice-done", DENY),
    "job/delete/org-admin": Case("carol", "delete", f"{J}/alice-done", DENY),
    "job/delete/unauthenticated": Case("anonymous", "delete", f"{J}/alice-done", DENY),
    # ---- schedules ----
    "schedule/create/own": Case("alice", "create", f"{S}/s1", ALLOW, new_schedule()),
    "schedule/create/own-paused-without-timezone": Case(
        "alice", "create", f"{S}/s1", ALLOW, new_schedule(enabled=False, timezone=DROP)
    ),
    "schedule/create/no-org-user": Case(
        "solo", "create", f"{S}/s1", ALLOW, new_schedule("solo", None)
    ),
    "schedule/create/unauthenticated": Case("anonymous", "create", f"{S}/s1", DENY, new_schedule()),
    "schedule/create/for-another-user": Case(
        "alice", "create", f"{S}/s1", DENY, new_schedule("bob")
    ),
    "schedule/create/into-another-org": Case(
        "alice", "create", f"{S}/s1", DENY, new_schedule(org="globex")
    ),
    "schedule/create/type-not-for-clients": Case(
        "alice", "create", f"{S}/s1", DENY, new_schedule(type="housekeeping")
    ),
    "schedule/create/internal-type": Case(
        "alice", "create", f"{S}/s1", DENY, new_schedule(type="jobs.cleanup", metadata={})
    ),
    "schedule/create/the-id-of-a-schedule-declared-in-code": Case(
        "alice", "create", f"{S}/system-jobs-cleanup", DENY, new_schedule(enabled=False)
    ),
    "schedule/create/createdAt-string-from-the-year-9999": Case(
        "alice", "create", f"{S}/s1", DENY, new_schedule(createdAt="9999-12-31T23:59:59Z")
    ),
    "schedule/create/without-cron": Case(
        "alice", "create", f"{S}/s1", DENY, new_schedule(cron=DROP)
    ),
    "schedule/create/oversized-metadata": Case(
        "alice", "create", f"{S}/s1", DENY, new_schedule(metadata={"body": "x" * 5000})
    ),
    **{
        f"schedule/create/forged-{name}": Case(
            "alice", "create", f"{S}/s1", DENY, new_schedule(**{name: value})
        )
        for name, value in SCHEDULER_FIELDS.items()
    },
    "schedule/read/own": Case("alice", "get", f"{S}/alice-daily", ALLOW),
    "schedule/read/unauthenticated": Case("anonymous", "get", f"{S}/alice-daily", DENY),
    "schedule/read/other-user": Case("bob", "get", f"{S}/alice-daily", DENY),
    "schedule/read/org-admin": Case("carol", "get", f"{S}/alice-daily", ALLOW),
    "schedule/read/other-org-admin": Case("mallory", "get", f"{S}/alice-daily", DENY),
    "schedule/query/own": Case("alice", "query", S, ALLOW, {"createdBy": "alice"}),
    "schedule/query/everything": Case("alice", "query", S, DENY, {}),
    "schedule/update/pause-own": Case(
        "alice", "update", f"{S}/alice-daily", ALLOW, {"enabled": False}
    ),
    "schedule/update/pause-other-users": Case(
        "bob", "update", f"{S}/alice-daily", DENY, {"enabled": False}
    ),
    "schedule/update/cron": Case(
        "alice", "update", f"{S}/alice-daily", DENY, {"cron": "* * * * *"}
    ),
    "schedule/update/nextRunAt": Case(
        "alice", "update", f"{S}/alice-daily", DENY, {"nextRunAt": NOW}
    ),
    "schedule/update/enabled-not-bool": Case(
        "alice", "update", f"{S}/alice-daily", DENY, {"enabled": "yes"}
    ),
    "schedule/delete/own": Case("alice", "delete", f"{S}/alice-daily", DENY),
    # ---- everything else ----
    "partitions/read": Case("alice", "get", "backgroundJobs_partitions/0", DENY),
    "partitions/write": Case(
        "alice", "update", "backgroundJobs_partitions/0", DENY, {"holder": "me"}
    ),
    "partitions/create": Case(
        "alice", "create", "backgroundJobs_partitions/1", DENY, {"holder": "me"}
    ),
    # Fair shares: a tenant may neither read the keys nor give itself a larger share.
    "fair-keys/read": Case("alice", "get", "backgroundJobs_fair/k1", DENY),
    "fair-keys/forge": Case(
        "alice", "create", "backgroundJobs_fair/k2", DENY, {"type": "x", "key": "alice"}
    ),
    "fair-weights/raise-own": Case(
        "alice",
        "update",
        "backgroundJobs_control/fair",
        DENY,
        {"weights": {"process_notifications": {"acme": 1000}}},
    ),
    "rate-limits/read": Case("alice", "get", "backgroundJobs_rateLimits/create-alice-1", DENY),
    "rate-limits/reset": Case(
        "alice", "update", "backgroundJobs_rateLimits/create-alice-1", DENY, {"count": 0}
    ),
    "other-collection/create": Case("alice", "create", "users/alice", DENY, {"name": "a"}),
    "job-subcollection/create": Case(
        "alice", "create", f"{J}/alice-pending/notes/n1", DENY, {"text": "x"}
    ),
}


def test_the_matrix_covers_every_rule() -> None:
    """At least 40 cases, and each kind of request both allowed and denied where the rules allow
    any."""
    assert len(CASES) >= 40
    seen = {(c.path.split("/")[0], c.op, c.expect) for c in CASES.values()}
    for collection in (J, S):
        for op in ("get", "create", "update", "query"):
            assert {(collection, op, ALLOW), (collection, op, DENY)} <= seen, (collection, op)
        assert (collection, "delete", DENY) in seen


@pytest.mark.parametrize("name", list(CASES))
def test_rule(name: str, world: Callable[[str], Rest], store: JobStore) -> None:
    case = CASES[name]
    before = snapshot(store, case.path) if case.op != "query" else None
    answer = case.send(world(case.user))
    assert answer == case.expect, f"{name}: expected {case.expect}, got {answer}"
    if case.op in ("create", "set", "update", "delete"):
        after = snapshot(store, case.path)
        if case.expect == DENY:
            assert after == before, f"{name}: a denied write changed the document"
        elif case.op in ("create", "set"):
            assert after is not None and after["createdBy"] == case.user
        elif case.op == "update":
            assert after is not None and all(after[k] == v for k, v in case.data.items())
