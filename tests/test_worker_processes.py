"""Several `jobs worker` processes at once, and workers killed or stopped halfway."""

from __future__ import annotations

import collections
import signal
import time
from typing import Any

from jobs_lib import JobsClient, Status
from jobs_lib.store import JobStore

from .conftest import wait_finished, wait_for


def count_status(store: JobStore, status: str) -> int:
    return store.count_by_status()[status]


def test_four_workers_run_500_jobs_each_exactly_once(
    client: JobsClient, store: JobStore, spawn_worker: Any
) -> None:
    users = [f"user{i}" for i in range(40)]
    expected: dict[str, set[str]] = {}
    batch = client.db.batch()
    for n in range(500):
        target = [users[n % 40], users[(n * 7 + 3) % 40]]
        job = client.enqueue("process_notifications", {"targetUsers": target}, batch=batch)
        expected[job.id] = set(target)
        if n % 250 == 249:
            batch.commit()
            batch = client.db.batch()
    workers = [spawn_worker("--concurrency", "8") for _ in range(4)]
    wait_for(
        lambda: count_status(store, "completed") == 500,
        timeout=240,
        interval=0.5,
        message="500 completed jobs",
    )
    for worker in workers:
        worker.signal(signal.SIGTERM)
    assert [w.wait(60) for w in workers] == [0, 0, 0, 0]

    jobs = {job_id: store.get(job_id) for job_id in expected}
    assert all(j is not None and j.status is Status.COMPLETED for j in jobs.values())
    assert {j.attempts for j in jobs.values() if j} == {1}  # nobody ran a job twice
    assert all(j is not None and j.result == len(expected[j.id]) for j in jobs.values())

    completed = collections.Counter(
        e["jobId"] for w in workers for e in w.events() if e.get("event") == "job_completed"
    )
    started = collections.Counter(
        e["jobId"] for w in workers for e in w.events() if e.get("event") == "job_claimed"
    )
    assert set(completed) == set(expected) and set(completed.values()) == {1}
    assert set(started.values()) == {1}
    per_worker = [sum(1 for e in w.events() if e.get("event") == "job_completed") for w in workers]
    assert sum(per_worker) == 500 and sum(1 for n in per_worker if n > 0) >= 2, per_worker

    notes = collections.Counter(
        (d.reference.parent.parent.id, d.id)
        for d in store.db.collection_group("notifications").stream()
    )
    assert len(notes) == sum(len(u) for u in expected.values())
    assert set(notes.values()) == {1}
    assert all(doc_id in expected and uid in expected[doc_id] for uid, doc_id in notes)


def test_a_worker_killed_mid_job_leaves_it_to_another_after_the_lease(
    client: JobsClient, store: JobStore, spawn_worker: Any
) -> None:
    job = client.enqueue("sleep", {"seconds": 3})
    doomed = spawn_worker("--lease", "2")
    wait_for(
        lambda: (
            (r := store.db.collection("runs").document(job.id).get()).exists
            and r.get("started") == 1
        ),
        message="the first run to start",
    )
    running = store.get(job.id)
    assert running is not None and running.status is Status.IN_PROGRESS and running.attempts == 1
    doomed.signal(signal.SIGKILL)
    doomed.wait(10)
    killed_at = time.monotonic()

    rescuer = spawn_worker("--lease", "2")
    done = wait_finished(store, [job.id], timeout=60)[job.id]
    assert done.status is Status.COMPLETED
    assert done.attempts == 2  # the killed attempt counts
    assert done.result["pid"] == rescuer.process.pid
    assert str(rescuer.process.pid) in done.lease.holder  # type: ignore[union-attr]
    runs = store.db.collection("runs").document(job.id).get().to_dict()
    assert runs["started"] == 2 and runs["finished"] == 1
    recovered = [e for e in rescuer.events() if e.get("event") == "job_recovered"]
    assert [e["jobId"] for e in recovered] == [job.id] and recovered[0]["attempt"] == 2
    assert time.monotonic() - killed_at < 30


def test_sigterm_lets_a_running_job_finish_within_the_grace_period(
    client: JobsClient, store: JobStore, spawn_worker: Any
) -> None:
    job = client.enqueue("sleep", {"seconds": 1.5})
    worker = spawn_worker("--grace", "20")
    wait_for(lambda: store.get(job.id).status is Status.IN_PROGRESS, message="the job to start")  # type: ignore[union-attr]
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    done = store.get(job.id)
    assert done is not None and done.status is Status.COMPLETED and done.attempts == 1
    names = [e.get("event") for e in worker.events()]
    assert (
        names.index("worker_stopping")
        < names.index("job_completed")
        < names.index("worker_stopped")
    )


def test_sigterm_after_the_grace_period_hands_the_job_back_at_once(
    client: JobsClient, store: JobStore, spawn_worker: Any
) -> None:
    job = client.enqueue("sleep", {"seconds": 4})
    first = spawn_worker("--grace", "0.5", "--lease", "30")
    wait_for(lambda: store.get(job.id).status is Status.IN_PROGRESS, message="the job to start")  # type: ignore[union-attr]
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 0
    released = store.get(job.id)
    assert released is not None and released.status is Status.PENDING and released.attempts == 0
    assert any(e.get("event") == "job_released" for e in first.events())

    second = spawn_worker("--lease", "30")
    handed_over = time.monotonic()
    done = wait_finished(store, [job.id], timeout=30)[job.id]
    # Taken at once, not after the 30 s lease: the sleep is 4 s.
    assert (
        done.status is Status.COMPLETED
        and done.attempts == 1
        and time.monotonic() - handed_over < 20
    )
    assert done.result["pid"] == second.process.pid
