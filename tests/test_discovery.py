"""How workers find jobs: partitions of the id space keep workers sharing a backlog apart."""

from __future__ import annotations

from datetime import UTC, datetime

from google.cloud import firestore

from jobs_lib.engine.discovery import Discovery
from jobs_lib.store import (
    ALL_SHARDS,
    PARTITIONS,
    SHARDS,
    JobStore,
    partition_of,
    partition_shards,
    shard_of,
)


def test_partitions_split_the_shards_and_ids_spread_over_them() -> None:
    assert sorted(s for p in range(PARTITIONS) for s in partition_shards(p)) == list(ALL_SHARDS)
    assert all(
        partition_of(f"id{i}") == shard_of(f"id{i}") * PARTITIONS // SHARDS for i in range(100)
    )
    counts = [0] * SHARDS
    for i in range(30_000):
        counts[shard_of(f"{i:020d}")] += 1
    assert (
        min(counts) > 800 and max(counts) < 1200
    )  # about 1,000 each: the lanes share the writes evenly


def backlog(store: JobStore, count: int) -> None:
    batch = store.db.batch()
    now = datetime.now(UTC)
    for _ in range(count):
        ref = store.collection.document()
        batch.set(
            ref,
            {
                "type": "t",
                "status": "pending",
                "scheduledFor": now,
                "priority": 0,
                "shard": shard_of(ref.id),
            },
        )
    batch.commit()


def test_contended_workers_lease_different_partitions_and_read_disjoint_jobs(
    store: JobStore,
) -> None:
    backlog(store, 400)
    first = Discovery(JobStore(store.settings), lease_seconds=30, holder="w1")
    second = Discovery(JobStore(store.settings), lease_seconds=30, holder="w2")
    for discovery in (first, second):
        assert discovery.partition is None
        discovery.candidates(10)  # a full page: a backlog
        discovery.contended()
    a, b = first.candidates(10), second.candidates(10)
    assert (
        first.partition is not None
        and second.partition is not None
        and first.partition != second.partition
    )
    assert {partition_of(j.id) for j in a} == {first.partition} and len(a) == 10
    assert {partition_of(j.id) for j in b} == {second.partition} and len(b) == 10
    leases = {snap.id: snap.to_dict() for snap in store.partitions.collection.stream()}
    assert (
        leases[str(first.partition)]["holder"] == "w1"
        and leases[str(second.partition)]["holder"] == "w2"
    )
    held = first.partition
    first.close()
    assert first.partition is None
    assert store.partitions.collection.document(str(held)).get().get("until") <= datetime.now(
        UTC
    )  # handed back


def test_a_lone_worker_reads_oldest_first_without_partitions(store: JobStore) -> None:
    backlog(store, 30)
    discovery = Discovery(JobStore(store.settings), lease_seconds=30)
    for _ in range(3):
        discovery.candidates(10)
    assert discovery.partition is None
    assert list(store.partitions.collection.stream()) == []


def test_partitions_are_plain_documents_nobody_needs_to_create(store: JobStore) -> None:
    assert (
        store.partitions.write_partition(
            3, {"holder": "w", "until": firestore.SERVER_TIMESTAMP}, None
        )
        is not None
    )
    assert (
        store.partitions.write_partition(3, {"holder": "x"}, None) is None
    )  # already exists: a second creator loses
