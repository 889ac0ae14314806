"""Durable jobs (`jobs_lib.engine.durable`): steps recorded once, fenced; sleeps that hold no slot;
cancel during a sleep; a process SIGKILLed in each of five steps in turn. The continuation of a job
across created-events and ticks with no worker is in tests/test_dev_stack.py (it needs the
functions)."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from jobs_lib import Backoff, JobContext, JobsClient, Status
from jobs_lib.errors import LeaseLost
from jobs_lib.registry import HandlerRegistry
from jobs_lib.store import JobStore
from jobs_lib.testing import run_handler

from .conftest import wait_finished, wait_for


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_run_handler_runs_steps_checkpoints_and_sleeps_without_firestore() -> None:
    registry = HandlerRegistry()
    calls: list[str] = []

    @registry.handler("durable", continuable=True)
    def durable(ctx: JobContext[Any]) -> dict[str, Any]:
        fetched = ctx.step("fetch", lambda: calls.append("fetch") or {"rows": 7})
        for i in range(int(ctx.cursor or 0), 6):
            ctx.checkpoint(i + 1)
        ctx.sleep(60)
        sent = ctx.step("send", lambda n: calls.append("send") or n * 2, fetched["rows"])
        return {"fetched": fetched, "sent": sent}

    run = run_handler("durable", registry=registry, continue_every=2)
    assert (run.status, run.result) == ("completed", {"fetched": {"rows": 7}, "sent": 14})
    assert calls == ["fetch", "send"] and run.steps_run == ["fetch", "send"]  # each step ran once
    assert run.checkpoints == [1, 2, 3, 4, 5, 6]  # each position once, across the continuations
    assert len(run.sleeps) == 1 and 59 < run.sleeps[0] <= 60
    assert run.continuations == 4  # three slices ended at every second checkpoint, one sleep
    # As a later attempt would: "fetch" recorded by an earlier run does not run again.
    again = run_handler("durable", registry=registry, steps={"fetch": {"rows": 1}}, cursor=6)
    assert again.result == {"fetched": {"rows": 1}, "sent": 2} and again.steps_run == ["send"]


def test_a_bad_step_name_or_an_unstorable_result_fails_the_job_saying_why(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    registry.handler("bad_name", max_attempts=1)(lambda ctx: ctx.step("has space", lambda: 1))
    registry.handler("bad_value", max_attempts=3)(lambda ctx: ctx.step("obj", object))
    ids = [client.enqueue("bad_name").id, client.enqueue("bad_value").id]
    worker_factory()
    done = wait_finished(store, ids)
    assert done[ids[0]].status is Status.FAILED and "a step name must be 1 to 128 letters" in (
        done[ids[0]].error or ""
    )
    # Not retried: storing it would fail again.
    assert (
        done[ids[1]].status is Status.FAILED
        and done[ids[1]].attempts == 1
        and "step 'obj' cannot be stored" in (done[ids[1]].error or "")
    )


def test_steps_are_recorded_in_the_document_and_replayed_by_the_retry(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    ran: Counter[str] = Counter()

    @registry.handler("pipeline", max_attempts=3, backoff=Backoff.fixed(0))
    def pipeline(ctx: JobContext[Any]) -> dict[str, Any]:
        small = ctx.step("small", lambda: ran.update(["small"]) or {"n": 1})
        big = ctx.step(
            "big", lambda: ran.update(["big"]) or "x" * 200_000
        )  # over the inline size: a document of its own
        if ctx.attempt == 1:
            raise ConnectionError("the third stage fails once")
        third = ctx.step("third", lambda: ran.update(["third"]) or (small["n"] + len(big)))
        return {"third": third}

    job = client.enqueue("pipeline")
    worker_factory()
    done = wait_finished(store, [job.id])[job.id]
    assert (
        done.status is Status.COMPLETED and done.result == {"third": 200_001} and done.attempts == 2
    )
    assert ran == Counter({"small": 1, "big": 1, "third": 1})  # the retry replayed the first two
    steps = done.steps
    assert steps["small"]["value"] == {"n": 1} and steps["small"]["attempt"] == 1
    assert (
        "value" not in steps["big"]
        and steps["big"]["size"] > 200_000
        and steps["third"]["attempt"] == 2
    )
    kept = store.ref(job.id).collection("steps").document(steps["big"]["document"]).get().to_dict()
    assert kept is not None and kept["value"] == "x" * 200_000
    assert done.raw.get("stepDocuments") is True and done.cursor is None


def test_a_step_of_a_run_that_lost_its_lease_is_not_recorded(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, engine_factory: Any
) -> None:
    release = threading.Event()
    entered = threading.Event()

    @registry.handler("fenced", max_attempts=5, timeout=60)
    def fenced(ctx: JobContext[Any]) -> str:
        def work() -> str:
            if ctx.attempt == 1:
                entered.set()
                release.wait(
                    30
                )  # the first run stalls here while its lease expires and another run takes over
            return f"by attempt {ctx.attempt}"

        return ctx.step("only", work)

    job = client.enqueue("fenced")
    stale = engine_factory(lease_seconds=1.0)
    [first] = stale.claim([store.get(job.id)])
    stale.keeper.stop()  # a process that stopped renewing (paused, partitioned)
    outcome: list[str | None] = []
    runner = threading.Thread(target=lambda: outcome.append(first.run()))
    runner.start()
    assert entered.wait(10)
    wait_for(
        lambda: store.get(job.id).lease_expired(store.now()), 10, 0.1, "the first lease to expire"
    )  # type: ignore[union-attr]
    fresh = engine_factory(lease_seconds=10.0)
    [second] = fresh.claim([store.get(job.id)])
    assert second.run() == "completed"
    release.set()
    runner.join(10)
    done = store.get(job.id)
    assert done is not None and done.status is Status.COMPLETED and done.result == "by attempt 2"
    assert (
        done.steps["only"]["value"] == "by attempt 2" and done.steps["only"]["attempt"] == 2
    )  # the stale result never landed
    assert outcome == [None] and first.lease_lost


def test_a_sleeping_job_holds_no_slot_wakes_on_time_and_keeps_its_steps(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    ran: Counter[str] = Counter()

    @registry.handler("napper", concurrency=1, timeout=60)
    def napper(ctx: JobContext[Any]) -> dict[str, Any]:
        before = ctx.step("before", lambda: ran.update(["before"]) or store.now().isoformat())
        if ctx.metadata.get("nap"):
            ctx.sleep(float(ctx.metadata["nap"]))
        return {"before": before, "woke": store.now().isoformat()}

    sleeper = client.enqueue("napper", {"nap": 3})
    worker_factory(concurrency=4)
    wait_for(lambda: store.get(sleeper.id).raw.get("sleeps"), 10, 0.05, "the job to go to sleep")  # type: ignore[union-attr]
    slept = store.get(sleeper.id)
    assert (
        slept is not None
        and slept.status is Status.PENDING
        and slept.attempts == 0
        and slept.lease is not None
    )
    wake_at = slept.sleeps[0]
    assert slept.scheduled_for == wake_at
    # The type allows one job at a time: another runs while the first sleeps.
    other = client.enqueue("napper")
    other_done = wait_finished(store, [other.id], timeout=10)[other.id]
    assert (
        other_done.status is Status.COMPLETED
        and other_done.completed_at is not None
        and other_done.completed_at < wake_at
    )
    done = wait_finished(store, [sleeper.id], timeout=20)[sleeper.id]
    assert done.status is Status.COMPLETED and done.attempts == 1
    assert done.started_at is not None and wake_at <= done.started_at < wake_at + timedelta(
        seconds=3
    )  # woke on time
    assert (
        done.result["before"] == slept.steps["before"]["value"] and ran["before"] == 2
    )  # one each, not again after the sleep
    assert done.active_ms > 0 and done.sleeps == [wake_at]


def test_cancel_during_a_sleep_ends_the_job_cancelled(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    woke: list[str] = []

    @registry.handler("long_nap", timeout=60)
    def long_nap(ctx: JobContext[Any]) -> str:
        ctx.sleep(30)
        woke.append(ctx.job_id)
        return "woke"

    job = client.enqueue("long_nap")
    worker_factory()
    wait_for(lambda: store.get(job.id).raw.get("sleeps"), 10, 0.05, "the job to go to sleep")  # type: ignore[union-attr]
    assert client.cancel(job.id).status is Status.CANCELLED
    time.sleep(0.5)
    done = store.get(job.id)
    assert done is not None and done.status is Status.CANCELLED and woke == []


def test_five_steps_each_killed_in_turn_run_each_side_effect_once(
    client: JobsClient, store: JobStore, spawn_worker: Any, tmp_path: Path
) -> None:
    env = {"JOBS_TEST_EFFECTS_DIR": str(tmp_path), "JOBS_LEASE_SECONDS": "1"}
    job = client.enqueue("five_steps", {"pause": 0.6})
    started = tmp_path / "started"
    for step in range(1, 6):
        worker = spawn_worker("--concurrency", "1", env=env)
        # Killed inside step `step`, after it started and before its side effect.
        mark = f"{step} {worker.process.pid}"
        wait_for(
            lambda mark=mark: (
                mark in (started.read_text().splitlines() if started.exists() else [])
            ),
            60,
            0.02,
            f"step {step} to start in worker {step}",
        )
        worker.signal(signal.SIGKILL)
        worker.wait(10)
    spawn_worker("--concurrency", "1", env=env)
    done = wait_finished(store, [job.id], timeout=60)[job.id]
    assert done.status is Status.COMPLETED and done.result == [10, 20, 30, 40, 50]
    assert Counter(lines(tmp_path / "effects")) == Counter(
        {str(k): 1 for k in range(1, 6)}
    )  # each side effect once
    starts = Counter(line.split()[0] for line in started.read_text().splitlines())
    assert starts == Counter(
        {str(k): 2 for k in range(1, 6)}
    )  # each step started twice: killed once, then done
    assert done.attempts == 6 and [done.steps[f"stage-{k}"]["attempt"] for k in range(1, 6)] == [
        2,
        3,
        4,
        5,
        6,
    ]


def test_a_step_after_the_lease_is_lost_raises_lease_lost(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, engine_factory: Any
) -> None:
    registry.handler("plain_step")(lambda ctx: ctx.step("a", lambda: 1))
    job = client.enqueue("plain_step")
    engine = engine_factory()
    [execution] = engine.claim([store.get(job.id)])
    store.ref(job.id).update(
        {"lease": {"holder": "someone-else", "token": "stolen"}}
    )  # another run took it
    with pytest.raises(LeaseLost):
        execution.record_step("a", 1, 1.0)
    assert "steps" not in store.get(job.id).raw  # type: ignore[union-attr]


def test_a_worker_shutting_down_hands_a_continuable_job_on_at_its_next_checkpoint(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    seen: list[tuple[int, int]] = []

    @registry.handler("counting", continuable=True, timeout=120)
    def counting(ctx: JobContext[Any]) -> int:
        n = int(ctx.cursor or 0)
        while n < 40:
            time.sleep(0.05)
            n += 1
            seen.append((ctx.attempt, n))
            ctx.checkpoint(n)
        return n

    job = client.enqueue("counting")
    first = worker_factory(grace=10.0)
    wait_for(lambda: len(seen) >= 5, 10, 0.02, "a few rows")
    first.stop()  # SIGTERM's path: the job stops at its next checkpoint, well within the grace
    handed = store.get(job.id)
    assert (
        handed is not None
        and handed.status is Status.PENDING
        and handed.continuations == 1
        and handed.attempts == 0
    )
    stopped_at = handed.cursor
    assert isinstance(stopped_at, int) and 5 <= stopped_at < 40
    worker_factory()
    done = wait_finished(store, [job.id])[job.id]
    assert done.status is Status.COMPLETED and done.result == 40 and done.attempts == 1
    assert [n for _a, n in seen] == list(
        range(1, 41)
    )  # every row once, the second worker from the cursor on


def test_async_steps_run_once_across_a_retry(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    ran: Counter[str] = Counter()

    async def fetch(n: int) -> dict[str, int]:
        await asyncio.sleep(0.01)
        ran.update(["fetch"])
        return {"n": n}

    @registry.handler("async_steps", max_attempts=3, backoff=Backoff.fixed(0))
    async def async_steps(ctx: JobContext[Any]) -> int:
        fetched = await ctx.astep("fetch", fetch, 41)
        plain = await ctx.astep("plain", lambda: ran.update(["plain"]) or 1)
        if ctx.attempt == 1:
            raise ConnectionError("fails once after its steps")
        return int(fetched["n"]) + int(plain)

    job = client.enqueue("async_steps")
    worker_factory()
    done = wait_finished(store, [job.id])[job.id]
    assert done.status is Status.COMPLETED and done.result == 42 and done.attempts == 2
    assert ran == Counter({"fetch": 1, "plain": 1})


def test_a_step_past_its_own_timeout_fails_the_attempt_and_the_retry_goes_on_from_it(
    client: JobsClient, store: JobStore, registry: HandlerRegistry, worker_factory: Any
) -> None:
    ran: Counter[str] = Counter()

    def slow(attempt: int) -> str:
        ran.update([f"slow-{attempt}"])
        time.sleep(4.0 if attempt == 1 else 0.3)  # the first run hangs past the step's 2 s
        return f"attempt {attempt}"

    @registry.handler("timed_steps", max_attempts=3, timeout=60, backoff=Backoff.fixed(0))
    def timed_steps(ctx: JobContext[Any]) -> list[str]:
        first = ctx.step("first", lambda: ran.update(["first"]) or "once")
        return [first, ctx.step("slow", slow, ctx.attempt, step_timeout=2.0)]

    job = client.enqueue("timed_steps")
    worker_factory()
    wait_for(
        lambda: (store.get(job.id).error or "").startswith("step 'slow' did not finish"),
        10,
        0.05,
        "the step's timeout",
    )  # type: ignore[union-attr]
    done = wait_finished(store, [job.id])[job.id]
    assert (
        done.status is Status.COMPLETED
        and done.result == ["once", "attempt 2"]
        and done.attempts == 2
    )
    assert ran == Counter({"first": 1, "slow-1": 1, "slow-2": 1})
    assert (
        done.steps["slow"]["value"] == "attempt 2"
    )  # the abandoned first run's late result was never recorded
    time.sleep(2.5)  # the abandoned run ends now: its late result must still not land
    assert store.get(job.id).steps["slow"]["value"] == "attempt 2"  # type: ignore[union-attr]
