"""Jobs apps write beside jobs `enqueue` wrote, in the same run: `python -m bench.appjobs`.

Seeds/000 is how jobs arrive: an app's Firebase SDK writes ``{type, status: "pending", createdAt,
scheduledFor, metadata}`` (server timestamps, no ``shard``, no ``priority``, no ``attempts``). For
each kind of handler (a no-op; rated ``10/s`` and ``100/s``; limited to 5 at once, 50 ms each) and
each number of ``jobs worker`` processes (1 and 3), the same backlog is written twice, each on a
fresh emulator: by `JobsClient.enqueue_many`, and by a raw client in the original app's shape. Then
the created-event path (the local stack's functions, no worker): jobs written one at a time at a
steady pace, both ways. Printed per cell: jobs/s (for rated kinds the starts over the one-second
windows they fill; else from the first start to the last completion), create-to-start p50 and p95
(``createdAt`` to ``startedAt``, both the server's clock), and the ratio of the original app's
figures to enqueue's; rated kinds as a share of their limit, limited kinds as a share of what their
slots allow (5 slots / 50 ms = 100 jobs/s).

    python -m bench.appjobs                 # every cell (about 10 minutes on 2 cores)
    python -m bench.appjobs --kinds plain --workers 1 --no-events
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from bench.__main__ import ROOT, env_for, log, warm_up
from jobs_lib import JobsClient, Settings
from jobs_lib.devstack import emulator
from jobs_lib.devstack.dev import DevStack
from jobs_lib.registry import HandlerRegistry
from jobs_lib.store import JobStore

PROJECT = "demo-bench-appjobs"


@dataclass(frozen=True)
class Kind:
    """A kind of handler (bench/handlers.py) and the backlog that measures it."""

    name: str
    type: str
    backlog: int
    #: Starts a second the handler allows (rated), or its slots and seconds per job (limited).
    rate: float | None = None
    slots: int | None = None
    seconds: float = 0.0

    @property
    def ceiling(self) -> float | None:
        """The jobs/s the limit allows: the rate, or slots / seconds per job."""
        if self.rate is not None:
            return self.rate
        if self.slots is not None:
            return self.slots / self.seconds
        return None


KINDS = {
    "plain": Kind("plain", "bench_noop", 1500),
    "rated10": Kind("rated10", "bench_rated10", 150, rate=10),
    "rated100": Kind("rated100", "bench_rated100", 1500, rate=100),
    "limited5": Kind("limited5", "bench_limited5", 600, slots=5, seconds=0.05),
}
SHAPES = ("enqueue", "seeds000")


def write_backlog(db: Any, kind: Kind, shape: str) -> None:
    """`kind.backlog` due jobs, as `enqueue_many` writes them or as the original app does."""
    if shape == "enqueue":
        client = JobsClient(store=JobStore(Settings(project=PROJECT)), registry=HandlerRegistry())
        for start in range(0, kind.backlog, 500):
            client.enqueue_many(
                [
                    {"type": kind.type, "metadata": {"n": n}}
                    for n in range(start, min(start + 500, kind.backlog))
                ]
            )
        return
    col = db.collection("backgroundJobs")
    for start in range(0, kind.backlog, 500):
        batch = db.batch()
        for n in range(start, min(start + 500, kind.backlog)):
            batch.set(col.document(), seeds000(kind.type, n))
        batch.commit()


def seeds000(job_type: str, n: int) -> dict[str, Any]:
    """A job as the original app's setDoc writes it: server timestamps, no shard, priority or
    attempts."""
    return {
        "type": job_type,
        "status": "pending",
        "createdAt": firestore.SERVER_TIMESTAMP,
        "scheduledFor": firestore.SERVER_TIMESTAMP,
        "metadata": {"n": n},
    }


def finished(db: Any) -> int:
    query = (
        db.collection("backgroundJobs")
        .where(filter=FieldFilter("status", "in", ["completed", "failed"]))
        .count()
    )
    return int(query.get()[0][0].value)


def figures(db: Any, kind: Kind, jobs: int) -> dict[str, Any]:
    """jobs/s and create-to-start percentiles from the documents (the server's times)."""
    docs = [
        snap.to_dict()
        for snap in db.collection("backgroundJobs")
        .where(filter=FieldFilter("type", "==", kind.type))
        .stream()
    ]
    starts = sorted(d["startedAt"] for d in docs if isinstance(d.get("startedAt"), datetime))
    ends = [d["completedAt"] for d in docs if isinstance(d.get("completedAt"), datetime)]
    waits = sorted(
        (d["startedAt"] - d["createdAt"]).total_seconds()
        for d in docs
        if isinstance(d.get("startedAt"), datetime) and isinstance(d.get("createdAt"), datetime)
    )
    if kind.rate is not None:
        # Starts come at the opening of each one-second window: N starts fill N / rate windows,
        # from the first start's window to the end of the last start's.
        span = (starts[-1] - starts[0]).total_seconds() + 1.0
        per_second = len(starts) / span
    else:
        span = (max(ends) - starts[0]).total_seconds()
        per_second = len(ends) / span if span > 0 else float("nan")
    out = {
        "jobs": jobs,
        "finished": len(ends),
        "jobs_per_s": round(per_second, 1),
        "p50_s": round(statistics.median(waits), 2),
        "p95_s": round(waits[int(len(waits) * 0.95) - 1], 2),
        "max_s": round(waits[-1], 2),
        "missing_createdAt": sum(not isinstance(d.get("createdAt"), datetime) for d in docs),
    }
    if kind.ceiling is not None:
        out["of_ceiling"] = round(per_second / kind.ceiling, 3)
    return out


def worker_cell(kind: Kind, shape: str, workers: int, concurrency: int) -> dict[str, Any]:
    """One backlog on a fresh emulator, drained by `workers` processes."""
    with emulator.running(project=PROJECT) as emu:
        db = firestore.Client(project=PROJECT)
        warm_up(db)
        write_backlog(db, kind, shape)
        log_dir = Path(tempfile.mkdtemp(prefix=f"bench-appjobs-{kind.name}-{shape}-"))
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
        deadline = time.monotonic() + 300
        while finished(db) < kind.backlog:
            if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p, _ in procs):
                break
            time.sleep(0.25)
        for proc, _ in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, out in procs:
            proc.wait(60)
            out.close()
        return figures(db, kind, kind.backlog)


def event_cell(shape: str, jobs: int, pace: float) -> dict[str, Any]:
    """Jobs written one at a time, `pace` a second, to the local stack: the created-event runs
    them."""
    kind = KINDS["plain"]
    with DevStack(
        project=PROJECT,
        handlers="bench.handlers",
        tick_interval=None,
        env={"PYTHONPATH": str(ROOT)},
        auth_emulator=False,
    ) as stack:
        assert stack.emulator is not None
        db = firestore.Client(project=PROJECT)
        warm_up(db)
        client = JobsClient(store=JobStore(Settings(project=PROJECT)), registry=HandlerRegistry())
        col = db.collection("backgroundJobs")
        started = time.monotonic()
        for n in range(jobs):
            if shape == "enqueue":
                client.enqueue(kind.type, {"n": n})
            else:
                col.document().set(seeds000(kind.type, n))
            time.sleep(max(started + (n + 1) / pace - time.monotonic(), 0.0))
        deadline = time.monotonic() + 120
        while finished(db) < jobs and time.monotonic() < deadline:
            time.sleep(0.25)
        return figures(db, kind, jobs)


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help="comma-separated: " + ", ".join(KINDS)
    )
    parser.add_argument("--workers", default="1,3", help="comma-separated worker counts")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-events", action="store_true", help="skip the created-event cells")
    parser.add_argument("--event-jobs", type=int, default=400)
    parser.add_argument(
        "--event-pace",
        type=float,
        default=40.0,
        help="jobs written a second in the created-event cells",
    )
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    for name in args.kinds.split(","):
        kind = KINDS[name]
        for workers in (int(w) for w in args.workers.split(",")):
            cells = {}
            for shape in SHAPES:
                log(f"{kind.name}: {kind.backlog} jobs, {workers} worker(s), written by {shape}")
                cells[shape] = worker_cell(kind, shape, workers, args.concurrency)
            rows.append(
                {"path": f"worker x{workers}", "kind": kind.name, **{s: cells[s] for s in SHAPES}}
            )
            print(json.dumps(rows[-1]), flush=True)
    if not args.no_events:
        cells = {}
        for shape in SHAPES:
            log(
                f"created-event: {args.event_jobs} jobs at {args.event_pace:g}/s, written by "
                f"{shape}"
            )
            cells[shape] = event_cell(shape, args.event_jobs, args.event_pace)
        rows.append({"path": "created-event", "kind": "plain", **cells})
        print(json.dumps(rows[-1]), flush=True)
    print(
        f"\n{'path':<15}{'kind':<10}{'enqueue jobs/s':>15}{'app':>11}{'ratio':>7}"
        f"{'p50 enq':>9}{'p50 app':>10}{'p95 enq':>9}{'p95 app':>10}{'of limit (enq / app)':>25}"
    )
    for row in rows:
        a, b = row["enqueue"], row["seeds000"]
        limit = f"{a['of_ceiling']:.0%} / {b['of_ceiling']:.0%}" if "of_ceiling" in a else ""
        print(
            f"{row['path']:<15}{row['kind']:<10}{a['jobs_per_s']:>15}{b['jobs_per_s']:>11}"
            f"{ratio(b['jobs_per_s'], a['jobs_per_s']):>7}{a['p50_s']:>9}{b['p50_s']:>10}"
            f"{a['p95_s']:>9}{b['p95_s']:>10}{limit:>25}"
        )
    print(f"\nrun {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {sys.argv[0]} {' '.join(sys.argv[1:])}")


if __name__ == "__main__":
    main()
