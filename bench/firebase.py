"""The Firebase CLI path's start-up: `python -m bench.firebase` prints how long `firebase
emulators:start` takes to be ready on the repository's firebase.json, and from there to the first
job completed through the Functions emulator's created-trigger, then the latency of jobs written one
after another.

Each repeat starts the CLI afresh (functions/venv already made: `jobs functions-venv`).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from google.cloud import firestore

from jobs_lib.devstack.firebase_dev import FirebaseStack

PROJECT = "demo-bench-firebase"


def finished(ref: Any, timeout: float = 120.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = ref.get().to_dict() or {}
        if doc.get("status") == "completed":
            return time.monotonic()
        time.sleep(0.02)
    raise TimeoutError(f"job {ref.id} did not complete")


def one_start(jobs: int, cli: str | None) -> dict[str, Any]:
    started = time.monotonic()
    with FirebaseStack(
        project=PROJECT, handlers="bench.handlers", tick_interval=None, firebase_cli=cli
    ) as stack:
        up = time.monotonic()
        db = firestore.Client(project=PROJECT)
        first = db.collection("backgroundJobs").document()
        first.set(
            {
                "type": "bench_noop",
                "status": "pending",
                "createdAt": firestore.SERVER_TIMESTAMP,
                "metadata": {},
            }
        )
        first_done = finished(first)
        latencies = []
        for _ in range(jobs):
            ref = db.collection("backgroundJobs").document()
            written = time.monotonic()
            ref.set(
                {
                    "type": "bench_noop",
                    "status": "pending",
                    "createdAt": firestore.SERVER_TIMESTAMP,
                    "metadata": {},
                }
            )
            latencies.append(finished(ref) - written)
        return {
            "ready": stack.ready_seconds or (up - started),
            "to_first_job": first_done - started,
            "first_job_after_ready": first_done - up,
            "p50": statistics.median(latencies) if latencies else 0.0,
            "max": max(latencies) if latencies else 0.0,
            "notes": stack.notes,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--jobs",
        type=int,
        default=20,
        help="jobs written one after another once the first completed",
    )
    parser.add_argument(
        "--firebase-cli",
        default=None,
        help="another firebase-tools (default: the one scripts/bootstrap installs); JAVA picks "
        "the java",
    )
    args = parser.parse_args()
    rows = [one_start(args.jobs, args.firebase_cli) for _ in range(args.repeats)]
    for note in rows[0]["notes"]:
        print(f"note: {note}")
    print(
        f"{'run':>3} {'ready s':>8} {'start->1st job s':>17} {'ready->1st job s':>17} "
        f"{'next jobs p50 s':>16} {'max s':>6}"
    )
    for i, row in enumerate(rows, 1):
        print(
            f"{i:>3} {row['ready']:>8.1f} {row['to_first_job']:>17.1f} "
            f"{row['first_job_after_ready']:>17.2f} {row['p50']:>16.3f} {row['max']:>6.2f}"
        )


if __name__ == "__main__":
    main()
