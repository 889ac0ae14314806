"""Fair shares (`fair_key=`): one tenant's backlog never starves another's jobs, across processes,
with weights, and a key with nothing due takes no turn."""

from __future__ import annotations

from typing import Any

from jobs_lib import JobContext, JobsClient, Status
from jobs_lib.registry import HandlerRegistry
from jobs_lib.store import JobStore

from .conftest import wait_finished


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
    runners = 3 * 4
    for org, count in sizes.items():
        positions = [i for i, o in enumerate(order) if o == org]
        assert len(positions) == count
        # While every key has jobs due, the m-th start of each key comes within m rounds of the four
        # keys, give or take what the twelve runners claim at once.
        for m, position in enumerate(positions[: sizes["umbrella"]], start=1):
            assert position < 4 * m + runners, (org, m, position, order[: 4 * m + runners])
