"""Every write after the claim is fenced: a run that lost its lease can never overwrite the job."""

from __future__ import annotations

import time
from typing import Any

import pytest

from jobs_lib import JobsClient, Status
from jobs_lib.engine.recorder import Recorder
from jobs_lib.model.outcomes import Completed, Failed, Update
from jobs_lib.store import JobStore, WriteStatus

from .conftest import wait_finished, wait_for


def claim_one(store: JobStore, job_id: str, holder: str, lease: float) -> Any:
    job = store.get(job_id)
    assert job is not None
    [claim] = store.claim([job], holder, lease)
    assert claim is not None
    return claim


def test_two_claimers_of_one_version_get_one_claim(client: JobsClient, store: JobStore) -> None:
    job = client.enqueue("process_notifications", {})
    first = store.claim([job], "a", 30)
    second = store.claim([job], "b", 30)  # the same version as read: refused
    assert first[0] is not None and second == [None]
    assert store.get(job.id).lease.holder == "a"  # type: ignore[union-attr]


def test_stale_worker_completion_is_refused_after_its_lease_passed_to_another(
    client: JobsClient, store: JobStore, worker_factory: Any
) -> None:
    job = client.enqueue("process_notifications", {"targetUsers": ["x"]})
    stale = claim_one(
        store, job.id, "stale-worker", lease=1.0
    )  # claimed, then never renewed: a stalled process
    time.sleep(1.2)
    worker_factory()  # recovers the expired lease and completes the job
    done = wait_finished(store, [job.id])[job.id]
    assert done.status is Status.COMPLETED and done.attempts == 2 and done.result == 1
    assert done.lease is not None and done.lease.holder != "stale-worker"

    recorder = Recorder(JobStore(store.settings))
    outcome = recorder.write(stale, Update(outcome=Failed("stale worker says it failed")))
    recorder.close()
    assert outcome.status is WriteStatus.LOST
    after = store.get(job.id)
    assert after is not None
    assert (after.status, after.result, after.error) == (Status.COMPLETED, 1, None)


def test_renewal_by_a_superseded_holder_is_refused(client: JobsClient, store: JobStore) -> None:
    job = client.enqueue("process_notifications", {})
    old = claim_one(store, job.id, "old", lease=0.5)
    time.sleep(0.6)
    new = claim_one(store, job.id, "new", lease=30)
    recorder = Recorder(JobStore(store.settings))
    assert recorder.write(old, Update(lease_expires_at=store.now())).status is WriteStatus.LOST
    assert recorder.write(new, Update(progress={"percent": 10})).status is WriteStatus.OK
    recorder.close()
    assert store.get(job.id).lease.holder == "new"  # type: ignore[union-attr]


def test_owner_writes_do_not_break_the_holders_fence(client: JobsClient, store: JobStore) -> None:
    job = client.enqueue("process_notifications", {})
    claim = claim_one(store, job.id, "holder", lease=30)
    client.cancel(job.id)  # a running job: sets cancelRequested, changes the document's version
    recorder = Recorder(JobStore(store.settings))
    outcome = recorder.write(claim, Update(progress={"percent": 50}))
    assert (
        outcome.status is WriteStatus.OK and outcome.cancel_requested
    )  # written, and the holder learns of the request
    assert claim.cancel_requested
    recorder.close()
    assert store.get(job.id).progress["percent"] == 50  # type: ignore[index, union-attr]


def test_a_final_write_repeated_after_a_lost_answer_is_recognised(
    client: JobsClient, store: JobStore
) -> None:
    job = client.enqueue("process_notifications", {})
    claim = claim_one(store, job.id, "holder", lease=30)
    version_before = claim.version
    recorder = Recorder(JobStore(store.settings))
    assert recorder.write(claim, Update(outcome=Completed(3))).status is WriteStatus.OK
    claim.version = version_before  # as if the answer to that write never arrived
    again = recorder.write(claim, Update(outcome=Completed(3)))
    recorder.close()
    assert again.status is WriteStatus.OK and again.detail == "already written"
    assert store.get(job.id).result == 3  # type: ignore[union-attr]


def test_writes_to_a_deleted_job_are_refused(client: JobsClient, store: JobStore) -> None:
    job = client.enqueue("process_notifications", {})
    claim = claim_one(store, job.id, "holder", lease=30)
    store.ref(job.id).delete()
    recorder = Recorder(JobStore(store.settings))
    outcome = recorder.write(claim, Update(outcome=Completed(1)))
    recorder.close()
    assert outcome.status is WriteStatus.LOST
    assert store.get(job.id) is None


def test_expired_lease_with_no_attempts_left_ends_failed(
    client: JobsClient, store: JobStore, worker_factory: Any
) -> None:
    job = client.enqueue("process_notifications", {}, max_attempts=1)
    claim_one(store, job.id, "dead-worker", lease=0.5)
    time.sleep(0.6)
    worker_factory()
    done = wait_for(
        lambda: (j := store.get(job.id)) and j.status is Status.FAILED and j,
        message="the job to fail",
    )
    assert done.attempts == 1
    assert "lease expired" in (done.error or "") and "attempt 1 of 1" in (done.error or "")


@pytest.mark.parametrize("lease", [0.6])
def test_a_live_job_longer_than_its_lease_is_never_taken_for_dead(
    client: JobsClient, store: JobStore, registry: Any, worker_factory: Any, lease: float
) -> None:
    from jobs_lib import JobContext

    @registry.handler("long", timeout=30)
    def long(ctx: JobContext[Any]) -> int:
        time.sleep(lease * 6)
        return ctx.attempt

    job = client.enqueue("long", {})
    worker_factory(lease_seconds=lease)
    worker_factory(lease_seconds=lease)  # a second worker watching for expired leases
    done = wait_finished(store, [job.id])[job.id]
    assert done.status is Status.COMPLETED and done.attempts == 1 and done.result == 1
