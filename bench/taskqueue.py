"""jobs_lib beside the peer a Firebase user would pick instead: a task queue function.

`python -m bench.taskqueue` makes a project with `jobs init --new`, adds a task queue function
(`firebase_functions.tasks_fn.on_task_dispatched`) to its main.py, and starts
`firebase emulators:start --only firestore,functions,tasks` on it once. In that same run:

* N jobs through jobs_lib's created-event function (`jobs_created`), each written by
  `JobsClient.enqueue`, one after another, as a server would;
* N tasks through the task queue function, each enqueued with
  `firebase_admin.functions.task_queue("work").enqueue`, one after another, on firebase-tools' Cloud
  Tasks emulator.

Both handlers do nothing but note when they started (a JSON line with the enqueue time the caller
passed and `time.time()` at start, the same clock). Printed: enqueue calls/s, enqueue-to-start
p50/p95/max, jobs/s from the first enqueue to the last start, the retries of one failing job and
one failing task (three attempts allowed each), and what the caller can see of each.

The tasks emulator makes one attempt more than `max_attempts` and ignores `schedule_delay_seconds`
(measured, firebase-tools 14.18); both are noted beside the figures. The Python admin SDK posts
what `enqueue` is given as the body, and the Python task handler reads only ``{"data": ...}``, so
the payload is wrapped as Firebase's own samples do.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from jobs_lib.config import Settings
from jobs_lib.deploy import adopt
from jobs_lib.deploy.firebase import ROOT
from jobs_lib.devstack.firebase_dev import FirebaseStack

PROJECT = "demo-bench-taskqueue"
TASKS_PORT = 9499

TASK_FUNCTION = '''

# -- bench.taskqueue: the peer, a task queue function on Cloud Tasks -------------------------------
import json as _json
import os as _os
import time as _time

from firebase_functions import tasks_fn
from firebase_functions.options import RateLimits, RetryConfig


@tasks_fn.on_task_dispatched(
    retry_config=RetryConfig(max_attempts=3, min_backoff_seconds=1),
    rate_limits=RateLimits(max_concurrent_dispatches={concurrency}),
)
def work(req: tasks_fn.CallableRequest) -> None:
    """Note the start; fail when asked to."""
    started = _time.time()
    with open(_os.environ["BENCH_OUT"], "a") as out:
        out.write(_json.dumps({{"kind": "task", "start": started, **req.data}}) + "\\n")
    if req.data.get("fail"):
        raise RuntimeError("asked to fail")
'''

HANDLERS = '''"""bench.taskqueue's handlers: note the start (as the task function does)."""

import json
import os
import time

from jobs_lib import Backoff, JobContext, handler


def _note(ctx: JobContext) -> None:
    with open(os.environ["BENCH_OUT"], "a") as out:
        out.write(json.dumps({"kind": "job", "start": time.time(), **ctx.metadata}) + "\\n")


@handler("bench_noop", max_attempts=1)
def bench_noop(ctx: JobContext) -> None:
    _note(ctx)


@handler("bench_fail", max_attempts=3, backoff=Backoff(delay=1, jitter=False))
def bench_fail(ctx: JobContext) -> None:
    _note(ctx)
    raise RuntimeError("asked to fail")
'''


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_project(root: Path, out: Path, concurrency: int) -> Path:
    """A project as `jobs init --new` makes it, with the task function and the bench handlers."""
    planned = adopt.plan(root, new=True, source="functions")
    planned.apply()
    functions = root / "functions"
    main = functions / "main.py"
    main.write_text(main.read_text() + TASK_FUNCTION.format(concurrency=concurrency))
    (functions / "handlers.py").write_text(HANDLERS)
    with (functions / ".env").open("a") as env:
        env.write(f"BENCH_OUT={out}\n")
    config = json.loads((root / "firebase.json").read_text())
    config["emulators"]["tasks"] = {"host": "127.0.0.1", "port": TASKS_PORT}
    (root / "firebase.json").write_text(json.dumps(config, indent=2) + "\n")
    (functions / "venv").symlink_to(ROOT / "functions" / "venv")
    return root


def lines(out: Path) -> list[dict[str, Any]]:
    return (
        [json.loads(x) for x in out.read_text().splitlines() if x.strip()] if out.exists() else []
    )


def wait_lines(out: Path, want: Any, count: int, timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [x for x in lines(out) if want(x)]
        if len(found) >= count:
            return found
        time.sleep(0.1)
    return [x for x in lines(out) if want(x)]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def summary(
    run: str, enqueued: list[float], calls: float, started: list[dict[str, Any]]
) -> dict[str, Any]:
    waits = [x["start"] - x["enq"] for x in started]
    return {
        "path": run,
        "jobs": len(enqueued),
        "started": len(started),
        "enqueue_calls_per_s": round(len(enqueued) / calls, 1),
        "p50_s": round(statistics.median(waits), 3) if waits else None,
        "p95_s": round(percentile(waits, 0.95), 3) if waits else None,
        "max_s": round(max(waits), 3) if waits else None,
        "jobs_per_s": round(len(started) / (max(x["start"] for x in started) - min(enqueued)), 1)
        if started
        else None,
    }


def run(jobs: int, concurrency: int, tick: float, rounds: int) -> dict[str, Any]:
    import firebase_admin
    from firebase_admin import functions as admin_functions

    from jobs_lib import JobsClient

    work = Path(tempfile.mkdtemp(prefix="bench-taskqueue-"))
    out = work / "starts.jsonl"
    root = make_project(work / "project", out, concurrency)
    log(f"project made by `jobs init --new` in {root}; starting the emulators ...")
    stack = FirebaseStack(
        project=PROJECT,
        config=root / "firebase.json",
        functions_dir=root / "functions",
        venv=ROOT / "functions" / "venv",
        only="firestore,functions,tasks",
        functions=("work",),
        handlers="handlers",
        tick_interval=tick,
        log_dir=work,
        env={"BENCH_OUT": str(out)},
    )
    stack.start()
    results: dict[str, Any] = {"ready_s": round(stack.ready_seconds or 0, 1), "rounds": []}
    try:
        os.environ["CLOUD_TASKS_EMULATOR_HOST"] = f"127.0.0.1:{TASKS_PORT}"
        app = firebase_admin.initialize_app(options={"projectId": PROJECT}, name="bench-taskqueue")
        queue = admin_functions.task_queue("work", app=app)
        client = JobsClient(Settings(project=PROJECT))
        # Warm both: the first call of each starts a Python worker process.
        queue.enqueue({"data": {"enq": time.time(), "warm": True}})
        client.enqueue("bench_noop", {"enq": time.time(), "warm": True})
        wait_lines(out, lambda x: x.get("warm"), 2, 120)

        def one_by_one(send: Any) -> Any:
            def run_side(n: int, tag: str) -> tuple[list[float], list[str], float]:
                enqueued, ids = [], []
                began = time.monotonic()
                for i in range(n):
                    enqueued.append(time.time())
                    ids.append(send({"enq": enqueued[-1], "n": i, "side": tag}))
                return enqueued, ids, time.monotonic() - began

            return run_side

        def batch(n: int, tag: str) -> tuple[list[float], list[str], float]:
            began, now = time.monotonic(), time.time()
            made = client.enqueue_many(
                [
                    {"type": "bench_noop", "metadata": {"enq": now, "n": i, "side": tag}}
                    for i in range(n)
                ]
            )
            return [now] * n, [job.id for job in made], time.monotonic() - began

        sides = {
            "job": (
                "jobs_lib created-event, enqueue one by one",
                one_by_one(lambda data: client.enqueue("bench_noop", data).id),
            ),
            "batch": ("jobs_lib created-event, one enqueue_many", batch),
            "task": (
                "task queue function, enqueue one by one",
                one_by_one(lambda data: str(queue.enqueue({"data": data}))),
            ),
        }
        for number in range(rounds):
            # Rotate which side goes first: the emulator's worker processes stay up between.
            order = list(sides)[number % 3 :] + list(sides)[: number % 3]
            row = {}
            for side in order:
                name, run_side = sides[side]
                tag = f"{side}-{number}"
                enqueued, ids, calls = run_side(jobs, tag)
                started = wait_lines(out, lambda x, g=tag: x.get("side") == g, jobs, 300)
                row[side] = {
                    **summary(name, enqueued, calls, started),
                    "returned": ids[0],
                    "round": number + 1,
                }
                log(json.dumps(row[side]))
            results["rounds"].append(row)

        # Retries: one failing job and one failing task, three attempts allowed each.
        failing_job = client.enqueue("bench_fail", {"enq": time.time(), "fail": True})
        queue.enqueue({"data": {"enq": time.time(), "fail": True}})
        # Three attempts of each, then a while for the fourth the tasks emulator makes.
        wait_lines(out, lambda x: x.get("fail"), 6, 120)
        time.sleep(15)
        attempts = [x for x in lines(out) if x.get("fail")]
        for kind in ("job", "task"):
            mine = [x for x in attempts if x["kind"] == kind]
            first = mine[0]["enq"] if mine else 0
            results[f"{kind}_retries"] = [round(x["start"] - first, 2) for x in mine]
        seen = client.get(failing_job.id)
        results["job_after_failing"] = {
            "status": seen.status.value,
            "attempts": seen.attempts,
            "error": (seen.error or "")[:60],
        }
        firebase_admin.delete_app(app)
        # How long each function ran, as the Functions emulator logged it.
        text = stack.log_tail(50_000_000)
        for name in ("jobs_created", "work"):
            ms = sorted(
                float(x) for x in re.findall(rf'Finished "us-central1-{name}" in ([0-9.]+)ms', text)
            )
            results[f"{name}_ms"] = {
                "runs": len(ms),
                "p50": round(statistics.median(ms), 1) if ms else None,
                "p95": round(percentile(ms, 0.95), 1) if ms else None,
            }
    finally:
        stack.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both sides, alternating")
    parser.add_argument(
        "--concurrency", type=int, default=10, help="the task queue's max_concurrent_dispatches"
    )
    parser.add_argument(
        "--tick", type=float, default=5.0, help="seconds between jobs_tick calls (production: 60)"
    )
    args = parser.parse_args()
    results = run(args.jobs, args.concurrency, args.tick, args.rounds)
    print(json.dumps(results, indent=2))
    print()
    print("| round | path | jobs | enqueue calls/s | enqueue-to-start p50 | p95 | max | jobs/s |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in results["rounds"]:
        for r in row.values():
            print(
                f"| {r['round']} | {r['path']} | {r['jobs']} | {r['enqueue_calls_per_s']} | "
                f"{r['p50_s']} s | {r['p95_s']} s | {r['max_s']} s | {r['jobs_per_s']} |"
            )
    print(f"\nretries, s after the enqueue: job {results['job_retries']}")
    print(f"                              task {results['task_retries']}")
    print(f"the failing job afterwards: {results['job_after_failing']}")
    print(
        f"function run times, ms (the Functions emulator's log): "
        f"jobs_created {results['jobs_created_ms']}, work {results['work_ms']}"
    )


if __name__ == "__main__":
    main()
