"""End to end through `jobs dev`'s pieces: the emulator's real trigger delivery, the functions in
functions-framework processes, Cloud Scheduler-style ticks. No worker runs in this module."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobs_lib import JobsClient, Status
from jobs_lib.config import Settings
from jobs_lib.devstack.dev import DevStack
from jobs_lib.errors import EmulatorUnavailable
from jobs_lib.store import JobStore

from .conftest import ROOT, wait_finished, wait_for


@pytest.fixture(scope="module")
def stack() -> Iterator[DevStack]:
    # Continuable handlers run slices of at most 0.2 s here (test_a_continuable_job_...).
    dev = DevStack(
        project="demo-jobs-dev",
        handlers="tests.handlers_for_tests",
        tick_interval=None,
        env={"PYTHONPATH": str(ROOT), "JOBS_SLICE_SECONDS": "0.2"},
    )
    try:
        dev.start()
    except EmulatorUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    yield dev
    dev.stop()


@pytest.fixture
def dev_store(stack: DevStack) -> JobStore:
    assert stack.emulator is not None
    stack.emulator.clear()
    return JobStore(Settings(project=stack.project))


@pytest.fixture
def dev_client(dev_store: JobStore) -> JobsClient:
    return JobsClient(store=dev_store)


def function_events(stack: DevStack, target: str, name: str) -> list[dict[str, Any]]:
    entries = []
    for line in stack.hosts[target].log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("event") == name:
            entries.append(entry)
    return entries


def runs(store: JobStore, job_id: str) -> dict[str, Any]:
    return store.db.collection("runs").document(job_id).get().to_dict() or {}


def test_jobs_run_from_the_emulators_created_events(
    stack: DevStack, dev_client: JobsClient, dev_store: JobStore
) -> None:
    ids = [
        dev_client.enqueue("process_notifications", {"targetUsers": [f"u{i}", "shared"]}).id
        for i in range(5)
    ]
    seed = (
        dev_store.collection.document()
    )  # the original app's document, as a browser writes it: string timestamps, no status
    seed.set(
        {
            "createdAt": "2025-04-27T05:39:36.941Z",
            "metadata": {},
            "scheduledFor": "2025-04-27T05:39:36.941Z",
            "type": "process_notifications",
        }
    )
    jobs = wait_finished(dev_store, [*ids, seed.id], timeout=30)
    assert all(jobs[i].status is Status.COMPLETED and jobs[i].result == 2 for i in ids)
    assert jobs[seed.id].status is Status.COMPLETED and jobs[seed.id].result == 0
    claimed = {e["jobId"] for e in function_events(stack, "on_job_created", "job_claimed")}
    assert {*ids, seed.id} <= claimed  # run by the created-event function, not by a tick
    assert stack.ticks == []


def test_a_job_created_while_the_function_host_is_down_is_completed_by_the_next_tick(
    stack: DevStack, dev_client: JobsClient, dev_store: JobStore
) -> None:
    assert stack.dispatcher is not None
    stack.hosts["on_job_created"].stop()
    dropped = stack.dispatcher.dropped
    try:
        job = dev_client.enqueue("sleep", {"seconds": 0})
        wait_for(
            lambda: stack.dispatcher.dropped > dropped,
            timeout=20,
            message="the event to be dropped",
        )  # type: ignore[union-attr]
        assert dev_store.get(job.id).status is Status.PENDING  # type: ignore[union-attr]
        summary = stack.tick_now()
        assert summary["claimed"] == 1
        assert dev_store.get(job.id).status is Status.COMPLETED  # type: ignore[union-attr]
    finally:
        stack.start_host("on_job_created", "cloudevent")
        stack.wait_for_hosts()
    again = dev_client.enqueue("sleep", {"seconds": 0})
    assert wait_finished(dev_store, [again.id], timeout=20)[again.id].status is Status.COMPLETED


def test_a_poison_document_fails_and_the_next_job_still_runs(
    stack: DevStack, dev_client: JobsClient, dev_store: JobStore
) -> None:
    poison = dev_store.collection.document()
    poison.set(
        {"type": "process_notifications", "status": "pending", "metadata": ["not", "a", "map"]}
    )
    unknown = dev_client.enqueue("no_such_handler", {})
    good = dev_client.enqueue("process_notifications", {"targetUsers": ["a"]})
    jobs = wait_finished(dev_store, [poison.id, unknown.id, good.id], timeout=20)
    assert jobs[poison.id].status is Status.FAILED and "metadata must be a map" in (
        jobs[poison.id].error or ""
    )
    assert jobs[unknown.id].status is Status.FAILED and "no handler is registered" in (
        jobs[unknown.id].error or ""
    )
    assert jobs[good.id].status is Status.COMPLETED


def test_two_ticks_at_once_run_each_due_job_once(
    stack: DevStack, dev_client: JobsClient, dev_store: JobStore
) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=1.5)
    ids = [dev_client.enqueue("sleep", {"seconds": 0.2}, scheduled_for=soon).id for _ in range(8)]
    time.sleep(2)  # their created-events found them not yet due
    assert all(dev_store.get(i).status is Status.PENDING for i in ids)  # type: ignore[union-attr]
    answers: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda: answers.append(stack.tick_now())) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(a["claimed"] for a in answers) == 8
    assert all(runs(dev_store, i)["started"] == 1 for i in ids)
    assert all(dev_store.get(i).status is Status.COMPLETED for i in ids)  # type: ignore[union-attr]


def test_the_ticker_calls_the_tick_on_its_interval(dev_store: JobStore) -> None:
    with DevStack(
        project="demo-jobs-ticker", tick_interval=0.5, env={"PYTHONPATH": str(ROOT)}
    ) as dev:
        wait_for(lambda: len(dev.ticks) >= 2, timeout=30, message="two ticks")
        assert all(t["claimed"] == 0 for t in dev.ticks)


def test_a_continuable_job_runs_in_slices_on_the_functions_alone(
    stack: DevStack, dev_client: JobsClient, dev_store: JobStore
) -> None:
    """100,000 rows, a checkpoint every 1,000, slices of 0.2 s (JOBS_SLICE_SECONDS), no worker:
    first three ticks alone (the event function down), then created-events, each slice's
    continuation bringing the next one a created-event of its own (a wake-up document)."""
    assert stack.dispatcher is not None
    stack.hosts["on_job_created"].stop()
    try:
        job = dev_client.enqueue("rows", {"rows": 100_000, "pause": 0.05})
        for n in range(1, 4):
            assert stack.tick_now()["claimed"] >= 1  # a slice (or more) per tick
            after = dev_store.get(job.id)
            assert (
                after is not None
                and after.status is Status.PENDING
                and after.continuations >= n
                and 0 < after.cursor < 100_000
                and after.cursor % 1000 == 0
            )
        stack.start_host("on_job_created", "cloudevent")
        stack.wait_for_hosts()
        # Its continuation's wake-up reaches the event function now, which carries on.
        stack.tick_now()
        done = wait_finished(dev_store, [job.id], timeout=90)[job.id]
    finally:
        if stack.hosts["on_job_created"].process.poll() is not None:
            stack.start_host("on_job_created", "cloudevent")
            stack.wait_for_hosts()
    assert (
        done.status is Status.COMPLETED and done.result == {"rows": 100_000} and done.attempts == 1
    )
    chunks = {snap.id: snap.to_dict() for snap in dev_store.db.collection("chunks").stream()}
    assert sorted(chunks) == sorted(f"{job.id}-{n}" for n in range(100)) and {
        c["count"] for c in chunks.values()
    } == {1}  # every row once
    where = Counter(c["where"] for c in chunks.values())
    assert (
        where["tick"] >= 4
        and where["on_job_created"] >= 40
        and set(where) == {"tick", "on_job_created"}
    ), where
    assert done.continuations >= 20 and len(done.slice_ms) == min(done.continuations, 50)
    assert all(150 <= ms < 5000 for ms in done.slice_ms), done.slice_ms
    assert (
        done.active_ms >= sum(done.slice_ms) and done.cursor == 100_000
    )  # the last position it reached
    assert len(function_events(stack, "on_job_created", "job_continued")) >= 10
