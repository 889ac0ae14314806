"""Heartbeats, cancellation of running jobs, concurrency limits across processes, pause, dead
letters."""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from jobs_lib import JobCancelled, JobContext, JobsClient, Status
from jobs_lib.limits.slots import SlotClaimer
from jobs_lib.observability.logs import JobLogger
from jobs_lib.registry import HandlerRegistry
from jobs_lib.store import JobStore

from .conftest import wait_finished, wait_for


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = current = 0
    for _, delta in points:
        current += delta
        best = max(best, current)
    return best


def intervals(store: JobStore, ids: list[str], org: str | None = None) -> list[tuple[float, float]]:
    out = []
    for job_id in ids:
        data = store.db.collection("intervals").document(job_id).get().to_dict()
        assert data is not None, job_id
        if org is None or data.get("orgId") == org:
            out.append((data["start"], data["end"]))
    return out


def test_a_concurrency_limit_holds_across_worker_processes(
    client: JobsClient, store: JobStore, spawn_worker: Any
) -> None:
    ids = [client.enqueue("limited", {"seconds": 0.4}).id for _ in range(12)]
    others = [client.enqueue("noop", {}).id for _ in range(5)]
    workers = [spawn_worker("--concurrency", "4") for _ in range(3)]
    jobs = wait_finished(store, ids + others, timeout=120)
    assert all(jobs[i].status is Status.COMPLETED for i in ids + others)
    assert (
        max_overlap(intervals(store, ids)) == 2
    )  # never three at once, and the two slots were used
    slots = {s.id: s.to_dict() for s in store.limits.slot_collection.stream()}
    assert set(slots) <= {"limited~*~0", "limited~*~1"}
    for worker in workers:
        worker.signal(signal.SIGTERM)


def test_a_stale_candidate_never_frees_the_slot_its_job_holds(
    client: JobsClient, store: JobStore, registry: HandlerRegistry
) -> None:
    """Two workers read the same candidates; one claims job `a` with the type's only slot. The
    other still has `a` as pending among its candidates: the slot naming `a` must not look free to
    it (`a` runs), so `b` must wait. Before the fix, a slot naming one of the claimer's own
    candidates was taken as free unread, and `b` ran beside `a`: three `limited` handlers once
    overlapped in a full run."""

    @registry.handler("one_slot", concurrency=1)
    def one_slot(ctx: JobContext[Any]) -> None:
        """Never run here: the claimers are driven by hand."""

    spec = registry.get("one_slot")
    assert spec is not None
    a, b = (client.enqueue("one_slot", {}).id for _ in range(2))
    stale_a, stale_b = store.get(a), store.get(b)
    assert stale_a is not None and stale_b is not None
    log = JobLogger(logging.getLogger("test"), {})
    first = SlotClaimer(JobStore(store.settings), "worker-1", 30.0, log)
    second = SlotClaimer(JobStore(store.settings), "worker-2", 30.0, log)
    try:
        assert first.claim(stale_a, spec) is not None
        assert store.get(a).status is Status.IN_PROGRESS
        # `b` first: the free slot, if any, would be paired with `b`.
        claims = second.claim_many([stale_b, stale_a], spec)
        assert claims == [None, None]
        assert store.get(b).status is Status.PENDING
    finally:
        first.close()
        second.close()


def test_a_per_organisation_limit(client: JobsClient, store: JobStore, spawn_worker: Any) -> None:
    ids = [
        client.enqueue("limited_per_org", {"seconds": 0.3}, org_id=org).id
        for org in ["acme", "globex"] * 4
    ]
    spawn_worker("--concurrency", "6")
    spawn_worker("--concurrency", "6")
    wait_finished(store, ids, timeout=120)
    assert max_overlap(intervals(store, ids, "acme")) == 1
    assert max_overlap(intervals(store, ids, "globex")) == 1
    assert max_overlap(intervals(store, ids)) == 2  # the two organisations ran side by side


def test_a_waiting_limited_type_does_not_hold_up_other_types(
    client: JobsClient, store: JobStore, spawn_worker: Any
) -> None:
    slow = [client.enqueue("single", {"seconds": 0.5}).id for _ in range(8)]
    quick = [client.enqueue("noop", {}).id for _ in range(5)]
    spawn_worker("--concurrency", "4")
    jobs = wait_finished(store, quick, timeout=60)
    finished_quick = max(j.completed_at for j in jobs.values() if j.completed_at)
    slow_done = [store.get(i) for i in slow]
    assert (
        sum(
            1
            for j in slow_done
            if j
            and j.status is Status.COMPLETED
            and j.completed_at
            and j.completed_at <= finished_quick
        )
        <= 3
    )
    wait_finished(store, slow, timeout=120)
    assert max_overlap(intervals(store, slow)) == 1


def test_a_slot_held_by_a_killed_worker_is_recovered_with_its_lease(
    client: JobsClient, store: JobStore, spawn_worker: Any
) -> None:
    first = client.enqueue("single", {"seconds": 8})
    doomed = spawn_worker("--lease", "2")
    wait_for(
        lambda: store.db.collection("runs").document(first.id).get().exists,
        message="the first run to start",
    )
    doomed.signal(signal.SIGKILL)
    doomed.wait(10)
    second = client.enqueue("single", {"seconds": 0.1})
    spawn_worker("--lease", "2")
    jobs = wait_finished(store, [first.id, second.id], timeout=90)
    assert jobs[first.id].status is Status.COMPLETED and jobs[first.id].attempts == 2
    assert jobs[second.id].status is Status.COMPLETED
    assert max_overlap(intervals(store, [first.id, second.id])) == 1


def test_pause_keeps_a_type_pending_and_resume_lets_it_run(
    client: JobsClient, store: JobStore, worker_factory: Any
) -> None:
    client.pause("process_notifications")
    assert client.paused() == {"process_notifications"}
    held = client.enqueue("process_notifications", {"targetUsers": ["a"]})
    other = client.enqueue("no_such_type", {})
    worker_factory()
    wait_finished(store, [other.id])  # the worker is running
    time.sleep(1.0)
    assert store.get(held.id).status is Status.PENDING  # type: ignore[union-attr]
    client.resume("process_notifications")
    assert client.paused() == set()
    assert wait_finished(store, [held.id], timeout=30)[held.id].status is Status.COMPLETED


def test_cancelling_a_running_job_reaches_its_handler(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    seen: dict[str, Any] = {}

    @registry.handler("polite", timeout=60)
    def polite(ctx: JobContext[Any]) -> None:
        seen["started"] = True
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if ctx.cancel_requested:
                seen["noticed"] = True
            try:
                ctx.progress(10, "working")
            except JobCancelled:
                seen["raised"] = True
                raise
            time.sleep(0.1)

    job = client.enqueue("polite", {})
    worker_factory(lease_seconds=3)
    wait_for(lambda: seen.get("started"), message="the handler to start")
    client.cancel(job.id)
    done = wait_finished(store, [job.id], timeout=30)[job.id]
    assert done.status is Status.CANCELLED and done.attempts == 1
    assert seen.get("raised") is True
    assert "owner's request" in (done.error or "")


def test_a_handler_that_ignores_cancellation_is_stopped_at_its_timeout(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    started = threading.Event()

    @registry.handler("stubborn", timeout=3, max_attempts=5)
    def stubborn(ctx: JobContext[Any]) -> str:
        started.set()
        time.sleep(6)
        return "done anyway"

    job = client.enqueue("stubborn", {})
    worker_factory(lease_seconds=1.5)
    assert started.wait(10)
    client.cancel(job.id)
    done = wait_finished(store, [job.id], timeout=30)[job.id]
    assert done.status is Status.CANCELLED and done.attempts == 1  # not retried
    assert "abandoned at its timeout of 3s" in (done.error or "")
    time.sleep(3.5)  # the handler's late result arrives and is refused
    assert store.get(job.id).status is Status.CANCELLED and store.get(job.id).result is None  # type: ignore[union-attr]


def test_a_job_ten_times_longer_than_its_lease_keeps_it_at_a_few_writes(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    lease, seconds = 1.0, 10.0

    @registry.handler("marathon", timeout=60)
    def marathon(ctx: JobContext[Any]) -> int:
        time.sleep(seconds)
        return ctx.attempt

    job = client.enqueue("marathon", {})
    workers = [
        worker_factory(lease_seconds=lease) for _ in range(2)
    ]  # the other one watches for expired leases
    done = wait_finished(store, [job.id], timeout=60)[job.id]
    assert done.status is Status.COMPLETED and done.attempts == 1 and done.result == 1
    records = sum(
        w.worker.engine.store.stats.snapshot()["byKind"].get("write:record", {}).get("writes", 0)
        for w in workers
    )
    # Renewed when a third of the lease is spent: about seconds / (lease * 2/3) writes, plus the
    # final one.
    assert seconds / lease <= records <= seconds / (lease / 3) + 2, records


def test_dead_letters_can_be_listed_and_retried_in_bulk(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    @registry.handler("flaky_upstream", max_attempts=1)
    def flaky_upstream(ctx: JobContext[Any]) -> str:
        if not ctx.metadata.get("fixed"):
            raise ConnectionError("upstream down")
        return "ok"

    dead = [client.enqueue("flaky_upstream", {}).id for _ in range(4)]
    other = client.enqueue("no_such_type", {}).id
    worker_factory()
    wait_finished(store, [*dead, other])
    failed = store.page(status="failed", job_type="flaky_upstream", after=None, limit=10)
    assert sorted(j.id for j in failed) == sorted(dead)
    from typer.testing import CliRunner

    from jobs_lib.cli import app

    for job_id in dead:  # the upstream is fixed; then the dead letters are retried
        store.ref(job_id).update({"metadata": {"fixed": True}})
    result = CliRunner().invoke(app, ["retry", "--failed", "--type", "flaky_upstream"])
    assert result.exit_code == 0, result.output
    assert '"retried": 4' in result.output
    jobs = wait_finished(store, dead, timeout=30)
    assert all(j.status is Status.COMPLETED and j.attempts == 1 for j in jobs.values())
    assert store.get(other).status is Status.FAILED  # type: ignore[union-attr]
