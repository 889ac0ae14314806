"""Poison jobs end failed with an error a person can act on; the worker and other jobs carry on."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from jobs_lib import JobContext, JobsClient, Status
from jobs_lib.registry import HandlerRegistry
from jobs_lib.store import JobStore

from .conftest import wait_finished

GOOD = {"type": "process_notifications", "status": "pending", "metadata": {"targetUsers": ["u1"]}}


def now() -> datetime:
    return datetime.now(UTC)


@pytest.mark.parametrize(
    ("document", "expected_error"),
    [
        (
            {"type": "send_fax", "status": "pending"},
            "no handler is registered for job type 'send_fax'",
        ),
        (
            {
                "type": "process_notifications",
                "status": "pending",
                "metadata": {"targetUsers": "everyone"},
            },
            "metadata is not valid input for process_notifications: metadata.targetUsers: Input "
            "should be a valid list",
        ),
        (
            {"type": "process_notifications", "status": "pending", "metadata": "targetUsers=u1"},
            "metadata must be a map of input parameters, got str",
        ),
        (
            {
                "type": "process_notifications",
                "status": "pending",
                "scheduledFor": "tomorrow morning",
            },
            "scheduledFor 'tomorrow morning' is not a timestamp",
        ),
        (
            {"type": "process_notifications", "status": "pending", "scheduledFor": 1745732376},
            "scheduledFor has type int",
        ),
        ({"status": "pending", "metadata": {}}, "type is missing"),
        (
            {"type": "process_notifications", "status": "pending", "maxAttempts": "three"},
            "maxAttempts must be a whole number",
        ),
    ],
    ids=[
        "unknown-type",
        "invalid-metadata",
        "non-map-metadata",
        "unparseable-timestamp",
        "numeric-timestamp",
        "missing-type",
        "bad-max-attempts",
    ],
)
def test_malformed_job_fails_with_its_reason_while_a_good_job_completes(
    store: JobStore, worker_factory: Any, document: dict[str, Any], expected_error: str
) -> None:
    bad, good = store.collection.document(), store.collection.document()
    bad.set({"scheduledFor": now(), **document})
    good.set({**GOOD, "scheduledFor": now()})
    worker_factory()
    jobs = wait_finished(store, [bad.id, good.id])
    assert jobs[bad.id].status is Status.FAILED
    assert expected_error in (jobs[bad.id].error or ""), jobs[bad.id].error
    assert jobs[bad.id].completed_at is not None
    assert jobs[good.id].status is Status.COMPLETED and jobs[good.id].result == 1


def test_results_that_cannot_be_stored_fail_the_job(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    @registry.handler("returns_object", max_attempts=3)
    def returns_object(ctx: JobContext[Any]) -> Any:
        return {"when": object()}

    @registry.handler("returns_huge", max_attempts=3)
    def returns_huge(ctx: JobContext[Any]) -> Any:
        return "x" * 1_200_000

    @registry.handler("returns_nan")
    def returns_nan(ctx: JobContext[Any]) -> Any:
        return [1.0, float("nan")]

    ids = [client.enqueue(t, {}).id for t in ("returns_object", "returns_huge", "returns_nan")]
    good = client.enqueue("process_notifications", {"targetUsers": ["a", "b"]})
    worker_factory()
    jobs = wait_finished(store, [*ids, good.id])
    obj, huge, nan = (jobs[i] for i in ids)
    assert obj.status is Status.FAILED and "result.when is a builtins.object, not JSON-like" in (
        obj.error or ""
    )
    assert obj.attempts == 1  # not retried: the same code returns the same value
    assert (
        huge.status is Status.FAILED
        and "1,200,00" in (huge.error or "")
        and "1 MiB" in (huge.error or "")
    )
    assert "result" not in huge.raw
    assert nan.status is Status.FAILED and "nan" in (nan.error or "")
    assert jobs[good.id].result == 2


def test_a_crashing_handler_does_not_stop_the_worker(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    @registry.handler("explodes", max_attempts=1)
    def explodes(ctx: JobContext[Any]) -> None:
        raise SystemError("segfault-ish")

    bad = [client.enqueue("explodes", {}).id for _ in range(3)]
    good = [
        client.enqueue("process_notifications", {"targetUsers": [f"u{i}"]}).id for i in range(5)
    ]
    worker_factory(concurrency=2)
    jobs = wait_finished(store, bad + good)
    assert all(
        jobs[i].status is Status.FAILED and "SystemError: segfault-ish" in (jobs[i].error or "")
        for i in bad
    )
    assert all(jobs[i].status is Status.COMPLETED for i in good)


def test_unknown_status_words_are_never_run(store: JobStore, worker_factory: Any) -> None:
    odd = store.collection.document()
    odd.set({**GOOD, "status": "queued", "scheduledFor": now()})
    good = store.collection.document()
    good.set({**GOOD, "scheduledFor": now()})
    worker_factory()
    jobs = wait_finished(store, [good.id, odd.id])
    # The worker's lanes select status == "pending"; a foreign status word is never run: the
    # odd-status lane fails it, naming the value (as the created-event path does).
    assert jobs[good.id].status is Status.COMPLETED
    assert jobs[odd.id].status is Status.FAILED and "status 'queued' is not one of" in (
        jobs[odd.id].error or ""
    )
    assert jobs[odd.id].attempts == 0 and jobs[odd.id].started_at is None
