"""A rate limit held across processes: `python -m bench.ratelimit` prints the figures.

Four `jobs worker` processes share a backlog of ``bench_rated`` jobs, whose
handler allows 50 starts a second (``rate="50/s"``); the backlog is larger
than 60 seconds at that rate, so the limit, not the queue, sets the pace. The
first 5 seconds are left out; over the next `--seconds` the starts per
second are counted from each job's ``startedAt`` (the server's clock) and from
the token documents (one per start, by the window the claimer took it in).
The same run measures the unlimited ``bench_noop`` on 4 workers, so the
Firestore operations the limit costs per job are the difference of the two
(each worker counts its own reads and writes; refused token creates counted
apart).
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from bench.__main__ import PROJECT, ROOT, env_for, log, log_entries, run_cell, warm_up
from jobs_lib.devstack import emulator
from jobs_lib.store import shard_of

RATE = 50  # bench.handlers.bench_rated
SKIP = 5.0


def create_rated(db: Any, count: int) -> None:
    col = db.collection("backgroundJobs")
    due = datetime.now(UTC)
    for start in range(0, count, 500):
        batch = db.batch()
        for _ in range(min(500, count - start)):
            ref = col.document()
            batch.set(
                ref,
                {
                    "type": "bench_rated",
                    "status": "pending",
                    "metadata": {},
                    "priority": 0,
                    "attempts": 0,
                    "createdAt": firestore.SERVER_TIMESTAMP,
                    "scheduledFor": due,
                    "shard": shard_of(ref.id),
                },
            )
        batch.commit()


def rated_cell(workers: int, seconds: float, concurrency: int) -> dict[str, Any]:
    with emulator.running(project=PROJECT) as emu:
        db = firestore.Client(project=PROJECT)
        warm_up(db)
        backlog = int(RATE * (seconds + SKIP) * 1.3) + 200
        create_rated(db, backlog)
        log_dir = Path(tempfile.mkdtemp(prefix="bench-rate-"))
        procs = []
        for i in range(workers):
            out = open(log_dir / f"{i}.log", "wb")  # noqa: SIM115 - closed below
            cmd = [sys.executable, "-m", "jobs_lib", "worker", "--concurrency", str(concurrency)]
            procs.append(
                (
                    subprocess.Popen(
                        cmd, env=env_for(emu), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
                    ),
                    out,
                )
            )
        time.sleep(SKIP + seconds + 2.0)
        for proc, _ in procs:
            proc.send_signal(signal.SIGTERM)
        for proc, out in procs:
            proc.wait(60)
            out.close()
        starts = [
            snap.get("startedAt")
            for snap in db.collection("backgroundJobs")
            .where(filter=FieldFilter("status", "==", "completed"))
            .stream()
        ]
        tokens = [
            snap.id.rsplit("~", 1)[1]
            for snap in db.collection("backgroundJobs_rateTokens").stream()
        ]
        first = min(starts).timestamp()
        lo, hi = math.floor(first + SKIP), math.floor(first + SKIP) + int(seconds)
        per_second = Counter(math.floor(s.timestamp()) for s in starts)
        per_token_window = Counter(int(w) for w in tokens)
        counted = [per_second.get(w, 0) for w in range(lo, hi)]
        token_counts = [per_token_window.get(w, 0) for w in range(lo, hi)]
        reads = writes = refused = 0
        for i in range(workers):
            for entry in log_entries(log_dir / f"{i}.log"):
                if entry.get("event") == "worker_stopped":
                    fs = entry["stats"]["firestore"]
                    reads += fs["reads"]
                    writes += fs["writes"]
                    refused += fs["byKind"].get("write:claim_rate:refused", {}).get("calls", 0)
        done = len(starts)
        return {
            "workers": workers,
            "seconds": int(seconds),
            "started": sum(counted),
            "rate_per_s": round(sum(counted) / seconds, 2),
            "of_limit": round(sum(counted) / seconds / RATE, 3),
            "min_s": min(counted),
            "p10_s": sorted(counted)[len(counted) // 10],
            "median_s": statistics.median(counted),
            "max_s": max(counted),
            "max_per_token_window": max(token_counts),
            "reads_per_job": round(reads / done, 2),
            "writes_per_job": round(writes / done, 2),
            "refused_token_creates_per_job": round(refused / done, 3),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument(
        "--unlimited", type=int, default=3000, help="jobs of the unlimited comparison (0: skip it)"
    )
    args = parser.parse_args()
    log(f"rate-limited: {args.workers} workers against {RATE}/s for {args.seconds:g}s")
    rated = rated_cell(args.workers, args.seconds, args.concurrency)
    print(json.dumps({"rated": rated}))
    if args.unlimited:
        log(f"unlimited: {args.workers} workers on {args.unlimited} jobs")
        plain = run_cell("library", args.workers, args.unlimited, args.concurrency)
        plain.pop("operations", None)
        print(json.dumps({"unlimited": plain}))
        print(
            f"\n{args.workers} workers, limit {RATE}/s, {args.seconds:g}s: "
            f"{rated['rate_per_s']}/s ({rated['of_limit']:.1%} of the limit), "
            f"per second min {rated['min_s']} / p10 {rated['p10_s']} / median "
            f"{rated['median_s']} / max {rated['max_s']} (startedAt), "
            f"at most {rated['max_per_token_window']} tokens a window\n"
            f"per job: rated {rated['reads_per_job']} reads, {rated['writes_per_job']} writes "
            f"({rated['refused_token_creates_per_job']} refused token creates); "
            f"unlimited {plain['reads_per_job']} reads, {plain['writes_per_job']} writes"
        )


if __name__ == "__main__":
    main()
