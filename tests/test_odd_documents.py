"""Every document in the collection ends somewhere a person can see, whatever an app wrote.

Statuses that are none of ours end failed naming the value; a null status is read as pending;
a job an app marked in_progress itself (no lease of ours) is an orphan once untouched for
`orphan_seconds`, recovered or failed by its attempts like an expired lease. The worker finds
them through cheap queries (`status not-in ours`, `status == null`, a page of the running set).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from jobs_lib import Settings, Status
from jobs_lib.engine.discovery import Discovery
from jobs_lib.engine.runner import Engine
from jobs_lib.registry import HandlerRegistry
from jobs_lib.store import JobStore
from jobs_lib.worker import Worker

from .conftest import wait_finished

#: Each odd status, and how the error names it.
ODD = {
    "odd-number": (3, "status (3, a number) is not one of"),
    "odd-true": (True, "status true is not one of"),
    "odd-map": ({"state": "pending"}, "status (a map with keys state) is not one of"),
    "odd-array": (["pending"], "status (an array of 1) is not one of"),
    "odd-timestamp": (
        datetime(2025, 4, 27, tzinfo=UTC),
        "status (a timestamp, 2025-04-27T00:00:00+00:00) is not one of",
    ),
    "odd-done": ("done", "status 'done' is not one of"),
    "odd-x": ("x", "status 'x' is not one of"),
    "odd-queued": ("queued", "status 'queued' is not one of"),
}


@pytest.fixture
def quick_worker(settings: Settings, registry: HandlerRegistry) -> Iterator[Callable[..., Worker]]:
    """Workers whose slow lanes turn every half second, with orphans after 2 s (production: 300
    s)."""
    started: list[tuple[Worker, threading.Thread]] = []

    def start() -> Worker:
        store = JobStore(settings.with_(orphan_seconds=2))
        engine = Engine(store, registry, lease_seconds=5)
        worker = Worker(
            engine,
            concurrency=4,
            poll_interval=0.05,
            discovery=Discovery(
                store, lease_seconds=5, holder=engine.holder, scan_interval=0.5, slow_interval=0.5
            ),
        )
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        started.append((worker, thread))
        return worker

    yield start
    for worker, thread in started:
        worker.stop()
        thread.join(30)


def test_statuses_that_are_not_ours_end_failed_naming_the_value(
    store: JobStore, quick_worker: Callable[..., Worker]
) -> None:
    for job_id, (status, _message) in ODD.items():
        store.ref(job_id).set(
            {"type": "process_notifications", "status": status, "metadata": {"targetUsers": ["u"]}}
        )
    store.ref("null-status").set(
        {"type": "process_notifications", "status": None, "metadata": {"targetUsers": ["u"]}}
    )
    quick_worker()
    jobs = wait_finished(store, [*ODD, "null-status"], timeout=30)
    for job_id, (_status, message) in ODD.items():
        job = jobs[job_id]
        assert job.status is Status.FAILED, job_id
        assert (
            job.error is not None
            and message in job.error
            and "create jobs with status 'pending'" in job.error
        ), (job_id, job.error)
    assert jobs["null-status"].status is Status.COMPLETED  # null reads as absent: pending


def test_an_apps_own_in_progress_is_an_orphan_after_a_bounded_time(
    store: JobStore, quick_worker: Callable[..., Worker]
) -> None:
    started = datetime.now(UTC).isoformat()
    store.ref("app-marked").set(
        {
            "type": "process_notifications",
            "status": "in_progress",
            "startedAt": started,
            "metadata": {"targetUsers": ["u"]},
        }
    )  # the original app's write
    store.ref("wrong-lease").set(
        {
            "type": "process_notifications",
            "status": "in_progress",
            "lease": "mine",
            "metadata": {"targetUsers": ["u"]},
        }
    )
    store.ref("half-lease").set(
        {
            "type": "process_notifications",
            "status": "in_progress",
            "lease": {"holder": "someone"},
            "metadata": {"targetUsers": ["u"]},
        }
    )
    store.ref("no-attempts-left").set(
        {
            "type": "process_notifications",
            "status": "in_progress",
            "attempts": 3,
            "maxAttempts": 3,
            "metadata": {},
        }
    )
    quick_worker()
    quick_worker()  # two workers find the same orphans: each is recovered once
    jobs = wait_finished(
        store, ["app-marked", "wrong-lease", "half-lease", "no-attempts-left"], timeout=40
    )
    for job_id in ("app-marked", "wrong-lease", "half-lease"):
        job = jobs[job_id]
        assert job.status is Status.COMPLETED and job.attempts == 1, (job_id, job)
    dead = jobs["no-attempts-left"]
    assert (
        dead.status is Status.FAILED
        and "without a lease of jobs_lib's" in (dead.error or "")
        and "attempt 3 of 3" in (dead.error or "")
    )


def test_an_orphan_is_left_alone_while_its_owner_may_still_be_working(
    store: JobStore, settings: Settings, registry: HandlerRegistry
) -> None:
    store.ref("fresh").set(
        {
            "type": "process_notifications",
            "status": "in_progress",
            "metadata": {"targetUsers": ["u"]},
        }
    )
    patient = Engine(JobStore(settings.with_(orphan_seconds=600)), registry)
    job = patient.store.get("fresh")
    assert job is not None
    triage = patient.triage(job, patient.store.now())
    assert triage.verdict.value == "skip" and "orphaned after 600s" in triage.reason
    patient.close()
