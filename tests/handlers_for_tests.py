"""Handlers that worker subprocesses in the tests load (`--handlers handlers_for_tests`)."""

from __future__ import annotations

import os
import time
from typing import Any

from google.cloud import firestore

from jobs_lib import Backoff, JobContext, handler


@handler("noop", max_attempts=3)
def noop(ctx: JobContext[Any]) -> None:
    """Do nothing."""


@handler("sleep", max_attempts=3, timeout=120)
def sleep(ctx: JobContext[Any]) -> dict[str, Any]:
    """Sleep ``metadata.seconds``, reporting progress, then count the run in ``runs/{jobId}``."""
    seconds = float(ctx.metadata.get("seconds", 1))
    marker = ctx.db.collection("runs").document(ctx.job_id)
    marker.set({"started": firestore.Increment(1), "pid": os.getpid()}, merge=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(min(0.2, max(end - time.monotonic(), 0)))
        ctx.progress(
            min(100.0, round(100 * (1 - (end - time.monotonic()) / seconds), 1)), "sleeping"
        )
    marker.set({"finished": firestore.Increment(1)}, merge=True)
    return {"pid": os.getpid(), "slept": seconds}


def _interval(ctx: JobContext[Any]) -> dict[str, Any]:
    start = time.time()
    time.sleep(float(ctx.metadata.get("seconds", 0.3)))
    end = time.time()
    ctx.db.collection("intervals").document(ctx.job_id).set(
        {
            "start": start,
            "end": end,
            "pid": os.getpid(),
            "orgId": ctx.job.org_id,
            "attempt": ctx.attempt,
        }
    )
    return {"start": start, "end": end}


@handler("limited", concurrency=2, timeout=60)
def limited(ctx: JobContext[Any]) -> dict[str, Any]:
    """At most two at once, across every worker."""
    return _interval(ctx)


@handler("limited_per_org", concurrency=1, concurrency_key="orgId", timeout=60)
def limited_per_org(ctx: JobContext[Any]) -> dict[str, Any]:
    """At most one at once per organisation."""
    return _interval(ctx)


@handler("single", concurrency=1, timeout=120, max_attempts=3)
def single(ctx: JobContext[Any]) -> dict[str, Any]:
    """One at a time; counts its runs in runs/{jobId}."""
    ctx.db.collection("runs").document(ctx.job_id).set(
        {"started": firestore.Increment(1)}, merge=True
    )
    return _interval(ctx)


@handler("crash", max_attempts=2)
def crash(ctx: JobContext[Any]) -> None:
    """Kill the worker process outright, as a segfault in a native library would."""
    ctx.db.collection("runs").document(ctx.job_id).set(
        {"started": firestore.Increment(1)}, merge=True
    )
    os._exit(3)


@handler("effect", max_attempts=10, timeout=60)
def effect(ctx: JobContext[Any]) -> int:
    """A side effect per run, then a short pause: a line in $JOBS_TEST_EFFECTS_DIR/<pid> (written
    before the job can complete, kept by the OS even if the process is killed), or, without that
    variable, an increment of effects/{jobId}.runs."""
    folder = os.environ.get("JOBS_TEST_EFFECTS_DIR")
    if folder:
        fd = os.open(
            os.path.join(folder, str(os.getpid())), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
        )
        try:
            os.write(fd, f"{ctx.job_id}\n".encode())
        finally:
            os.close(fd)
    else:
        ctx.db.collection("effects").document(ctx.job_id).set(
            {"runs": firestore.Increment(1)}, merge=True
        )
    time.sleep(float(ctx.metadata.get("seconds", 0.01)))
    return ctx.attempt


@handler("flaky_once", max_attempts=3, backoff=Backoff.fixed(0))
def flaky_once(ctx: JobContext[Any]) -> int:
    """Fail the first attempt, succeed on the next (retried at once)."""
    if ctx.attempt == 1:
        raise ConnectionError("the first attempt always fails")
    return ctx.attempt


@handler("rated", rate="10/s", max_attempts=3, timeout=30)
def rated(ctx: JobContext[Any]) -> int:
    """At most 10 starts a second across every process (tests/test_rates.py)."""
    time.sleep(float(ctx.metadata.get("seconds", 0.0)))
    return ctx.attempt


@handler("downstream", breaker=3, breaker_cooldown=2.0, max_attempts=1, timeout=30)
def downstream(ctx: JobContext[Any]) -> str:
    """Fails while the file $JOBS_TEST_DOWNSTREAM holds "down" (tests/test_breakers.py)."""
    path = os.environ.get("JOBS_TEST_DOWNSTREAM", "")
    with open(path) as f:
        if f.read().strip() == "down":
            raise ConnectionError("the downstream service is down")
    time.sleep(0.2)
    return "up"


if os.environ.get("JOBS_TEST_KILL_BEFORE_RELEASE"):
    # The chaos of tests/test_flows.py: this process dies (SIGKILL) right after a parent's final
    # write has landed and before the jobs waiting for it are released.
    import signal

    from jobs_lib.engine.runner import Engine

    def _die(self: Engine, job_ids: list[str]) -> list[str]:
        os.kill(os.getpid(), signal.SIGKILL)
        return []

    Engine.release_dependents = _die  # type: ignore[method-assign]


def _mark(name: str, line: str) -> None:
    """Append a line to $JOBS_TEST_EFFECTS_DIR/<name> (kept by the OS if the process is killed
    next)."""
    fd = os.open(
        os.path.join(os.environ["JOBS_TEST_EFFECTS_DIR"], name),
        os.O_WRONLY | os.O_APPEND | os.O_CREAT,
        0o644,
    )
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def _stage(ctx: JobContext[Any], k: int) -> int:
    _mark("started", f"{k} {os.getpid()}")
    time.sleep(float(ctx.metadata.get("pause", 0.6)))  # where the test kills the process
    _mark("effects", str(k))  # the step's side effect
    return k * 10


@handler("five_steps", max_attempts=10, timeout=60)
def five_steps(ctx: JobContext[Any]) -> list[int]:
    """Five durable steps, each marking its start and its side effect (tests/test_durable.py)."""
    return [ctx.step(f"stage-{k}", _stage, ctx, k) for k in range(1, 6)]


@handler("rows", continuable=True, max_attempts=3, timeout=600)
def rows(ctx: JobContext[Any]) -> dict[str, Any]:
    """Process `metadata.rows` rows in chunks of 1,000, checkpointing after each chunk; each chunk
    counts itself in chunks/{jobId}-{n} with where it ran (a continuable job,
    tests/test_dev_stack.py)."""
    total = int(ctx.metadata.get("rows", 100_000))
    pause = float(ctx.metadata.get("pause", 0.05))
    done = int(ctx.cursor or 0)
    while done < total:
        chunk = done // 1000
        time.sleep(pause)  # the work on rows done .. done + 999
        ctx.db.collection("chunks").document(f"{ctx.job_id}-{chunk}").set(
            {
                "count": firestore.Increment(1),
                "where": os.environ.get("FUNCTION_TARGET", "worker"),
                "pid": os.getpid(),
            },
            merge=True,
        )
        done = min(done + 1000, total)
        ctx.checkpoint(done)
    return {"rows": done}


@handler("napping", max_attempts=3, timeout=60)
def napping(ctx: JobContext[Any]) -> dict[str, Any]:
    """A step, a durable sleep of `metadata.seconds`, another step (tests/test_functions.py)."""
    before = ctx.step("before", lambda: os.environ.get("FUNCTION_TARGET", "worker"))
    ctx.sleep(float(ctx.metadata.get("seconds", 0.5)))
    return {
        "before": before,
        "after": ctx.step("after", lambda: os.environ.get("FUNCTION_TARGET", "worker")),
    }


@handler("fair_job", fair_key="orgId", max_attempts=3, timeout=60)
def fair_job(ctx: JobContext[Any]) -> None:
    """Shares the runners between organisations (`fair_key`); sleeps ``metadata.seconds``."""
    time.sleep(float(ctx.metadata.get("seconds", 0.02)))
