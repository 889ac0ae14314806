"""Claim, run, record, against the emulator: what a user sees in the job documents."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobs_lib import Backoff, JobContext, JobsClient, PermanentError, Status
from jobs_lib.registry import HandlerRegistry
from jobs_lib.store import JobStore

from .conftest import wait_finished, wait_for


def events(
    caplog: pytest.LogCaptureFixture, name: str, job_id: str | None = None
) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if getattr(r, "event", None) == name
        and (job_id is None or getattr(r, "jobId", None) == job_id)
    ]


def test_enqueued_job_runs_and_its_document_records_everything(
    client: JobsClient, store: JobStore, worker_factory: Any
) -> None:
    job = client.enqueue(
        "process_notifications",
        {
            "targetUsers": ["ana", "ben", "ana"],
            "notificationType": "course_reminder",
            "title": "Hi",
        },
    )
    assert job.status is Status.PENDING and job.attempts == 0
    assert isinstance(job.raw["scheduledFor"], datetime) and isinstance(
        job.raw["createdAt"], datetime
    )
    worker_factory()
    done = wait_finished(store, [job.id])[job.id]
    assert done.status is Status.COMPLETED
    assert done.result == 2  # ana listed twice is notified once
    assert done.attempts == 1
    assert (
        done.started_at is not None
        and done.completed_at is not None
        and done.started_at <= done.completed_at
    )
    assert done.error is None
    assert (
        done.progress is not None
        and done.progress["percent"] == 100.0
        and done.progress["totalSteps"] == 1
    )
    assert "leaseExpiresAt" not in done.raw and done.lease is not None
    assert done.raw["expireAt"] > datetime.now(UTC) + timedelta(days=29)
    notes = {
        d.reference.parent.parent.id: d.to_dict()
        for d in store.db.collection_group("notifications").stream()
    }
    assert set(notes) == {"ana", "ben"}
    assert (
        notes["ana"]["type"] == "course_reminder"
        and notes["ana"]["jobId"] == job.id
        and notes["ana"]["title"] == "Hi"
    )


def test_seed_000_document_with_string_timestamps_completes(
    store: JobStore, worker_factory: Any
) -> None:
    ref = store.collection.document()
    ref.set(
        {
            "createdAt": "2025-04-27T05:39:36.941Z",
            "metadata": {},
            "scheduledFor": "2025-04-27T05:39:36.941Z",
            "status": "pending",
            "type": "process_notifications",
        }
    )
    worker_factory()
    done = wait_finished(store, [ref.id])[ref.id]
    assert done.status is Status.COMPLETED
    assert done.result == 0
    assert (
        done.raw["createdAt"] == "2025-04-27T05:39:36.941Z"
    )  # the app's own fields are left as written
    assert done.attempts == 1


def test_iso_timestamp_mode_writes_strings_and_still_runs(
    settings: Any, registry: HandlerRegistry, engine_factory: Any
) -> None:
    from dataclasses import replace

    from jobs_lib.engine.runner import Engine
    from jobs_lib.worker import Worker

    iso_store = JobStore(replace(settings, timestamps="iso"))
    client = JobsClient(store=iso_store, registry=registry)
    job = client.enqueue("process_notifications", {"targetUsers": ["u"]})
    assert isinstance(job.raw["createdAt"], str) and job.raw["createdAt"].endswith("Z")
    worker = Worker(Engine(iso_store, registry, lease_seconds=5), concurrency=2, poll_interval=0.05)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        done = wait_finished(iso_store, [job.id])[job.id]
    finally:
        worker.stop()
        thread.join(10)
    assert done.status is Status.COMPLETED
    assert isinstance(done.raw["startedAt"], str) and isinstance(done.raw["completedAt"], str)


def test_failing_twice_then_succeeding_ends_completed_after_three_attempts(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    runs: list[int] = []

    @registry.handler("flaky", max_attempts=5, backoff=Backoff.fixed(0.1))
    def flaky(ctx: JobContext[Any]) -> str:
        runs.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError(f"upstream down on attempt {ctx.attempt}")
        return "ok"

    job = client.enqueue("flaky", {})
    worker_factory()
    done = wait_finished(store, [job.id])[job.id]
    assert done.status is Status.COMPLETED
    assert done.attempts == 3
    assert done.result == "ok"
    assert done.error is None and "errorDetails" not in done.raw
    assert runs == [1, 2, 3]


def test_a_failed_attempt_goes_back_to_pending_with_backoff_and_the_error_kept(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    @registry.handler("fails_once", max_attempts=2, backoff=Backoff.fixed(30))
    def fails_once(ctx: JobContext[Any]) -> None:
        raise ValueError("bad gateway")

    job = client.enqueue("fails_once", {})
    worker_factory()
    waiting = wait_for(
        lambda: (j := store.get(job.id)) and j.attempts == 1 and j.status is Status.PENDING and j,
        message="the retry state",
    )
    assert waiting.error == "ValueError: bad gateway"
    assert waiting.raw["errorDetails"]["attempt"] == 1
    assert waiting.raw["errorDetails"]["errorType"] == "ValueError"
    assert "bad gateway" in waiting.raw["errorDetails"]["traceback"]
    assert waiting.scheduled_for is not None
    assert (
        timedelta(seconds=25) < waiting.scheduled_for - waiting.started_at < timedelta(seconds=35)
    )  # type: ignore[operator]


def test_exhausted_attempts_end_failed_with_the_last_error(
    client: JobsClient,
    store: JobStore,
    registry: HandlerRegistry,
    worker_factory: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    @registry.handler("always_fails", max_attempts=2, backoff=Backoff.fixed(0.05))
    def always_fails(ctx: JobContext[Any]) -> None:
        raise RuntimeError("disk full")

    job = client.enqueue("always_fails", {})
    worker_factory()
    done = wait_finished(store, [job.id])[job.id]
    assert done.status is Status.FAILED
    assert done.attempts == 2
    assert done.error == "RuntimeError: disk full (attempt 2 of 2, no attempts left)"
    assert done.completed_at is not None
    # The worker logs the outcome just after its write lands: wait for the line, then count.
    wait_for(lambda: events(caplog, "job_failed", job.id), 5, message="the job_failed line")
    assert len(events(caplog, "job_retrying", job.id)) == 1
    assert len(events(caplog, "job_failed", job.id)) == 1


def test_max_attempts_on_the_document_overrides_the_handler(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    @registry.handler("fails", max_attempts=5, backoff=Backoff.fixed(0.05))
    def fails(ctx: JobContext[Any]) -> None:
        raise RuntimeError("no")

    job = client.enqueue("fails", {}, max_attempts=1)
    worker_factory()
    assert wait_finished(store, [job.id])[job.id].attempts == 1


def test_permanent_error_fails_without_retrying(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    @registry.handler("refuses", max_attempts=5)
    def refuses(ctx: JobContext[Any]) -> None:
        raise PermanentError("account closed")

    job = client.enqueue("refuses", {})
    worker_factory()
    done = wait_finished(store, [job.id])[job.id]
    assert (done.status, done.attempts, done.error) == (
        Status.FAILED,
        1,
        "PermanentError: account closed",
    )


def test_future_jobs_wait_until_they_are_due(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    started: dict[str, datetime] = {}

    @registry.handler("stamp")
    def stamp(ctx: JobContext[Any]) -> None:
        started[ctx.job_id] = datetime.now(UTC)

    due_at = datetime.now(UTC) + timedelta(seconds=1.5)
    later = client.enqueue("stamp", {}, scheduled_for=due_at)
    far = client.enqueue("stamp", {}, scheduled_for=datetime.now(UTC) + timedelta(hours=1))
    worker_factory()
    wait_finished(store, [later.id])
    assert started[later.id] >= due_at - timedelta(
        milliseconds=50
    )  # the emulator's clock is this machine's
    assert store.get(far.id).status is Status.PENDING  # type: ignore[union-attr]
    assert far.id not in started


def test_string_scheduled_for_in_the_future_waits_too(store: JobStore, worker_factory: Any) -> None:
    soon, later = store.collection.document(), store.collection.document()
    soon.set(
        {
            "type": "process_notifications",
            "status": "pending",
            "scheduledFor": (datetime.now(UTC) + timedelta(seconds=1)).isoformat(),
        }
    )
    later.set(
        {
            "type": "process_notifications",
            "status": "pending",
            "scheduledFor": "2999-01-01T00:00:00.000Z",
        }
    )
    worker_factory()
    assert wait_finished(store, [soon.id])[soon.id].status is Status.COMPLETED
    time.sleep(1.2)  # a few more poll cycles
    assert store.get(later.id).status is Status.PENDING  # type: ignore[union-attr]


def test_document_without_scheduled_for_is_found_by_the_pending_scan(
    store: JobStore, worker_factory: Any
) -> None:
    ref = store.collection.document()
    ref.set(
        {"type": "process_notifications", "status": "pending", "metadata": {"targetUsers": ["z"]}}
    )
    worker_factory()
    assert wait_finished(store, [ref.id])[ref.id].result == 1


def test_higher_priority_runs_first_among_due_jobs(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    order: list[int] = []

    @registry.handler("ordered")
    def ordered(ctx: JobContext[Any]) -> None:
        order.append(ctx.metadata["n"])

    past = datetime.now(UTC) - timedelta(minutes=1)
    ids = [
        client.enqueue(
            "ordered", {"n": n}, priority=p, scheduled_for=past + timedelta(seconds=n)
        ).id
        for n, p in [(0, 0), (1, 0), (2, 5), (3, 0), (4, 9)]
    ]
    worker_factory(concurrency=1)
    wait_finished(store, ids)
    assert order[:2] == [4, 2]
    assert order[2:] == [0, 1, 3]


def test_cancel_requested_on_a_pending_job_ends_it_cancelled_without_running(
    store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    ran: list[str] = []

    @registry.handler("never")
    def never(ctx: JobContext[Any]) -> None:
        ran.append(ctx.job_id)

    ref = store.collection.document()
    ref.set(
        {
            "type": "never",
            "status": "pending",
            "cancelRequested": True,
            "scheduledFor": datetime.now(UTC),
        }
    )
    worker_factory()
    done = wait_finished(store, [ref.id])[ref.id]
    assert done.status is Status.CANCELLED
    assert done.attempts == 0 and ran == []


def test_progress_reports_are_written_to_the_document(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    release = threading.Event()

    @registry.handler("steps")
    def steps(ctx: JobContext[Any]) -> int:
        ctx.progress(40, "loading rows", step=2, total_steps=5)
        release.wait(10)
        return 5

    job = client.enqueue("steps", {})
    worker_factory()
    seen = wait_for(
        lambda: (
            (j := store.get(job.id))
            and j.progress
            and j.progress.get("percent") == 40
            and j.progress
        ),
        message="progress in the document",
    )
    assert (
        seen["message"] == "loading rows" and seen["currentStep"] == 2 and seen["totalSteps"] == 5
    )
    assert isinstance(seen["updatedAt"], datetime)
    release.set()
    assert wait_finished(store, [job.id])[job.id].status is Status.COMPLETED


def test_progress_rejects_nonsense(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    @registry.handler("bad_progress", max_attempts=1)
    def bad_progress(ctx: JobContext[Any]) -> None:
        ctx.progress(140)

    job = client.enqueue("bad_progress", {})
    worker_factory()
    done = wait_finished(store, [job.id])[job.id]
    assert done.status is Status.FAILED and "between 0 and 100" in (done.error or "")


def test_timeout_abandons_the_attempt_and_refuses_its_late_result(
    client: JobsClient,
    store: JobStore,
    registry: HandlerRegistry,
    worker_factory: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    finished = threading.Event()

    @registry.handler("slowpoke", timeout=0.5, max_attempts=1)
    def slowpoke(ctx: JobContext[Any]) -> str:
        time.sleep(2)
        finished.set()
        return "too late"

    job = client.enqueue("slowpoke", {})
    worker_factory()
    done = wait_finished(store, [job.id])[job.id]
    assert done.status is Status.FAILED
    assert "did not finish within its timeout of 0.5s" in (done.error or "")
    assert done.raw["errorDetails"]["reason"] == "timeout"
    assert finished.wait(5)
    wait_for(
        lambda: events(caplog, "job_result_refused", job.id),
        message="the late result to be refused",
    )
    assert store.get(job.id).status is Status.FAILED  # type: ignore[union-attr]
    assert store.get(job.id).result is None  # type: ignore[union-attr]


def test_async_handlers_run_and_time_out_too(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    import asyncio

    @registry.handler("async_ok")
    async def async_ok(ctx: JobContext[Any]) -> int:
        await asyncio.sleep(0.01)
        return 7

    @registry.handler("async_slow", timeout=0.3, max_attempts=1)
    async def async_slow(ctx: JobContext[Any]) -> int:
        await asyncio.sleep(30)
        return 0

    ok, slow = client.enqueue("async_ok", {}), client.enqueue("async_slow", {})
    worker_factory()
    jobs = wait_finished(store, [ok.id, slow.id])
    assert jobs[ok.id].result == 7
    assert jobs[slow.id].status is Status.FAILED and "timeout of 0.3s" in (
        jobs[slow.id].error or ""
    )


def test_handler_logger_tags_lines_with_the_job(
    client: JobsClient,
    store: JobStore,
    registry: HandlerRegistry,
    worker_factory: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    @registry.handler("chatty")
    def chatty(ctx: JobContext[Any]) -> None:
        ctx.logger.warning("halfway there")

    caplog.set_level(logging.INFO)
    job = client.enqueue("chatty", {})
    worker_factory()
    wait_finished(store, [job.id])
    [line] = [r for r in caplog.records if r.getMessage() == "halfway there"]
    assert (line.jobId, line.type, line.attempt) == (job.id, "chatty", 1)  # type: ignore[attr-defined]
    for name in ("job_claimed", "job_completed"):
        [record] = events(caplog, name, job.id)
        assert record.type == "chatty" and record.attempt == 1  # type: ignore[attr-defined]
    assert events(caplog, "job_completed", job.id)[0].durationMs >= 0  # type: ignore[attr-defined]
