"""What durable jobs cost, on the emulator: `python -m bench.durable`.

In one process against a fresh emulator, through the runner itself (`Engine.claim` and
`Execution.run`, the path every worker, tick and created-event takes), counting the Firestore
operations the store makes and timing each part, each beside a plain job of the same shape:

- steps: a handler of N no-op ``ctx.step`` calls beside one calling the same function N times
  directly: operations and milliseconds per step (the cost of recording a result);
- large steps: a 100 kB result (kept in a document of its own) per job;
- checkpoints: a handler calling ``ctx.checkpoint`` N times in a tight loop (written with the next
  progress write, at most once a second);
- continuations: a continuable handler whose every slice ends at its first checkpoint, run slice
  after slice as the functions would (each continuation also creates the wake-up document that
  brings the next created-event, and that event deletes it: both counted);
- sleeps: a handler that sleeps 0.05 s N times, each wake-up read and claimed again.

Operations per job include the job's own read and claim; the "per" columns subtract the plain
job's cost and divide by N.

    python -m bench.durable            # N = 200 steps and checkpoints, 40 continuations and sleeps
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from bench.__main__ import log, warm_up
from jobs_lib import JobContext, JobsClient, Settings
from jobs_lib.builtin.continuations import CONTINUE_TYPE
from jobs_lib.devstack import emulator
from jobs_lib.engine.runner import Engine
from jobs_lib.registry import HandlerRegistry, default_registry
from jobs_lib.store import JobStore

PROJECT = "demo-bench-durable"
#: The work between two checkpoints of the continuation cell: just over its slice.
SLICE = 0.1


def noop() -> None:
    """The step's function: nothing, so that only the step's own cost is measured."""


def registry_for(n: int) -> HandlerRegistry:
    registry = HandlerRegistry()
    for name in default_registry.types():  # the built-in ones (jobs.continue)
        spec = default_registry.get(name)
        assert spec is not None
        registry.register(spec)

    @registry.handler("plain")
    def plain(ctx: JobContext[Any]) -> int:
        for _ in range(n):
            noop()
        return n

    @registry.handler("steps")
    def steps(ctx: JobContext[Any]) -> int:
        for i in range(n):
            ctx.step(f"s{i}", noop)
        return n

    @registry.handler("big_step")
    def big_step(ctx: JobContext[Any]) -> int:
        return len(ctx.step("big", lambda: "x" * 100_000))

    @registry.handler("checkpoints")
    def checkpoints(ctx: JobContext[Any]) -> int:
        for i in range(n):
            ctx.checkpoint(i)
        return n

    @registry.handler("slices", continuable=True, timeout=3600)
    def slices(ctx: JobContext[Any]) -> int:
        done = int(ctx.cursor or 0)
        while done < int(ctx.metadata["n"]):
            time.sleep(SLICE * 1.1)
            done += 1
            ctx.checkpoint(done)
        return done

    @registry.handler("sleeps", timeout=600)
    def sleeps(ctx: JobContext[Any]) -> int:
        for _ in range(int(ctx.metadata["n"])):
            ctx.sleep(0.05)
        return int(ctx.metadata["n"])

    return registry


class Meter:
    """Reads, writes and seconds spent between `start` and `stop`, added up."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.reads = self.writes = 0
        self.seconds = 0.0

    def measure(self, fn: Any) -> Any:
        before = self.store.stats.snapshot()
        started = time.perf_counter()
        result = fn()
        self.seconds += time.perf_counter() - started
        after = self.store.stats.snapshot()
        self.reads += after["reads"] - before["reads"]
        self.writes += after["writes"] - before["writes"]
        return result


def run_job(
    engine: Engine, store: JobStore, job_id: str, meter: Meter, handler_seconds: list[float]
) -> str | None:
    """Read the job, claim it and run it (one invocation), measured."""

    def once() -> str | None:
        [execution] = engine.claim([store.get(job_id)])  # type: ignore[list-item]
        started = time.perf_counter()
        status = execution.run()
        handler_seconds.append(time.perf_counter() - started)
        return status

    return meter.measure(once)  # type: ignore[no-any-return]


def cell(
    engine: Engine,
    client: JobsClient,
    store: JobStore,
    job_type: str,
    jobs: int,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`jobs` jobs of one type, each run to its end in one invocation."""
    meter = Meter(store)
    seconds: list[float] = []
    for _ in range(jobs):
        job = client.enqueue(job_type, metadata or {})
        assert run_job(engine, store, job.id, meter, seconds) == "completed", store.get(job.id)
    return {
        "reads": meter.reads / jobs,
        "writes": meter.writes / jobs,
        "ms": 1000 * sum(seconds) / jobs,
    }


def resumed(
    engine: Engine, client: JobsClient, store: JobStore, job_type: str, n: int, wakes: bool
) -> dict[str, Any]:
    """One job run invocation after invocation until it completes (continuations or sleeps)."""
    meter = Meter(store)
    seconds: list[float] = []
    job = client.enqueue(job_type, {"n": n})
    invocations = 0
    while True:
        current = store.get(job.id)
        assert current is not None
        if current.scheduled_for is not None and current.scheduled_for > store.now():
            time.sleep(max((current.scheduled_for - store.now()).total_seconds(), 0.0))
        invocations += 1
        status = run_job(engine, store, job.id, meter, seconds)
        if status == "completed":
            break
        assert status == "pending", store.get(job.id)
        if (
            wakes
        ):  # the created-event of the wake-up document deletes it (as jobs_lib.functions does)
            [wake] = [
                j for j in store.list_jobs(job_type=CONTINUE_TYPE, status="pending", limit=10)
            ]
            meter.measure(lambda wake=wake: store.delete(wake.id, "delete:wake"))
    return {
        "invocations": invocations,
        "reads": meter.reads,
        "writes": meter.writes,
        "ms": 1000 * sum(seconds),
        "ms_each": [round(1000 * s, 1) for s in seconds],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="steps (and checkpoints) per job")
    parser.add_argument("--jobs", type=int, default=10, help="jobs per cell")
    parser.add_argument(
        "--resumes", type=int, default=40, help="continuations (and sleeps) of the job that resumes"
    )
    args = parser.parse_args()
    n = args.steps
    emu = emulator.start(project=PROJECT)
    os.environ["FIRESTORE_EMULATOR_HOST"] = emu.address  # this process's clients use it
    try:
        settings = Settings(project=PROJECT, slice_seconds=SLICE)
        store = JobStore(settings)
        warm_up(store.db)
        registry = registry_for(n)
        client = JobsClient(store=store, registry=registry)
        engine = Engine(
            store, registry, runtime="function"
        )  # "function": continuations make wake-ups
        log(f"warming up, then cells of {args.jobs} jobs, {n} steps each")
        cell(engine, client, store, "plain", 3)
        cell(engine, client, store, "steps", 1)
        plain = cell(engine, client, store, "plain", args.jobs)
        steps = cell(engine, client, store, "steps", args.jobs)
        big = cell(engine, client, store, "big_step", args.jobs)
        checkpoints = cell(engine, client, store, "checkpoints", args.jobs)
        log(f"a job continued {args.resumes} times, then one that sleeps {args.resumes} times")
        continued = resumed(engine, client, store, "slices", args.resumes, wakes=True)
        slept = resumed(engine, client, store, "sleeps", args.resumes, wakes=False)
        engine.close()
    finally:
        emu.stop()

    def per(measured: dict[str, Any], count: int) -> dict[str, float]:
        return {
            "reads": round((measured["reads"] - plain["reads"]) / count, 3),
            "writes": round((measured["writes"] - plain["writes"]) / count, 3),
            "ms": round((measured["ms"] - plain["ms"]) / count, 3),
        }

    k = args.resumes
    slices_ms = continued["ms_each"][:-1]
    figures = {
        "plain_job": {key: round(v, 3) for key, v in plain.items()},
        "per_step": per(steps, n),
        "per_large_step": per(big, 1),
        "per_checkpoint": per(checkpoints, n),
        # Each of the k continuations: the slice's record, the wake-up's create and delete, the next
        # read and claim.
        "per_continuation": {
            "reads": round((continued["reads"] - plain["reads"]) / k, 3),
            "writes": round((continued["writes"] - plain["writes"]) / k, 3),
            "ms_overhead": round(
                sum(ms - 1000 * SLICE * 1.1 for ms in slices_ms) / len(slices_ms), 1
            ),
        },
        "per_sleep": {
            "reads": round((slept["reads"] - plain["reads"]) / k, 3),
            "writes": round((slept["writes"] - plain["writes"]) / k, 3),
            "ms": round((slept["ms"] - plain["ms"]) / k, 1),
        },
    }
    print(json.dumps(figures))
    print(
        f"\nplain job (read, claim, run, complete): {plain['reads']:.2f} reads, "
        f"{plain['writes']:.2f} writes, handler {plain['ms']:.2f} ms\n"
        f"per ctx.step (no-op, {n} a job):        {figures['per_step']['reads']} reads, "
        f"{figures['per_step']['writes']} writes, +{figures['per_step']['ms']} ms\n"
        f"per 100 kB step (own document):         {figures['per_large_step']['reads']} reads, "
        f"{figures['per_large_step']['writes']} writes, +{figures['per_large_step']['ms']} ms\n"
        f"per ctx.checkpoint ({n} a job):         {figures['per_checkpoint']['reads']} reads, "
        f"{figures['per_checkpoint']['writes']} writes, +{figures['per_checkpoint']['ms']} ms\n"
        f"per continuation ({k}):                 {figures['per_continuation']['reads']} reads, "
        f"{figures['per_continuation']['writes']} writes, "
        f"{figures['per_continuation']['ms_overhead']} ms a slice beyond its work\n"
        f"per sleep ({k}):                        {figures['per_sleep']['reads']} reads, "
        f"{figures['per_sleep']['writes']} writes, {figures['per_sleep']['ms']} ms"
    )


if __name__ == "__main__":
    main()
