"""A hostile signed-in user, replayed: each finding of the security review, and the attack failing.

Every attack goes through a real part: the project's own ``firestore.rules`` in the emulator
(REST requests with a user's token, as a browser's SDK sends them), the REST API (tokens verified
by firebase-admin in emulator mode), the scheduler, and workers running real handlers. Where the
rules now refuse an attack, the same write is also made through the Admin path (as a project
without these rules, or an app's own server, could) to show that the library itself never takes a
document it did not write as its own. The requests the rules and the API refused before these
fixes, and still refuse, are the tables of tests/test_rules.py (``CASES``) and tests/test_api.py.
README: *Security model*.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import threading
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from google.cloud.firestore_v1.base_query import FieldFilter
from werkzeug.test import Client

from jobs_lib import JobsClient, Status
from jobs_lib.api import JobsApi
from jobs_lib.config import Settings
from jobs_lib.engine import webhooks as webhooks_mod
from jobs_lib.engine.schedules import Scheduler, slot_job_id, system_schedule_id
from jobs_lib.engine.webhooks import WEBHOOK_TYPE, WebhookRefused, check_url, checked_target, post
from jobs_lib.errors import IdTaken
from jobs_lib.model.job import key_to_id
from jobs_lib.registry import HandlerRegistry
from jobs_lib.store import JobStore

from .conftest import ROOT, wait_finished, wait_for
from .test_api import ALL, away_from_a_window_boundary, token
from .test_rules import SERVER_TIME, Rest, id_token, load_rules

SECRET = "test-secret-of-32-characters-xx"
#: A public address (example.com's), used only where nothing connects to it for real.
PUBLIC = "93.184.215.14"


@pytest.fixture(scope="module", autouse=True)
def _rules_and_tokens(emulator: Any) -> Iterator[None]:
    """The project's rules in the emulator; firebase-admin accepting the emulator's unsigned
    tokens."""
    load_rules(emulator, (ROOT / "firestore.rules").read_text())
    previous = os.environ.get("FIREBASE_AUTH_EMULATOR_HOST")
    os.environ["FIREBASE_AUTH_EMULATOR_HOST"] = "127.0.0.1:9099"
    yield
    if previous is None:
        os.environ.pop("FIREBASE_AUTH_EMULATOR_HOST", None)
    else:
        os.environ["FIREBASE_AUTH_EMULATOR_HOST"] = previous


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Signed webhooks, and the tests' receiver on 127.0.0.1 allowed."""
    return settings.with_(webhook_secret=SECRET, webhook_allow=("127.0.0.1",))


def browser(emulator: Any, uid: str, org: str | None = "acme") -> Rest:
    """What a signed-in user's Firebase SDK can do: REST requests under the project's rules."""
    return Rest(emulator.url, id_token(uid, **({"orgId": org} if org else {})))


def seed_job(uid: str = "mallory", org: str | None = "acme", **fields: Any) -> dict[str, Any]:
    """A job document as a browser writes it (the original app), owned by `uid`."""
    doc = {
        "type": "process_notifications",
        "status": "pending",
        "metadata": {"targetUsers": ["u1"]},
        "createdAt": SERVER_TIME,
        "createdBy": uid,
        **fields,
    }
    if org:
        doc["orgId"] = org
    return doc


def api_for(client: JobsClient, **limits: Any) -> Client:
    return Client(JobsApi(client, create_limit=limits.get("create_limit", 100), create_window=60))


def bearer(uid: str, **kwargs: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(uid, **kwargs)}"}


class Receiver:
    """An HTTP server on 127.0.0.1 that records each POST (path, body)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        state = self

        class Handle(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                state.received.append(
                    (self.path, self.rfile.read(int(self.headers.get("Content-Length", 0))))
                )
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handle)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str = "/hooks/jobs") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()
    yield state
    state.server.shutdown()
    state.server.server_close()


# -- 1. the webhook signing oracle: internal types -------------------------------------------------


@pytest.mark.parametrize("job_type", [WEBHOOK_TYPE, "jobs.cleanup", "ledger_sync"])
def test_internal_types_cannot_be_created_by_users_anywhere(
    job_type: str,
    client: JobsClient,
    registry: HandlerRegistry,
    emulator: Any,
    worker_factory: Any,
    receiver: Receiver,
    store: JobStore,
) -> None:
    registry.handler("ledger_sync", internal=True)(
        lambda ctx: "synced"
    )  # marked internal by its author
    worker_factory(concurrency=2)
    http = api_for(client)
    forged = {
        "type": job_type,
        "metadata": {
            "url": receiver.url(),
            "payload": {"id": "j1", "status": "completed", "result": {"paid": True}},
        },
    }
    for path, body in (
        ("/v1/jobs", forged),
        ("/v1/jobs:batch", {"jobs": [forged]}),
        ("/v1/flows", {"jobs": [{"name": "a", **forged}]}),
        ("/v1/schedules", {"type": job_type, "cron": "* * * * *", "metadata": forged["metadata"]}),
    ):
        answer = http.post(path, json=body, headers=bearer("mallory", permissions=ALL))
        assert answer.status_code == 400, (path, answer.get_json())
        [detail] = answer.get_json()["error"]["details"]
        assert detail["field"].endswith("type") and "internal job type" in detail["reason"], detail
    assert (
        job_type
        not in http.get("/v1/openapi.json").get_json()["components"]["schemas"]["CreateJobRequest"][
            "properties"
        ]["type"]["enum"]
    )
    # Through the rules (the SDK's own path), as a job and as a schedule.
    mallory = browser(emulator, "mallory")
    assert (
        mallory.create(
            "backgroundJobs/forged", seed_job(type=job_type, metadata=forged["metadata"])
        )
        == 403
    )
    assert (
        mallory.create(
            "scheduledJobs/forged",
            {
                "type": job_type,
                "cron": "* * * * *",
                "metadata": {},
                "createdBy": "mallory",
                "orgId": "acme",
            },
        )
        == 403
    )
    assert (
        list(store.collection.limit(1).stream()) == []
        and list(store.schedules.collection.limit(1).stream()) == []
    )
    assert receiver.received == []  # nothing signed was sent anywhere


def test_a_delivery_belongs_to_the_system_and_its_jobs_owner_cannot_see_cancel_or_retry_it(
    client: JobsClient,
    registry: HandlerRegistry,
    store: JobStore,
    emulator: Any,
    worker_factory: Any,
    receiver: Receiver,
) -> None:
    registry.handler("greet")(lambda ctx: "hi")
    job = client.enqueue("greet", {}, webhook=receiver.url(), created_by="alice", org_id="acme")
    worker_factory(concurrency=2)
    delivery_id = wait_for(
        lambda: (store.get(job.id) or job).raw.get("webhookJobId"), 20, message="the delivery job"
    )
    delivery = wait_finished(store, [delivery_id], 20)[delivery_id]
    assert delivery.status is Status.COMPLETED and (delivery.created_by, delivery.org_id) == (
        None,
        None,
    )
    http = api_for(client)
    for who in ({"uid": "alice"}, {"uid": "carol", "admin": True}):
        headers = bearer(who["uid"], admin=who.get("admin", False), permissions=ALL)
        assert http.get(f"/v1/jobs/{delivery_id}", headers=headers).status_code == 404
        assert http.post(f"/v1/jobs/{delivery_id}/retry", headers=headers).status_code == 404
        assert http.post(f"/v1/jobs/{delivery_id}/cancel", headers=headers).status_code == 404
        listed = http.get(
            "/v1/jobs?scope=org" if who.get("admin") else "/v1/jobs", headers=headers
        ).get_json()["jobs"]
        assert delivery_id not in {j["id"] for j in listed}
    # An operator sees it, and still may not replay it: internal types are the runner's.
    operator = bearer("olga", operator=True, permissions=ALL)
    assert http.get(f"/v1/jobs/{delivery_id}", headers=operator).status_code == 200
    assert http.post(f"/v1/jobs/{delivery_id}/retry", headers=operator).status_code == 403
    alice = browser(emulator, "alice")
    assert alice.get(f"backgroundJobs/{delivery_id}") == 403
    assert alice.update(f"backgroundJobs/{delivery_id}", {"cancelRequested": True}) == 403
    assert len(receiver.received) == 1


# -- 2. ids the library derives
# ---------------------------------------------------------------------


def test_a_squatted_schedule_slot_never_stops_the_schedule(
    store: JobStore, registry: HandlerRegistry, emulator: Any
) -> None:
    scheduler = Scheduler(store.schedules, store, registry)
    slots = [store.now().replace(second=0, microsecond=0) + timedelta(minutes=k) for k in range(3)]
    store.schedules.create(
        "every-minute",
        job_type="process_notifications",
        cron_expression="* * * * *",
        timezone="UTC",
        metadata={"targetUsers": ["u1"]},
        enabled=True,
        priority=0,
        next_run_at=slots[0],
    )
    mallory = browser(emulator, "mallory")
    assert (
        mallory.create(f"backgroundJobs/{slot_job_id('every-minute', slots[0])}", seed_job()) == 403
    )  # the rules
    for (
        slot
    ) in slots:  # a project without these rules (or a server writing by mistake): the check on use
        store.ref(slot_job_id("every-minute", slot)).set(
            {
                "type": "process_notifications",
                "status": "pending",
                "metadata": {"title": "you won"},
                "createdBy": "mallory",
            }
        )
    fired = []
    for slot in slots:  # a tick in each minute
        summary = scheduler.fire_due(now=slot + timedelta(seconds=30))
        assert summary.lost == 0 and [f["slot"] for f in summary.fired] == [slot.isoformat()], (
            summary
        )
        fired.append(summary.fired[0]["jobId"])
    assert all(
        job_id.startswith(slot_job_id("every-minute", slot) + "-")
        for job_id, slot in zip(fired, slots, strict=True)
    )
    for job_id in fired:
        job = store.get(job_id)
        assert (
            job is not None
            and job.raw["scheduleId"] == "every-minute"
            and job.created_by is None
            and job.metadata == {"targetUsers": ["u1"]}
        )
    schedule = store.schedules.get("every-minute")
    assert (
        schedule is not None
        and schedule.next_run_at is not None
        and schedule.next_run_at > slots[-1]
        and schedule.last_job_id == fired[-1]
    )
    assert store.get(slot_job_id("every-minute", slots[0])).metadata == {"title": "you won"}  # type: ignore[union-attr]  # left as it was


def test_a_squatted_system_schedule_is_taken_back_and_its_squatter_cannot_steer_it(
    store: JobStore, registry: HandlerRegistry, emulator: Any
) -> None:
    name = system_schedule_id("jobs.cleanup")
    mallory = browser(emulator, "mallory")
    squat = {
        "type": "process_notifications",
        "cron": "0 0 1 1 *",
        "enabled": False,
        "metadata": {},
        "createdBy": "mallory",
        "orgId": "acme",
    }
    assert mallory.create(f"scheduledJobs/{name}", squat) == 403  # the rules
    store.schedules.ref(name).set(squat)  # the Admin path: the check on use
    scheduler = Scheduler(store.schedules, store, registry, system_schedules=[_cleanup()])
    scheduler.fire_due()
    taken = store.schedules.get(name)
    assert taken is not None and (taken.type, taken.cron, taken.enabled, taken.system) == (
        "jobs.cleanup",
        "*/15 * * * *",
        True,
        True,
    )
    assert (taken.created_by, taken.org_id) == (None, None) and taken.next_run_at is not None
    assert mallory.update(f"scheduledJobs/{name}", {"enabled": False}) == 403
    assert mallory.get(f"scheduledJobs/{name}") == 403


def _cleanup() -> Any:
    from jobs_lib.registry import CodeSchedule

    return CodeSchedule("jobs.cleanup", "jobs.cleanup", "*/15 * * * *")


def test_an_idempotency_key_held_by_a_document_the_library_did_not_write_is_never_taken_as_its_job(
    client: JobsClient, store: JobStore, emulator: Any
) -> None:
    key_id = key_to_id("process_notifications", "welcome:victim")
    mallory = browser(emulator, "mallory")
    assert mallory.create(f"backgroundJobs/{key_id}", seed_job()) == 403  # the rules: create ...
    assert mallory.set(f"backgroundJobs/{key_id}", seed_job()) == 403  # ... and setDoc
    phishing = {
        "type": "process_notifications",
        "status": "pending",
        "metadata": {"targetUsers": ["victim"], "title": "verify your card"},
        "createdBy": "mallory",
        "scheduledFor": datetime(2099, 1, 1, tzinfo=UTC),
    }
    store.ref(key_id).set(phishing)  # the Admin path: the check on use
    with pytest.raises(IdTaken, match="held by a document jobs_lib did not write"):
        client.enqueue(
            "process_notifications",
            {"targetUsers": ["victim"], "title": "Welcome"},
            key="welcome:victim",
        )
    with pytest.raises(IdTaken):
        client.enqueue_many(
            [{"type": "process_notifications", "metadata": {}, "key": "welcome:victim"}]
        )
    assert store.get(key_id).metadata["title"] == "verify your card"  # type: ignore[union-attr]
    # The key's own job, once the id is free, is the library's and is found again.
    store.ref(key_id).delete()
    first = client.enqueue(
        "process_notifications", {"targetUsers": ["victim"]}, key="welcome:victim"
    )
    assert (
        client.enqueue("process_notifications", {"targetUsers": ["other"]}, key="welcome:victim").id
        == first.id
        == key_id
    )


def test_a_job_id_chosen_to_match_a_notification_never_overwrites_it(
    store: JobStore, emulator: Any, worker_factory: Any
) -> None:
    store.db.document("users/victim/notifications/welcome").set(
        {"title": "Welcome to the course", "read": True}
    )
    mallory = browser(emulator, "mallory")
    assert (
        mallory.create(
            "backgroundJobs/welcome",
            seed_job(
                metadata={"targetUsers": ["victim", "bystander"], "title": "reset your password"}
            ),
        )
        == 200
    )
    worker_factory(concurrency=1)
    job = wait_finished(store, ["welcome"], 20)["welcome"]
    assert job.status is Status.COMPLETED and job.result == 1  # the bystander only
    assert store.db.document("users/victim/notifications/welcome").get().to_dict() == {
        "title": "Welcome to the course",
        "read": True,
    }
    assert (
        store.db.document("users/bystander/notifications/welcome").get().to_dict()["jobId"]
        == "welcome"
    )


# -- 3. starving string-timed jobs
# ------------------------------------------------------------------


def ids_in_shard(shard: int, count: int, prefix: str) -> list[str]:
    found: list[str] = []
    n = 0
    while len(found) < count:
        candidate = f"{prefix}{n}"
        if zlib.crc32(candidate.encode()) % 30 == shard:
            found.append(candidate)
        n += 1
    return found


def test_never_due_string_times_cannot_hold_the_string_lane(
    store: JobStore, emulator: Any, worker_factory: Any
) -> None:
    mallory = browser(emulator, "mallory")
    for value in (" 2099-01-01T00:00:00Z", "2099-01-01T00:00:00-12:00"):
        assert (
            mallory.create("backgroundJobs/held", seed_job(scheduledFor=value, shard=0)) == 403
        )  # the rules
    # The Admin path: 40 documents in shard 0 whose strings sort among due ones and are not due
    # (an offset of -12:00 puts them 12 hours after their text), and 40 that only look like times.
    now = store.now()
    text = (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    batch = store.db.batch()
    for job_id in ids_in_shard(0, 40, "held-"):
        batch.set(
            store.ref(job_id),
            {
                "type": "process_notifications",
                "status": "pending",
                "metadata": {},
                "shard": 0,
                "scheduledFor": f"{text}-12:00",
                "createdAt": now,
            },
        )
    for job_id in ids_in_shard(0, 40, "spaced-"):
        batch.set(
            store.ref(job_id),
            {
                "type": "process_notifications",
                "status": "pending",
                "metadata": {},
                "shard": 0,
                "scheduledFor": f" {text}Z",
                "createdAt": now,
            },
        )
    # And 40 well-formed ones due in two hours, which the lane's bound (widened by the largest UTC
    # offset) returns first in shard 0: only a lane that moves on from a full page gets past them.
    later = (now + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    for job_id in ids_in_shard(0, 40, "later-"):
        batch.set(
            store.ref(job_id),
            {
                "type": "process_notifications",
                "status": "pending",
                "metadata": {},
                "shard": 0,
                "scheduledFor": later,
                "createdAt": now,
            },
        )
    batch.commit()
    victim_id = ids_in_shard(7, 1, "victim-")[0]
    due = (now + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert (
        browser(emulator, "alice").create(
            f"backgroundJobs/{victim_id}",
            seed_job("alice", scheduledFor=due, shard=7, metadata={"targetUsers": ["u9"]}),
        )
        == 200
    )
    worker_factory(concurrency=4)
    victim = wait_finished(store, [victim_id], 30)[victim_id]
    assert victim.status is Status.COMPLETED
    held = [store.get(job_id) for job_id in ids_in_shard(0, 40, "held-")]
    assert all(job is not None and job.status is Status.PENDING for job in held)
    moved = wait_for(
        lambda: (
            [
                j
                for j in (store.get(i) for i in ids_in_shard(0, 40, "held-"))
                if j and isinstance(j.raw["scheduledFor"], datetime)
            ]
            or None
        ),
        30,
        message="the misplaced strings rewritten",
    )
    moved = wait_for(
        lambda: (
            (
                m := [
                    j
                    for j in (store.get(i) for i in ids_in_shard(0, 40, "held-"))
                    if j and isinstance(j.raw["scheduledFor"], datetime)
                ]
            )
            and len(m) == 40
            and m
        ),
        30,
        message="all 40 rewritten",
    )
    assert len(moved) == 40 and all(
        job.scheduled_for and job.scheduled_for > now + timedelta(hours=12) for job in moved
    )
    spaced = wait_finished(store, ids_in_shard(0, 40, "spaced-"), 20)
    assert {job.status for job in spaced.values()} == {Status.FAILED} and all(
        "is not a timestamp" in (job.error or "") for job in spaced.values()
    )


# -- 4. a handler's webhook URL
# -----------------------------------------------------------------------


def test_a_handlers_webhook_url_never_reaches_the_jobs_owner(
    store: JobStore,
    registry: HandlerRegistry,
    client: JobsClient,
    emulator: Any,
    worker_factory: Any,
    receiver: Receiver,
) -> None:
    secret_path = "/services/T0SECRET/B0SECRET/XXXXSECRETPATH"
    registry.unregister("process_notifications")
    registry.handler("process_notifications", webhook=receiver.url(secret_path))(
        lambda ctx: len(ctx.metadata.get("targetUsers", []))
    )
    alice = browser(emulator, "alice")
    assert (
        alice.create(
            "backgroundJobs/from-the-browser",
            seed_job("alice", metadata={"targetUsers": ["u1", "u2"]}),
        )
        == 200
    )
    http = api_for(client)
    from_api = http.post(
        "/v1/jobs",
        json={"type": "process_notifications", "metadata": {"targetUsers": ["u3"]}},
        headers=bearer("alice", permissions=ALL),
    )
    assert from_api.status_code == 201
    api_job = from_api.get_json()["job"]["id"]
    worker_factory(concurrency=2)
    wait_for(lambda: len(receiver.received) >= 2, 30, message="two deliveries")
    wait_finished(store, ["from-the-browser", api_job], 10)
    for job_id in ("from-the-browser", api_job):
        as_owner = http.get(
            f"/v1/jobs/{job_id}", headers=bearer("alice", permissions=ALL)
        ).get_json()
        status, as_read = alice._send("GET", f"{alice.documents}/backgroundJobs/{job_id}")
        assert status == 200 and as_owner["job"]["id"] == job_id
        for seen in (as_owner, as_read):
            assert "SECRET" not in json.dumps(seen), seen
    listed = http.get("/v1/jobs", headers=bearer("alice", permissions=ALL)).get_json()["jobs"]
    assert {j["type"] for j in listed} == {"process_notifications"}
    deliveries = [
        job
        for job in store.run_query(
            store.collection.where(filter=FieldFilter("type", "==", WEBHOOK_TYPE))
        )
        if job
    ]
    assert len(deliveries) == 2
    for delivery in deliveries:
        assert (
            "url" not in delivery.metadata
            and delivery.created_by is None
            and "SECRET" not in json.dumps(delivery.raw, default=str)
        )
        assert alice.update(f"backgroundJobs/{delivery.id}", {"cancelRequested": True}) == 403
        assert (
            http.post(
                f"/v1/jobs/{delivery.id}/retry", headers=bearer("alice", permissions=ALL)
            ).status_code
            == 404
        )
    assert {path for path, _body in receiver.received} == {secret_path}


# -- 5. address checks
# --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "100.64.0.1",
        "100.100.100.200",
        "192.88.99.1",
        "[2002:7f00:1::]",
        "[2002:a9fe:a9fe::]",
        "[fec0::1]",
        "[64:ff9b::7f00:1]",
        "[64:ff9b::a9fe:a9fe]",
        "[64:ff9b:1::a00:1]",
        "[::7f00:1]",
        "[::ffff:127.0.0.1]",
        "[2001:0:4136:e378:8000:63bf:80ff:fffe]",
        "[ff02::1]",
        "224.0.0.1",
        "198.18.0.1",
        "240.0.0.1",
        "0.0.0.0",
        "[::]",
    ],
)
def test_addresses_that_are_not_globally_routable_are_refused(host: str) -> None:
    with pytest.raises(
        WebhookRefused,
        match="a private, loopback, link-local or reserved address; list it in JOBS_WEBHOOK_ALLOW",
    ):
        check_url(f"http://{host}/hook")


def test_the_ipv4_inside_an_ipv6_form_is_checked_and_the_allow_list_still_opens_it() -> None:
    assert [str(a) for a in webhooks_mod.embedded_ipv4(ipaddress.IPv6Address("2002:7f00:1::"))] == [
        "127.0.0.1"
    ]
    assert [
        str(a) for a in webhooks_mod.embedded_ipv4(ipaddress.IPv6Address("64:ff9b::a9fe:a9fe"))
    ] == ["169.254.169.254"]
    assert webhooks_mod.public(ipaddress.ip_address(PUBLIC)) and webhooks_mod.public(
        ipaddress.ip_address("2606:4700::1111")
    )
    assert webhooks_mod.public(
        ipaddress.ip_address("2002:0808:0808::")
    )  # 6to4 of 8.8.8.8 is public
    assert check_url("http://100.64.0.1/hook", ["100.64.0.0/10"]) == "http://100.64.0.1/hook"


def test_the_post_goes_to_the_address_that_was_checked(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name answers a public address for the check, then 127.0.0.1."""
    answers = iter([PUBLIC] + ["127.0.0.1"] * 10)
    monkeypatch.setattr(
        webhooks_mod.socket,
        "getaddrinfo",
        lambda host, *a, **k: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), 0))],
    )
    connected: list[tuple[str, int]] = []

    def connect(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        connected.append(address)
        raise ConnectionRefusedError("no route here")

    monkeypatch.setattr(webhooks_mod.socket, "create_connection", connect)
    url, addresses = checked_target(f"http://rebind.example:{receiver.port}/hooks/jobs")
    assert addresses == [PUBLIC]
    with pytest.raises(webhooks_mod.DeliveryFailed):
        post(url, b"{}", {"Content-Type": "application/json"}, addresses)
    assert connected == [(PUBLIC, receiver.port)] and receiver.received == []


def test_a_delivery_connects_to_the_checked_address_and_names_the_host(receiver: Receiver) -> None:
    url, addresses = checked_target(f"http://localhost:{receiver.port}/hooks/jobs", ["localhost"])
    assert set(addresses) <= {"127.0.0.1", "::1"}
    assert (
        post(
            url,
            b'{"ok":true}',
            {"Content-Type": "application/json"},
            [a for a in addresses if a == "127.0.0.1"],
        )
        == 200
    )
    assert receiver.received == [("/hooks/jobs", b'{"ok":true}')]


# -- 6. limits on the client path ------------------------------------------------------------------


def test_schedules_beyond_a_users_limit_are_switched_off_naming_it(
    store: JobStore, registry: HandlerRegistry, emulator: Any, client: JobsClient
) -> None:
    limited = JobStore(store.settings.with_(schedules_per_user=3))
    alice = browser(emulator, "alice")
    for n in range(5):
        assert (
            alice.create(
                f"scheduledJobs/alice-{n}",
                {
                    "type": "process_notifications",
                    "cron": "* * * * *",
                    "metadata": {},
                    "createdBy": "alice",
                    "orgId": "acme",
                },
            )
            == 200
        )
    assert (
        browser(emulator, "bob").create(
            "scheduledJobs/bob-0",
            {
                "type": "process_notifications",
                "cron": "* * * * *",
                "metadata": {},
                "createdBy": "bob",
                "orgId": "acme",
            },
        )
        == 200
    )
    Scheduler(limited.schedules, limited, registry).fire_due()
    found = {s.id: s for s in limited.schedules.list(limit=20)}
    assert [i for i, s in sorted(found.items()) if s.enabled and s.next_run_at] == [
        "alice-0",
        "alice-1",
        "alice-2",
        "bob-0",
    ]
    for off in ("alice-3", "alice-4"):
        assert (
            not found[off].enabled
            and "more than 3 schedules" in (found[off].error or "")
            and found[off].next_run_at is None
        )
    # Switched back on by its owner (the rules allow that toggle), it is switched off again.
    assert alice.update("scheduledJobs/alice-4", {"enabled": True}) == 200
    Scheduler(limited.schedules, limited, registry).fire_due()
    assert not limited.schedules.get("alice-4").enabled  # type: ignore[union-attr]
    # The API counts them before creating one.
    http = api_for(JobsClient(store=limited, registry=registry))
    refused = http.post(
        "/v1/schedules",
        json={"type": "process_notifications", "cron": "* * * * *"},
        headers=bearer("alice", permissions=ALL),
    )
    assert (
        refused.status_code == 409
        and "JOBS_SCHEDULES_PER_USER" in refused.get_json()["error"]["message"]
    )


def test_a_user_cannot_put_their_jobs_before_another_users(
    store: JobStore,
    registry: HandlerRegistry,
    client: JobsClient,
    emulator: Any,
    worker_factory: Any,
) -> None:
    started: list[str] = []
    registry.unregister("process_notifications")
    registry.handler("process_notifications")(lambda ctx: started.append(ctx.metadata["who"]))
    bob_job = client.enqueue("process_notifications", {"who": "bob"}, created_by="bob")
    http = api_for(client)
    year_one = {
        "type": "process_notifications",
        "metadata": {"who": "mallory"},
        "scheduledFor": "0001-01-01T00:00:00Z",
    }
    refused = http.post(
        "/v1/jobs", json={**year_one, "priority": 10}, headers=bearer("mallory", permissions=ALL)
    )
    assert (
        refused.status_code == 400
        and refused.get_json()["error"]["details"][0]["field"] == "priority"
    )  # JOBS_CLIENT_MAX_PRIORITY = 0
    made = http.post(
        "/v1/jobs:batch", json={"jobs": [year_one] * 8}, headers=bearer("mallory", permissions=ALL)
    )
    assert made.status_code == 201
    bob = store.get(bob_job.id)
    assert bob is not None and bob.scheduled_for is not None
    for job in made.get_json()["jobs"]:  # dated now, not in year 1
        assert store.get(job["job"]["id"]).scheduled_for >= bob.scheduled_for  # type: ignore[union-attr,operator]
    mallory = browser(emulator, "mallory")
    assert (
        mallory.create("backgroundJobs/early", seed_job(scheduledFor=datetime(1, 1, 1, tzinfo=UTC)))
        == 403
    )
    assert mallory.create("backgroundJobs/high", seed_job(priority=10)) == 403
    worker_factory(concurrency=1)
    wait_for(lambda: len(started) == 9, 30, message="every job to start")
    assert started[0] == "bob"


def test_firing_a_schedule_by_hand_counts_against_the_create_limit(
    store: JobStore, registry: HandlerRegistry, client: JobsClient
) -> None:
    away_from_a_window_boundary(store)
    http = api_for(client, create_limit=3)
    alice = bearer("alice", permissions=ALL)
    schedule = http.post(
        "/v1/schedules", json={"type": "process_notifications", "cron": "0 0 1 1 *"}, headers=alice
    ).get_json()["schedule"]
    assert (
        http.post("/v1/jobs", json={"type": "process_notifications"}, headers=alice).status_code
        == 201
    )
    answers = [
        http.post(f"/v1/schedules/{schedule['id']}/fire", headers=alice).status_code
        for _ in range(4)
    ]
    assert answers == [200, 200, 429, 429]
    assert store.count_matching(status="pending") == 3
