"""Rate limits (`@handler(..., rate="10/s")`): token documents taken with the claim, on the
emulator."""

from __future__ import annotations

import math
import signal
from collections import Counter
from typing import Any

import pytest

from jobs_lib import JobsClient, Status
from jobs_lib.errors import ConfigurationError
from jobs_lib.registry import HandlerRegistry, parse_rate
from jobs_lib.store import JobStore

from .conftest import wait_for


def starts_per_window(
    jobs: list[Any], period: float = 1.0, key: str | None = None
) -> Counter[tuple[Any, int]]:
    """Starts by (key value, window): the claim's own `startedAt`, on the server's clock."""
    return Counter(
        (job.raw.get(key) if key else None, math.floor(job.started_at.timestamp() / period))
        for job in jobs
        if job.started_at is not None
    )


def all_jobs(store: JobStore, job_type: str) -> list[Any]:
    return [job for job in store.list_jobs(job_type=job_type, limit=10_000)]


def test_rate_strings_are_read_or_refused() -> None:
    assert (
        parse_rate("100/s") == (100, 1.0)
        and parse_rate("20/m") == (20, 60.0)
        and parse_rate("1000/hour") == (1000, 3600.0)
    )
    registry = HandlerRegistry()
    for bad in ("100", "0/s", "ten/s", "5/day", "100001/s"):
        with pytest.raises(ConfigurationError, match="rate must look like '100/s'"):
            registry.handler(f"bad{bad}", rate=bad)(lambda ctx: None)
    with pytest.raises(ConfigurationError, match="rate and concurrency together are not supported"):
        registry.handler("both", rate="5/s", concurrency=2)(lambda ctx: None)
    with pytest.raises(ConfigurationError, match="rate_key needs rate"):
        registry.handler("keyed", rate_key="orgId")(lambda ctx: None)


def test_four_processes_start_at_most_the_rate_per_window_and_a_killed_one_loses_nothing(
    client: JobsClient, store: JobStore, spawn_worker: Any
) -> None:
    ids = [
        job.id
        for job in client.enqueue_many(
            [{"type": "rated", "metadata": {"seconds": 0.05}} for _ in range(80)]
        )
    ]
    workers = [spawn_worker("--concurrency", "4") for _ in range(4)]
    wait_for(
        lambda: store.count_matching(status="completed", job_type="rated") >= 20,
        30,
        0.2,
        "a first 20 jobs",
    )
    workers[0].signal(
        signal.SIGKILL
    )  # halfway: its running jobs come back when their leases expire
    wait_for(
        lambda: store.count_matching(status="completed", job_type="rated") == 80,
        90,
        0.3,
        "all 80 jobs",
    )
    jobs = all_jobs(store, "rated")
    assert {job.status for job in jobs} == {Status.COMPLETED} and sorted(
        j.id for j in jobs
    ) == sorted(ids)
    per_window = starts_per_window(jobs)
    # A claim decided in the last milliseconds of a window may be stamped in the next one by the
    # server: the windows of `startedAt` hold 10 starts, give or take the few that cross over.
    assert max(per_window.values()) <= 12, per_window
    tokens = list(store.db.collection(f"{store.settings.collection}_rateTokens").stream())
    # One token per start, re-runs of the killed process's jobs included, never more than 10 a
    # window.
    windows = Counter(t.id.rsplit("~", 1)[1] for t in tokens)
    assert len(tokens) >= 80 and max(windows.values()) <= 10, windows
    assert {t.to_dict()["jobId"] for t in tokens} == set(ids)
    assert len(per_window) >= 8  # 80 starts at 10 a second spread over 8 windows or more
    holders = {job.raw["lease"]["holder"] for job in jobs}
    assert len(holders) >= 3


def test_a_rate_per_key_limits_each_organisation_on_its_own(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    registry.handler("per_org", rate="3/s", rate_key="orgId")(lambda ctx: ctx.job.org_id)
    client.enqueue_many(
        [{"type": "per_org", "org_id": org} for org in ("acme", "globex") for _ in range(9)]
    )
    worker_factory(concurrency=8)
    worker_factory(concurrency=8)
    wait_for(
        lambda: store.count_matching(status="completed", job_type="per_org") == 18,
        30,
        0.2,
        "18 jobs",
    )
    per_window = starts_per_window(all_jobs(store, "per_org"), key="orgId")
    assert max(per_window.values()) <= 4, per_window  # 3, give or take one crossing a window's edge
    tokens = Counter(
        t.id.split("~", 2)[2]
        for t in store.db.collection(f"{store.settings.collection}_rateTokens").stream()
    )
    assert max(tokens.values()) <= 3 and len(tokens) >= 6, tokens  # org~window: exactly 3 at most
    # Each org's limit is its own: in some window both orgs started jobs.
    windows = Counter(window for (_org, window) in per_window)
    assert max(windows.values()) == 2


def test_jobs_over_the_limit_wait_and_start_in_the_next_windows(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    registry.handler("slowly", rate="2/s")(lambda ctx: "ok")
    client.enqueue_many([{"type": "slowly"} for _ in range(6)])
    running = worker_factory(concurrency=6)
    wait_for(
        lambda: store.count_matching(status="completed", job_type="slowly") == 6, 20, 0.2, "6 jobs"
    )
    tokens = Counter(
        t.id.rsplit("~", 1)[1]
        for t in store.db.collection(f"{store.settings.collection}_rateTokens").stream()
    )
    assert sorted(tokens.values()) == [
        2,
        2,
        2,
    ]  # three windows of two starts: each job waited for the next free one
    by_kind = running.worker.engine.store.stats.snapshot()["byKind"]
    # A full window is left alone until it ends: a few refused token creates, not one per poll.
    assert by_kind["write:claim_rate"]["calls"] == 6
    assert by_kind.get("write:claim_rate:refused", {"calls": 0})["calls"] <= 6
