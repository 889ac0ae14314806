"""Many jobs at once (`JobsClient.enqueue_many`) and waiting for one (`JobsClient.wait`), on the
emulator."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobs_lib import JobContext, JobsClient, Status
from jobs_lib.errors import ConfigurationError, JobNotFound
from jobs_lib.registry import HandlerRegistry
from jobs_lib.store import JobStore, shard_of

from .conftest import ROOT, wait_finished


def test_enqueue_many_writes_500_per_rpc_honours_keys_and_the_jobs_run(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    ran: list[int] = []
    registry.handler("counted")(lambda ctx: ran.append(ctx.metadata["n"]))
    earlier = client.enqueue("counted", {"n": -1}, key="already")
    later = datetime.now(UTC) + timedelta(hours=1)
    items: list[dict[str, Any]] = [{"type": "counted", "metadata": {"n": n}} for n in range(1200)]
    items[7] = {"type": "counted", "metadata": {"n": 7}, "key": "twice", "priority": 4}
    items[8] = {
        "type": "counted",
        "metadata": {"n": 8},
        "key": "twice",
    }  # the same key again: the same job
    items[9] = {
        "type": "counted",
        "metadata": {"n": 9},
        "key": "already",
    }  # enqueued before: that job
    items[10] = {
        "type": "counted",
        "metadata": {"n": 10},
        "scheduled_for": later,
        "org_id": "acme",
        "created_by": "alice",
    }
    before = client.store.stats.snapshot()["byKind"]
    jobs = client.enqueue_many(items)
    after = client.store.stats.snapshot()["byKind"]
    spent = {
        kind: {k: v - before.get(kind, {}).get(k, 0) for k, v in counts.items()}
        for kind, counts in after.items()
    }

    assert len(jobs) == 1200
    assert spent["write:create"]["calls"] == 3  # 1,199 distinct jobs, 500 per BatchWrite RPC
    assert (
        spent["write:create"]["writes"] == 1198 and spent["write:create:refused"]["writes"] == 1
    )  # "already" existed
    assert jobs[7].id == jobs[8].id and jobs[9].id == earlier.id and jobs[9].metadata == {"n": -1}
    assert len({j.id for j in jobs}) == 1199
    stored = store.get_many([j.id for j in jobs])
    assert all(
        stored[j.id].raw["shard"] == shard_of(j.id) and stored[j.id].status is Status.PENDING
        for j in jobs
    )
    # What enqueue_many returns is what the documents hold, server timestamps included.
    assert (
        all(stored[j.id].created_at == j.created_at for j in jobs[:20])
        and jobs[0].created_at is not None
    )
    assert (stored[jobs[7].id].priority, stored[jobs[10].id].scheduled_for) == (4, later)
    assert (stored[jobs[10].id].org_id, stored[jobs[10].id].created_by) == ("acme", "alice")

    worker_factory(concurrency=8)
    due = [j.id for n, j in enumerate(jobs) if n != 10]
    done = wait_finished(store, due, timeout=120)
    assert {j.status for j in done.values()} == {Status.COMPLETED}
    assert sorted(ran) == sorted({-1, *range(1200)} - {8, 9, 10})  # each distinct job ran once
    assert store.get(jobs[10].id).status is Status.PENDING  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"type": ""}, "job 2: a job needs a non-empty string type"),
        ({"metadata": {}}, "job 2: a job needs a type"),
        ({"type": "t", "metadata": [1]}, "job 2: metadata must be a dict, got list"),
        ({"type": "t", "max_attempts": 0}, "job 2: max_attempts must be at least 1"),
        (
            {"type": "t", "scheduled_for": datetime(2030, 1, 1)},
            "job 2: scheduled_for must be timezone-aware",
        ),
        ({"type": "t", "colour": "red"}, "job 2: unknown argument(s) colour"),
        ("t", "job 2: each job is a mapping"),
    ],
)
def test_enqueue_many_checks_every_job_before_writing_any(
    client: JobsClient, store: JobStore, bad: Any, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        client.enqueue_many([{"type": "t"}, {"type": "t"}, bad, {"type": "t"}])
    assert list(store.collection.stream()) == []


def test_wait_returns_the_job_as_it_ended(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    @registry.handler("slow_answer")
    def slow_answer(ctx: JobContext[Any]) -> dict[str, int]:
        time.sleep(0.5)
        return {"answer": 42}

    @registry.handler("refuses")
    def refuses(ctx: JobContext[Any]) -> None:
        raise ValueError("no, thank you")

    job = client.enqueue("slow_answer")
    failing = client.enqueue("refuses", max_attempts=1)
    started = {}

    def start_later() -> None:
        time.sleep(0.5)  # the wait is already listening when the worker starts
        started["worker"] = worker_factory()

    threading.Thread(target=start_later).start()
    ended = client.wait(job.id, timeout=60)
    assert ended.status is Status.COMPLETED and ended.result == {"answer": 42}
    assert ended == client.get(job.id)
    failed = client.wait(failing.id, timeout=60)
    assert failed.status is Status.FAILED and "no, thank you" in (failed.error or "")
    assert client.wait(job.id, timeout=5).status is Status.COMPLETED  # already finished: at once


def test_wait_times_out_and_names_missing_jobs(client: JobsClient, store: JobStore) -> None:
    nobody_runs = client.enqueue(
        "no_worker_for_this", scheduled_for=datetime.now(UTC) + timedelta(hours=1)
    )
    with pytest.raises(TimeoutError, match=f"job '{nobody_runs.id}' did not finish within 1s"):
        client.wait(nobody_runs.id, timeout=1)
    with pytest.raises(JobNotFound):
        client.wait("no-such-job", timeout=5)
    # Deleted while waited on: JobNotFound, not a wait until the timeout.
    doomed = client.enqueue(
        "no_worker_for_this", scheduled_for=datetime.now(UTC) + timedelta(hours=1)
    )
    threading.Timer(0.5, lambda: store.ref(doomed.id).delete()).start()
    with pytest.raises(JobNotFound):
        client.wait(doomed.id, timeout=30)


def next_window(store: JobStore, period: float) -> None:
    """Wait (on the server's clock) until a new window of `period` seconds has begun."""
    window = store.now().timestamp() // period
    while store.now().timestamp() // period == window:
        time.sleep(0.05)


def test_throttle_keeps_the_first_job_of_each_period(client: JobsClient, store: JobStore) -> None:
    first = client.enqueue_once("digest", {"n": 1}, key="org-7", period=3600)
    again = client.enqueue_once("digest", {"n": 2}, key="org-7", period=3600)
    other = client.enqueue_once("digest", {"n": 3}, key="org-8", period=3600)
    assert again.id == first.id and again.metadata == {"n": 1} and other.id != first.id
    assert first.scheduled_for is not None and first.scheduled_for <= store.now()  # due at once
    # The next period is a new job.
    next_window(store, 2)
    fresh = client.enqueue_once("digest", {"n": 4}, key="org-7", period=2)
    next_window(store, 2)
    later = client.enqueue_once("digest", {"n": 5}, key="org-7", period=2)
    assert fresh.id != later.id and (fresh.metadata, later.metadata) == ({"n": 4}, {"n": 5})
    with pytest.raises(ConfigurationError, match="period must be a positive number"):
        client.enqueue_once("digest", key="k", period=0)


def test_debounce_runs_the_last_metadata_of_the_period_once(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    seen: list[Any] = []
    registry.handler("reindex")(lambda ctx: seen.append(ctx.metadata["n"]))
    period = 3.0
    clients = [JobsClient(store=JobStore(store.settings), registry=registry) for _ in range(4)]
    results: list[Any] = []

    def calls(c: JobsClient, base: int) -> None:
        for n in range(5):
            results.append(
                c.enqueue_once(
                    "reindex", {"n": base + n}, key="search", period=period, mode="debounce"
                )
            )

    # Four clients (separate connections) debounce the same key at once.
    threads = [threading.Thread(target=calls, args=(c, 10 * k)) for k, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    windows = {int(j.scheduled_for.timestamp() // period) for j in results}
    job_ids = {j.id for j in results}
    assert len(job_ids) == len(windows) <= 2  # one job per window (the calls may straddle two)
    stored = store.get_many(sorted(job_ids))
    assert all(
        j.status is Status.PENDING and j.scheduled_for.timestamp() % period == 0
        for j in stored.values()
    )  # type: ignore[union-attr]
    last_of = {j.id: j.metadata["n"] for j in stored.values()}
    worker_factory()
    done = wait_finished(store, sorted(job_ids), timeout=30)
    assert sorted(seen) == sorted(
        last_of.values()
    )  # each window's job ran once, with the metadata it ended with
    assert all(j.started_at >= j.scheduled_for for j in done.values())  # type: ignore[operator]


def test_debounce_from_four_processes_at_once_keeps_one_job_per_window(
    store: JobStore, emulator: Any
) -> None:
    period = 4.0
    code = (
        "import sys\nfrom jobs_lib import JobsClient\nc = JobsClient()\n"
        f"print(' '.join(c.enqueue_once('reindex', {{'n': int(sys.argv[1]) + n}}, key='search', "
        f"period={period}, mode='debounce').id for n in range(5)))"
    )
    env = {
        **os.environ,
        "FIRESTORE_EMULATOR_HOST": emulator.address,
        "GOOGLE_CLOUD_PROJECT": emulator.project,
        "PYTHONPATH": str(ROOT),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(10 * k)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for k in range(4)
    ]
    ids: set[str] = set()
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()[-2000:]
        ids |= set(out.decode().split())
    stored = store.get_many(sorted(ids))
    windows = {int(j.scheduled_for.timestamp() // period) for j in stored.values()}  # type: ignore[union-attr]
    assert len(ids) == len(stored) == len(windows) <= 2  # one job per window across the processes
    # Each holds the metadata of one of the calls (the last write of its window won, whole).
    assert all(
        j.metadata["n"] in {10 * k + n for k in range(4) for n in range(5)} for j in stored.values()
    )
    assert len(list(store.collection.stream())) == len(ids)
