"""Fair shares (`fair_key=`): one tenant's backlog never starves another's jobs, across processes,
with weights, and a key with nothing due takes no turn."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from google.cloud import firestore

from jobs_lib import JobContext, JobsClient, Status
from jobs_lib.functions import run_created
from jobs_lib.registry import HandlerRegistry
from jobs_lib.store import JobStore

from .conftest import wait_finished, wait_for


def fair_registry(registry: HandlerRegistry) -> None:
    """The test process knows the workers' `fair_job` handler as an app's server would: its client
    then tells the runners the keys of the jobs it enqueues."""

    @registry.handler("fair_job", fair_key="orgId", max_attempts=3, timeout=60)
    def fair_job(ctx: JobContext[Any]) -> None:
        """Run by the worker processes (tests/handlers_for_tests.py)."""


def backlog(
    client: JobsClient, org: str, count: int, seconds: float = 0.02, **extra: Any
) -> list[str]:
    jobs = client.enqueue_many(
        [
            {"type": "fair_job", "metadata": {"seconds": seconds}, "org_id": org, **extra}
            for _ in range(count)
        ]
    )
    return [job.id for job in jobs]


def start_order(store: JobStore, ids: list[str]) -> list[str]:
    jobs = wait_finished(store, ids, timeout=180)
    assert {job.status for job in jobs.values()} == {Status.COMPLETED}
    started = sorted((job.started_at, job.org_id or "") for job in jobs.values() if job.started_at)
    return [org for _at, org in started]


def test_tenants_take_turns_across_worker_processes(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, spawn_worker: Any
) -> None:
    fair_registry(registry)
    sizes = {"acme": 240, "globex": 60, "initech": 30, "umbrella": 12}
    ids: list[str] = []
    for org, count in sizes.items():  # the largest first: oldest-first would run all of it first
        ids += backlog(client, org, count)
    for _ in range(3):
        spawn_worker("--concurrency", "4")
    order = start_order(store, ids)
    assert {org: order.count(org) for org in sizes} == sizes
    # While every key has jobs due (the first 4 x 12 starts, in perfect rounds), every key has its
    # turns: in the first 60 starts each has at least 8 (15 in perfect rounds; three processes
    # claim at once and lose claims to one another now and then). Oldest first, the two smallest
    # keys would have about 2 and 5 of them (their share of the jobs).
    first = order[:60]
    turns = {org: first.count(org) for org in sizes}
    assert min(turns.values()) >= 8, (turns, first)
    # And no key waits long for its first turn: each starts within the first two rounds of every
    # runner (24 starts).
    assert all(org in order[:24] for org in sizes), order[:24]


def test_a_weight_of_three_takes_three_turns_to_one(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, spawn_worker: Any
) -> None:
    fair_registry(registry)
    client.set_fair_weight("fair_job", "big", 3)
    ids = backlog(client, "small", 300, seconds=0.05) + backlog(client, "big", 300, seconds=0.05)
    for _ in range(2):
        spawn_worker("--concurrency", "4")
    # While both keys have a backlog, the big key has three of every four starts.
    wait_for(
        lambda: sum(1 for i in ids if (j := store.get(i)) and j.status is Status.COMPLETED) >= 240,
        timeout=120,
        message="240 jobs to complete",
    )
    order = start_order_so_far(store, ids)
    window = order[:240]
    big, small = window.count("big"), window.count("small")
    assert small > 0 and 3 * 0.8 <= big / small <= 3 * 1.2, (big, small)


def start_order_so_far(store: JobStore, ids: list[str]) -> list[str]:
    jobs = [store.get(i) for i in ids]
    started = sorted((j.started_at, j.org_id or "") for j in jobs if j is not None and j.started_at)
    return [org for _at, org in started]


def test_a_key_with_nothing_due_takes_no_turn(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, spawn_worker: Any
) -> None:
    fair_registry(registry)
    later = store.now() + timedelta(hours=1)
    delayed = backlog(client, "delayed", 5, scheduled_for=later)
    # A flow whose parent waits an hour: its child (another key) is blocked until then.
    flow = client.flow(
        [
            {"name": "first", "type": "fair_job", "org_id": "flow", "scheduled_for": later},
            {"name": "then", "type": "fair_job", "org_id": "blocked", "depends_on": ["first"]},
        ]
    )
    waiting = list(flow.job_ids.values())
    ids = backlog(client, "busy", 60)
    worker = spawn_worker("--concurrency", "4")
    order = start_order(store, ids)
    assert set(order) == {"busy"}
    # The delayed key kept its document (its jobs are pending) and took no turn.
    assert [store.get(i).status for i in delayed] == [Status.PENDING] * 5
    assert sorted(store.get(i).status for i in waiting) == [Status.BLOCKED, Status.PENDING]
    # Their keys keep their documents (they have jobs to come).
    keys = {d.to_dict()["key"] for d in store.fair.collection.stream()}
    assert {"delayed", "flow", "blocked"} <= keys
    # The busy key, drained, gave its document back.
    wait_for(
        lambda: "busy" not in {d.to_dict()["key"] for d in store.fair.collection.stream()},
        timeout=30,
        message="the drained key's document to be deleted",
    )
    worker.signal(15)


def test_a_created_event_runs_the_job_of_the_key_drawn(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, engine_factory: Any
) -> None:
    ran: list[str] = []

    @registry.handler("fair_event", fair_key="orgId")
    def fair_event(ctx: JobContext[Any]) -> None:
        ran.append(ctx.job_id)

    # Key "a" is all but never drawn: its events run key b's jobs while b has any due.
    client.set_fair_weight("fair_event", "a", 0.001)
    b_jobs = [client.enqueue("fair_event", {}, org_id="b").id for _ in range(2)]
    a_job = client.enqueue("fair_event", {}, org_id="a")
    engine = engine_factory()
    assert run_created(engine, a_job) == "completed"
    assert len(ran) == 1 and ran[0] in b_jobs
    assert store.get(a_job.id).status is Status.PENDING  # waits its turn
    # A job an app wrote (the seeds' shape) for a key no runner knows yet: its event makes the key
    # known and runs its own job.
    ref = store.collection.document()
    ref.set(
        {
            "type": "fair_event",
            "status": "pending",
            "orgId": "c",
            "createdAt": firestore.SERVER_TIMESTAMP,
            "scheduledFor": firestore.SERVER_TIMESTAMP,
            "metadata": {},
        }
    )
    app_job = store.get(ref.id)
    assert app_job is not None
    assert run_created(engine, app_job) == "completed"
    assert ran[-1] == ref.id
    keys = {d.to_dict()["key"] for d in store.fair.collection.stream()}
    assert {"a", "b", "c"} <= keys


def test_a_job_an_app_wrote_for_a_fair_type_runs_beside_a_backlog(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, spawn_worker: Any
) -> None:
    """The seeds' shape (a raw write: no shard, no status, no createdAt), on a deployment with
    workers only (no created-event to note its key): found by the scan of unsharded documents,
    given its shard and run, while another tenant's backlog is shared."""
    fair_registry(registry)
    busy = backlog(client, "busy", 150, seconds=0.05)
    spawn_worker("--concurrency", "4")
    ref = store.collection.document()
    ref.set({"type": "fair_job", "orgId": "app", "metadata": {"seconds": 0.01}})
    done = wait_finished(store, [ref.id], timeout=60)[ref.id]
    assert done.status is Status.COMPLETED and done.written_shard is not None
    assert done.org_id == "app"
    wait_finished(store, busy, timeout=120)
