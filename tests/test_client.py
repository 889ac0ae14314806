"""The Python client: enqueue (plain, idempotent, in a transaction or batch), get, cancel, retry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.cloud import firestore

from jobs_lib import ConfigurationError, InvalidJobState, JobNotFound, JobsClient, Status
from jobs_lib.store import JobStore

from .conftest import wait_finished


def test_enqueue_writes_a_complete_pending_document(client: JobsClient, store: JobStore) -> None:
    when = datetime.now(UTC) + timedelta(minutes=5)
    job = client.enqueue(
        "process_notifications",
        {"targetUsers": ["a"]},
        scheduled_for=when,
        priority=3,
        max_attempts=4,
        org_id="org1",
        created_by="u1",
    )
    raw = store.ref(job.id).get().to_dict()
    assert raw["type"] == "process_notifications" and raw["status"] == "pending"
    assert raw["metadata"] == {"targetUsers": ["a"]}
    assert raw["scheduledFor"] == when
    assert (raw["priority"], raw["maxAttempts"], raw["attempts"]) == (3, 4, 0)
    assert (raw["orgId"], raw["createdBy"]) == ("org1", "u1")
    assert isinstance(raw["createdAt"], datetime)


def test_enqueue_with_a_key_is_idempotent(client: JobsClient, store: JobStore) -> None:
    first = client.enqueue("process_notifications", {"targetUsers": ["a"]}, key="order-42")
    second = client.enqueue("process_notifications", {"targetUsers": ["b"]}, key="order-42")
    other_type = client.enqueue("noop_elsewhere", {}, key="order-42")
    assert first.id == second.id != other_type.id
    assert second.metadata == {"targetUsers": ["a"]}  # the first enqueue's job, unchanged
    assert len(list(store.collection.stream())) == 2


def test_enqueue_in_a_transaction_commits_with_the_apps_writes(
    client: JobsClient, store: JobStore
) -> None:
    db = client.db
    order = db.collection("orders").document("o1")

    @firestore.transactional
    def place(transaction: Any) -> str:
        # With a key, enqueue reads the job first; Firestore wants reads before writes.
        job = client.enqueue(
            "process_notifications",
            {"targetUsers": ["buyer"]},
            key="receipt-o1",
            transaction=transaction,
        )
        transaction.set(order, {"total": 10})
        return job.id

    job_id = place(db.transaction())
    assert order.get().exists
    assert store.get(job_id).status is Status.PENDING  # type: ignore[union-attr]
    # Run again: the key finds the job inside the transaction; still one job.
    assert place(db.transaction()) == job_id
    assert len(list(store.collection.stream())) == 1


def test_a_rolled_back_transaction_creates_no_job(client: JobsClient, store: JobStore) -> None:
    db = client.db

    @firestore.transactional
    def fails(transaction: Any) -> None:
        transaction.set(db.collection("orders").document("o2"), {"total": 5})
        client.enqueue("process_notifications", {}, transaction=transaction)
        raise RuntimeError("payment declined")

    with pytest.raises(RuntimeError):
        fails(db.transaction())
    assert list(store.collection.stream()) == []
    assert not db.collection("orders").document("o2").get().exists


def test_enqueue_in_a_batch(client: JobsClient, store: JobStore) -> None:
    batch = client.db.batch()
    batch.set(client.db.collection("orders").document("o3"), {"total": 1})
    job = client.enqueue("process_notifications", {"targetUsers": ["z"]}, batch=batch)
    assert store.get(job.id) is None
    batch.commit()
    assert store.get(job.id).status is Status.PENDING  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"type": ""}, "non-empty string type"),
        ({"type": "t", "metadata": [1]}, "metadata must be a dict"),
        ({"type": "t", "max_attempts": 0}, "at least 1"),
        ({"type": "t", "scheduled_for": datetime(2030, 1, 1)}, "timezone-aware"),
    ],
)
def test_enqueue_refuses_bad_arguments(
    client: JobsClient, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        client.enqueue(**kwargs)


def test_get_and_not_found(client: JobsClient) -> None:
    job = client.enqueue("process_notifications", {})
    assert client.get(job.id).id == job.id
    with pytest.raises(JobNotFound):
        client.get("missing")


def test_cancel_a_pending_job(client: JobsClient) -> None:
    job = client.enqueue("process_notifications", {})
    cancelled = client.cancel(job.id)
    assert cancelled.status is Status.CANCELLED and cancelled.completed_at is not None
    with pytest.raises(
        InvalidJobState, match="only pending, blocked and running jobs can be cancelled"
    ):
        client.cancel(job.id)


def test_cancel_a_running_job_asks_it_to_stop(client: JobsClient, store: JobStore) -> None:
    job = client.enqueue("process_notifications", {})
    [claim] = store.claim([store.get(job.id)], "w", 30)  # type: ignore[list-item]
    assert claim is not None
    asked = client.cancel(job.id)
    assert asked.status is Status.IN_PROGRESS and asked.cancel_requested
    assert asked.lease.token == claim.token  # type: ignore[union-attr]  # the holder keeps the lease to finish up


def test_retry_a_failed_job_resets_attempts(
    client: JobsClient, store: JobStore, worker_factory: Any
) -> None:
    job = client.enqueue("no_such_handler", {})
    worker_factory()
    assert wait_finished(store, [job.id])[job.id].status is Status.FAILED
    again = client.retry(job.id)
    assert again.status is Status.PENDING and again.attempts == 0
    assert again.error is None and again.completed_at is None and "expireAt" not in again.raw


def test_retry_only_failed_or_cancelled(client: JobsClient) -> None:
    job = client.enqueue("process_notifications", {})
    with pytest.raises(InvalidJobState, match="only failed and cancelled jobs can be retried"):
        client.retry(job.id)
    with pytest.raises(JobNotFound):
        client.retry("missing")
