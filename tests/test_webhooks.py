"""Completion webhooks (jobs_lib.engine.webhooks): signed POSTs to a real receiver on 127.0.0.1,
retried, refused."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from jobs_lib import Backoff, JobContext, JobsClient, Status
from jobs_lib.app import App
from jobs_lib.config import Settings
from jobs_lib.engine.webhooks import (
    DELIVERY_HEADER,
    WEBHOOK_TYPE,
    WebhookRefused,
    check_url,
    verify,
)
from jobs_lib.errors import PermanentError
from jobs_lib.functions import Functions
from jobs_lib.registry import HandlerRegistry
from jobs_lib.store import JobStore

from .conftest import wait_finished, wait_for

SECRET = "test-secret-of-32-characters-xx"


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records each POST and answers the next status in
    `answers`."""

    url: str
    answers: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handle(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.received.append((dict(self.headers.items()), body))
            status = state.answers.pop(0) if state.answers else 200
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handle)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/jobs"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The suite's settings with a webhook secret, and 127.0.0.1 (the receiver) allowed."""
    return settings.with_(webhook_secret=SECRET, webhook_allow=("127.0.0.1",))


@pytest.fixture
def registry(registry: HandlerRegistry) -> HandlerRegistry:
    """The built-in handlers, the delivery retried after 0.2 s instead of its exponential
    backoff."""
    fast = HandlerRegistry()
    for name in registry.types():
        spec = registry.get(name)
        assert spec is not None
        fast.register(replace(spec, backoff=Backoff.fixed(0.2)) if name == WEBHOOK_TYPE else spec)
    return fast


def test_a_finished_job_is_posted_signed_once_and_the_delivery_is_recorded(
    client: JobsClient,
    store: JobStore,
    registry: HandlerRegistry,
    worker_factory: Any,
    receiver: Receiver,
) -> None:
    registry.handler("greet")(lambda ctx: {"hello": ctx.metadata["name"]})
    job = client.enqueue(
        "greet", {"name": "ada"}, webhook=receiver.url, org_id="acme", created_by="alice"
    )
    assert store.get(job.id).raw["webhook"] == receiver.url  # type: ignore[union-attr]
    worker_factory(concurrency=2)
    wait_for(lambda: receiver.received, 20, message="the webhook POST")
    done = wait_finished(store, [job.id], 10)[job.id]
    delivery_id = wait_for(
        lambda: (store.get(job.id) or done).raw.get("webhookJobId"),
        10,
        message="webhookJobId on the job",
    )
    delivery = wait_finished(store, [delivery_id], 10)[delivery_id]
    assert (
        delivery.type == WEBHOOK_TYPE
        and delivery.status is Status.COMPLETED
        and delivery.attempts == 1
    )
    assert delivery.result == {"status": 200, "attempt": 1}
    assert (delivery.org_id, delivery.created_by) == (
        None,
        None,
    )  # the system's, not the owner's: they can neither read, cancel nor retry it
    assert SECRET not in json.dumps(delivery.raw, default=str) and SECRET not in json.dumps(
        store.get(job.id).raw, default=str
    )  # type: ignore[union-attr]

    [(headers, body)] = receiver.received
    assert verify(SECRET, headers, body)
    assert not verify("another-secret-of-some-length", headers, body)
    assert not verify(SECRET, headers, body.replace(b"ada", b"eve"))
    assert not verify(SECRET, headers, body, now=time.time() + 3600)  # a replay an hour later
    assert headers[DELIVERY_HEADER] == delivery_id and headers["Content-Type"] == "application/json"
    sent = json.loads(body)
    assert (
        sent["id"] == job.id
        and sent["type"] == "greet"
        and sent["status"] == "completed"
        and sent["result"] == {"hello": "ada"}
    )
    assert sent["attempts"] == 1 and sent["completedAt"] == done.completed_at.isoformat()  # type: ignore[union-attr]
    time.sleep(1.0)
    assert len(receiver.received) == 1  # once


def test_a_receiver_that_fails_twice_gets_the_same_delivery_until_it_takes_it(
    client: JobsClient,
    store: JobStore,
    registry: HandlerRegistry,
    worker_factory: Any,
    receiver: Receiver,
) -> None:
    receiver.answers = [500, 503]
    registry.handler("greet")(lambda ctx: "hi")
    job = client.enqueue("greet", {}, webhook=receiver.url)
    worker_factory(concurrency=2)
    wait_for(lambda: len(receiver.received) >= 3, 30, message="three POSTs")
    delivery_id = wait_for(
        lambda: store.get(job.id).raw.get("webhookJobId"), 10, message="webhookJobId"
    )  # type: ignore[union-attr]
    delivery = wait_finished(store, [delivery_id], 10)[delivery_id]
    assert (
        delivery.status is Status.COMPLETED
        and delivery.attempts == 3
        and delivery.result == {"status": 200, "attempt": 3}
    )
    assert {headers[DELIVERY_HEADER] for headers, _b in receiver.received} == {
        delivery_id
    }  # the receiver can drop duplicates
    assert all(verify(SECRET, headers, body) for headers, body in receiver.received)
    time.sleep(1.0)
    assert len(receiver.received) == 3


def test_an_apps_failed_job_of_a_handler_with_a_default_webhook_is_posted_with_its_error(
    store: JobStore, registry: HandlerRegistry, worker_factory: Any, receiver: Receiver
) -> None:
    @registry.handler("charge", webhook=receiver.url, max_attempts=1)
    def charge(ctx: JobContext[Any]) -> None:
        raise PermanentError("card declined")

    store.ref("app-written").set(
        {"type": "charge", "status": "pending", "metadata": {}}
    )  # no webhook field: the handler's
    receiver.answers = [410]  # and a receiver that answers Gone: not retried
    worker_factory(concurrency=1)
    wait_for(lambda: receiver.received, 20, message="the webhook POST")
    job = wait_finished(store, ["app-written"], 10)["app-written"]
    assert (
        job.status is Status.FAILED and job.raw["webhook"] is True
    )  # the handler's URL stays on the server
    assert receiver.url not in json.dumps(job.raw, default=str)
    sent = json.loads(receiver.received[0][1])
    assert (sent["status"], sent["error"]) == (
        "failed",
        "PermanentError: card declined",
    ) and "result" not in sent
    delivery_id = wait_for(
        lambda: store.get("app-written").raw.get("webhookJobId"), 10, message="webhookJobId"
    )  # type: ignore[union-attr]
    delivery = wait_finished(store, [delivery_id], 10)[delivery_id]
    assert (
        delivery.status is Status.FAILED
        and delivery.error == "PermanentError: the receiver answered 410; not retried"
        and delivery.attempts == 1
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/x",
        "http://localhost/x",
        "http://10.1.2.3/hook",
        "http://192.168.0.7/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x",
        "http://[::ffff:10.0.0.1]/x",
        "http://0.0.0.0/",
    ],
)
def test_private_loopback_and_link_local_addresses_are_refused(
    settings: Settings, url: str
) -> None:
    client = JobsClient(store=JobStore(settings.with_(webhook_allow=())))
    with pytest.raises(
        WebhookRefused,
        match="private, loopback, link-local or reserved address; list it in JOBS_WEBHOOK_ALLOW",
    ):
        client.enqueue("process_notifications", {}, webhook=url)
    assert list(client.store.collection.limit(1).stream()) == []


def test_what_the_allow_list_lets_through_and_other_refusals() -> None:
    assert check_url("http://127.0.0.1:8080/x", ["127.0.0.1"]) == "http://127.0.0.1:8080/x"
    assert check_url("http://10.9.8.7/x", ["10.0.0.0/8"]) == "http://10.9.8.7/x"
    assert check_url("http://localhost/x", ["localhost"]) == "http://localhost/x"
    assert (
        check_url("https://93.184.215.14/hook") == "https://93.184.215.14/hook"
    )  # a public address
    with pytest.raises(WebhookRefused, match="must be an http or https URL"):
        check_url("ftp://files.example/x")
    with pytest.raises(WebhookRefused, match="does not resolve"):
        check_url("http://no-such-host.invalid/x")
    with pytest.raises(WebhookRefused, match="an http or https URL of at most 2000"):
        check_url(42)


def test_a_delivery_to_a_private_address_fails_without_calling_it(
    store: JobStore, registry: HandlerRegistry, worker_factory: Any, receiver: Receiver
) -> None:
    registry.handler("greet")(lambda ctx: "hi")
    # An app wrote the address itself (no enqueue to refuse it); the delivery checks it again.
    store.ref("sneaky").set(
        {
            "type": "greet",
            "status": "pending",
            "metadata": {},
            "webhook": "http://169.254.169.254/computeMetadata/v1/",
        }
    )
    worker_factory(concurrency=1)
    delivery_id = wait_for(
        lambda: (store.get("sneaky") or store.get("x")).raw.get("webhookJobId"),
        20,
        message="webhookJobId",
    )  # type: ignore[union-attr]
    delivery = wait_finished(store, [delivery_id], 10)[delivery_id]
    assert (
        delivery.status is Status.FAILED
        and "169.254.169.254, a private, loopback, link-local or reserved address"
        in (delivery.error or "")
    )
    assert receiver.received == []


def test_a_process_killed_before_the_delivery_was_created_is_repaired_by_the_tick(
    client: JobsClient,
    store: JobStore,
    registry: HandlerRegistry,
    spawn_worker: Any,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job = client.enqueue("noop", {}, webhook=receiver.url)
    env = {
        "JOBS_TEST_KILL_BEFORE_RELEASE": "1",
        "JOBS_WEBHOOK_SECRET": SECRET,
        "JOBS_WEBHOOK_ALLOW": "127.0.0.1",
    }
    worker = spawn_worker("--concurrency", "1", env=env)
    assert worker.wait(30) == -signal.SIGKILL  # right after the job's final write
    ended = store.get(job.id)
    assert (
        ended is not None
        and ended.status is Status.COMPLETED
        and ended.raw["dependentsSettled"] is False
        and "webhookJobId" not in ended.raw
    )
    assert receiver.received == []

    monkeypatch.setattr("jobs_lib.engine.followups.REPAIR_GRACE_SECONDS", 0.0)
    summary = Functions(App(store.settings, registry=registry, runtime="function")).tick()
    assert summary["flows"] == {"released": 0, "ended": 0} and summary["claimed"] >= 1
    delivery_id = store.get(job.id).raw["webhookJobId"]  # type: ignore[union-attr]
    assert wait_finished(store, [delivery_id], 10)[delivery_id].status is Status.COMPLETED
    assert len(receiver.received) == 1 and verify(SECRET, *receiver.received[0])
    assert (
        Functions(App(store.settings, registry=registry, runtime="function")).tick()["claimed"] == 0
    )  # nothing twice
    assert len(receiver.received) == 1
