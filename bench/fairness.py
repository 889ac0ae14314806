"""One tenant's bulk backlog beside three small tenants, with and without ``fair_key``:
`python -m bench.fairness`.

For each variant, on a fresh emulator: two ``jobs worker`` processes (concurrency 16) run; tenant A
enqueues 20,000 jobs at once (20 ms each, in commits of 500); 10 seconds after A began, tenants B,
C and D each enqueue 50 jobs, then one job a second each for `--trickle` seconds. The run ends once
every job of B, C and D has started (or after `--timeout`). Printed side by side: create-to-start
p50, p95 and max for B, C and D (``createdAt`` to ``startedAt``, the server's clock), the jobs
completed a second (every tenant's) from the small tenants' first job to their last, the Firestore
operations per completed job (the workers' own counts, from their ``worker_stopped`` log lines),
and the enqueues' writes per job written (a fair type's enqueue also notes the key).

    python -m bench.fairness                       # both variants, about 4 minutes on 2 cores
    python -m bench.fairness --bulk 5000 --trickle 10
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from bench.__main__ import ROOT, env_for, log, warm_up
from jobs_lib import JobsClient, Settings
from jobs_lib.devstack import emulator
from jobs_lib.registry import HandlerRegistry, HandlerSpec
from jobs_lib.store import JobStore

PROJECT = "demo-bench-fairness"
SMALL = ("B", "C", "D")
VARIANTS = {"fair_key": "bench_fair", "none": "bench_unfair"}


def _client(job_type: str) -> JobsClient:
    registry = HandlerRegistry()
    # The app's client knows the handler's options (its keys are then noted as it enqueues).
    registry.register(
        HandlerSpec(
            job_type, fn=lambda ctx: None, fair_key="orgId" if job_type == "bench_fair" else None
        )
    )
    return JobsClient(store=JobStore(Settings(project=PROJECT)), registry=registry)


def _started(db: Any, job_type: str, org: str) -> tuple[int, int]:
    base = db.collection("backgroundJobs").where(filter=FieldFilter("type", "==", job_type))
    base = base.where(filter=FieldFilter("orgId", "==", org))
    total = int(base.count().get()[0][0].value)
    waiting = int(
        base.where(filter=FieldFilter("status", "==", "pending")).count().get()[0][0].value
    )
    return total, total - waiting


def _worker_ops(log_dir: Path) -> tuple[int, int]:
    reads = writes = 0
    for path in log_dir.glob("*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if '"worker_stopped"' not in line:
                continue
            try:
                record = json.loads(line[line.index("{") :])
            except ValueError:
                continue
            ops = (record.get("stats") or {}).get("firestore") or {}
            reads += int(ops.get("reads", 0))
            writes += int(ops.get("writes", 0))
    return reads, writes


def run_variant(job_type: str, bulk: int, trickle: int, timeout: float) -> dict[str, Any]:
    with emulator.running(project=PROJECT) as emu:
        db = firestore.Client(project=PROJECT)
        warm_up(db)
        log_dir = Path(tempfile.mkdtemp(prefix=f"bench-fairness-{job_type}-"))
        procs = []
        for i in range(2):
            out = open(log_dir / f"{i}.log", "wb")  # noqa: SIM115 - closed below
            cmd = [sys.executable, "-m", "jobs_lib", "worker", "--concurrency", "16"]
            env = {**env_for(emu), "JOBS_LOG_FORMAT": "json"}
            procs.append(
                (
                    subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT),
                    out,
                )
            )
        time.sleep(3)  # the workers start
        began = time.monotonic()
        writes = {"enqueue": 0}

        def tenant_a() -> None:
            client = _client(job_type)
            for start in range(0, bulk, 500):
                client.enqueue_many(
                    [{"type": job_type, "org_id": "A"} for _ in range(min(500, bulk - start))]
                )
            writes["enqueue"] += client.store.stats.snapshot()["writes"]

        bulk_writer = threading.Thread(target=tenant_a)
        bulk_writer.start()
        time.sleep(max(began + 10 - time.monotonic(), 0))
        small = _client(job_type)
        for org in SMALL:
            small.enqueue_many([{"type": job_type, "org_id": org} for _ in range(50)])
        for second in range(trickle):
            for org in SMALL:
                small.enqueue(job_type, org_id=org)
            time.sleep(max(began + 11 + second - time.monotonic(), 0))
        expected = 50 + trickle
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(_started(db, job_type, org)[1] >= expected for org in SMALL):
                break
            time.sleep(0.5)
        bulk_writer.join()
        writes["enqueue"] += small.store.stats.snapshot()["writes"]
        ended = time.monotonic()
        for proc, _ in procs:
            proc.send_signal(signal.SIGTERM)
        for proc, out in procs:
            proc.wait(60)
            out.close()
        return figures(db, job_type, ended - began, log_dir, writes["enqueue"])


def figures(
    db: Any, job_type: str, seconds: float, log_dir: Path, enqueue_writes: int
) -> dict[str, Any]:
    docs = [
        snap.to_dict()
        for snap in db.collection("backgroundJobs")
        .where(filter=FieldFilter("type", "==", job_type))
        .stream()
    ]
    waits: dict[str, list[float]] = {org: [] for org in SMALL}
    for d in docs:
        org = d.get("orgId")
        if org in waits and isinstance(d.get("startedAt"), datetime):
            waits[org].append((d["startedAt"] - d["createdAt"]).total_seconds())
    small = sorted(w for org in SMALL for w in waits[org])
    if dump := os.environ.get("FAIRNESS_DUMP"):  # every job's tenant, creation and start
        rows = [
            [d.get("orgId"), d["createdAt"].timestamp(), d["startedAt"].timestamp()]
            for d in docs
            if isinstance(d.get("startedAt"), datetime) and isinstance(d.get("createdAt"), datetime)
        ]
        Path(dump).write_text(json.dumps(rows))
    completed = sum(1 for d in docs if d.get("status") == "completed")
    # Throughput over the same window in every variant: from the small tenants' first jobs to the
    # end of their trickle (every tenant's completions).
    ends = [d["completedAt"] for d in docs if isinstance(d.get("completedAt"), datetime)]
    small_created = sorted(
        d["createdAt"]
        for d in docs
        if d.get("orgId") in SMALL and isinstance(d.get("createdAt"), datetime)
    )
    window = (small_created[-1] - small_created[0]).total_seconds() if small_created else 0.0
    in_window = sum(1 for e in ends if small_created and small_created[0] <= e <= small_created[-1])
    reads, writes = _worker_ops(log_dir)
    out = {
        "small_started": len(small),
        "small_p50_s": round(statistics.median(small), 2) if small else None,
        "small_p95_s": round(small[max(int(len(small) * 0.95) - 1, 0)], 2) if small else None,
        "small_max_s": round(small[-1], 2) if small else None,
        "completed": completed,
        "seconds": round(seconds, 1),
        "jobs_per_s": round(in_window / window, 1) if window else None,
        # The runners' operations per job they completed; the enqueues' writes per job written.
        "reads_per_job": round(reads / completed, 2) if completed else None,
        "writes_per_job": round(writes / completed, 2) if completed else None,
        "enqueue_writes_per_job": round(enqueue_writes / len(docs), 3) if docs else None,
    }
    for org in SMALL:
        w = sorted(waits[org])
        out[f"{org}_p95_s"] = round(w[max(int(len(w) * 0.95) - 1, 0)], 2) if w else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bulk", type=int, default=20_000, help="tenant A's jobs")
    parser.add_argument("--trickle", type=int, default=30, help="seconds of one job a second")
    parser.add_argument("--timeout", type=float, default=240.0)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    rows = {}
    for name in args.variants.split(","):
        log(f"fairness: variant {name}, tenant A {args.bulk} jobs, B/C/D 50 + {args.trickle}/s")
        rows[name] = run_variant(VARIANTS[name], args.bulk, args.trickle, args.timeout)
        print(json.dumps({"variant": name, **rows[name]}), flush=True)
    print(
        f"\n{'variant':<10}{'B/C/D p50':>10}{'p95':>8}{'max':>8}{'B p95':>8}{'C p95':>8}"
        f"{'D p95':>8}{'jobs/s':>8}{'reads/job':>10}{'writes/job':>11}{'enqueue w/job':>14}"
    )
    for name, r in rows.items():
        print(
            f"{name:<10}{r['small_p50_s']!s:>10}{r['small_p95_s']!s:>8}{r['small_max_s']!s:>8}"
            f"{r['B_p95_s']!s:>8}{r['C_p95_s']!s:>8}{r['D_p95_s']!s:>8}{r['jobs_per_s']:>8}"
            f"{r['reads_per_job']!s:>10}{r['writes_per_job']!s:>11}"
            f"{r['enqueue_writes_per_job']!s:>14}"
        )
    print(f"\nrun {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {sys.argv[0]} {' '.join(sys.argv[1:])}")


if __name__ == "__main__":
    main()
