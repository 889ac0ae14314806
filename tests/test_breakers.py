"""Circuit breakers (`@handler(..., breaker=3, breaker_cooldown=2)`), on the emulator."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from jobs_lib import JobContext, JobsClient, Status
from jobs_lib.cli import app
from jobs_lib.console.overview import Overview
from jobs_lib.registry import HandlerRegistry
from jobs_lib.store import JobStore

from .conftest import wait_for


def breakers(store: JobStore) -> dict[str, Any]:
    return store.limits.control_state()[1]


def by_type(store: JobStore, job_type: str) -> list[Any]:
    return store.list_jobs(job_type=job_type, limit=1000)


def test_failures_in_a_row_open_the_breaker_then_one_probe_closes_it(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    healthy = {"up": False}

    @registry.handler("billing", breaker=3, breaker_cooldown=6.0, max_attempts=1)
    def billing(ctx: JobContext[Any]) -> str:
        if not healthy["up"]:
            raise ConnectionError("the payment provider answered 503")
        return "charged"

    client.enqueue_many([{"type": "billing", "metadata": {"n": n}} for n in range(12)])
    worker_factory(concurrency=2)
    entry = wait_for(lambda: breakers(store).get("billing"), 20, message="the breaker to open")
    assert entry["failures"] == 3 and entry["lastError"].startswith(
        "ConnectionError: the payment provider answered 503"
    )
    time.sleep(1.0)
    failed = [j for j in by_type(store, "billing") if j.status is Status.FAILED]
    pending = [j for j in by_type(store, "billing") if j.status is Status.PENDING]
    assert (
        3 <= len(failed) <= 5 and len(failed) + len(pending) == 12
    )  # the ones in flight when it opened may fail too
    # Open: what it shows in jobs stats and the overview the console draws.
    shown = CliRunner().invoke(app, ["stats"])
    assert (
        shown.exit_code == 0
        and "circuit breakers" in shown.output
        and "billing" in shown.output
        and "open" in shown.output
    )
    row = next(r for r in Overview(store, registry).figures()["types"] if r["type"] == "billing")
    assert row["breaker"]["state"] == "open" and row["breaker"]["failures"] >= 3

    assert (
        store.now() < entry["openUntil"]
    )  # still open: the checks above took less than the cool-down
    healthy["up"] = True
    wait_for(lambda: "billing" not in breakers(store), 20, message="the probe to close the breaker")
    wait_for(
        lambda: store.count_matching(status="completed", job_type="billing") == len(pending),
        30,
        0.2,
        message="the rest to run",
    )
    ran = sorted(
        (j for j in by_type(store, "billing") if j.status is Status.COMPLETED),
        key=lambda j: j.started_at,
    )
    probe, rest = ran[0], ran[1:]
    assert probe.started_at >= entry["openUntil"]  # nothing started while it was open
    assert all(
        j.started_at >= probe.completed_at for j in rest
    )  # one job through, the rest after it succeeded
    assert (
        next(r for r in Overview(store, registry).figures()["types"] if r["type"] == "billing")[
            "breaker"
        ]
        is None
    )


def test_a_failed_probe_opens_it_again(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    calls: list[float] = []

    @registry.handler("mailer", breaker=2, breaker_cooldown=1.5, max_attempts=1)
    def mailer(ctx: JobContext[Any]) -> str:
        calls.append(time.monotonic())
        if len(calls) <= 3:  # two to open it, then the first probe fails too
            raise TimeoutError("smtp timed out")
        return "sent"

    client.enqueue_many([{"type": "mailer"} for _ in range(6)])
    worker_factory(concurrency=1)
    first = wait_for(lambda: breakers(store).get("mailer"), 20, message="the breaker to open")
    again = wait_for(
        lambda: (
            (b := breakers(store).get("mailer")) is not None
            and b["openedAt"] > first["openedAt"]
            and b
        ),
        20,
        message="the failed probe to open it again",
    )
    assert again["lastError"].startswith("TimeoutError: smtp timed out")
    wait_for(
        lambda: store.count_matching(status="completed", job_type="mailer") == 3,
        30,
        0.2,
        message="the rest to run",
    )
    assert "mailer" not in breakers(store) and len(calls) == 6
    tokens = [
        t.id
        for t in store.db.collection(f"{store.settings.collection}_rateTokens").stream()
        if t.id.startswith("probe~mailer~")
    ]
    assert len(tokens) == 2  # one probe per opening


def test_three_processes_let_exactly_one_probe_through(
    client: JobsClient, store: JobStore, spawn_worker: Any, tmp_path: Path
) -> None:
    flag = tmp_path / "downstream"
    flag.write_text("down")
    ids = [j.id for j in client.enqueue_many([{"type": "downstream"} for _ in range(30)])]
    env = {"JOBS_TEST_DOWNSTREAM": str(flag)}
    for _ in range(3):
        spawn_worker("--concurrency", "2", env=env)
    entry = wait_for(lambda: breakers(store).get("downstream"), 30, message="the breaker to open")
    flag.write_text("up")
    wait_for(lambda: "downstream" not in breakers(store), 30, message="the probe to close it")
    wait_for(
        lambda: (
            store.count_matching(status="pending", job_type="downstream") == 0
            and store.count_matching(status="in_progress", job_type="downstream") == 0
        ),
        60,
        0.3,
        "the rest",
    )
    jobs = {j.id: j for j in by_type(store, "downstream")}
    assert set(jobs) == set(ids)
    completed = sorted(
        (j for j in jobs.values() if j.status is Status.COMPLETED), key=lambda j: j.started_at
    )
    # A runner that had not yet heard of the opening (they all stop "within moments") may have
    # started a job during the cool-down, after the flag went up; from the cool-down's end on,
    # one probe started, and the others only once it had succeeded.
    after = [j for j in completed if j.started_at >= entry["openUntil"]]
    last_open = max(
        t.to_dict()["takenAt"]
        for t in store.db.collection(f"{store.settings.collection}_rateTokens").stream()
        if t.id.startswith("probe~downstream~")
    )
    probes = [j for j in after if j.started_at <= last_open or j.started_at < after[0].completed_at]
    assert len(probes) == 1, [(j.id, j.started_at) for j in after[:4]]
    assert all(j.started_at >= after[0].completed_at for j in after[1:])
