"""Benchmarks on the real emulator: `python -m bench` prints every figure in one run.

Throughput: for 1, 2 and 4 worker processes on backlogs of 1,000 and 10,000 no-op jobs (all due
before the processes start), jobs/s from the first ``startedAt`` to the last ``completedAt``; the
same for the bare claim-and-complete loop (bench/bare.py) so the ratio shows the library's own
overhead; Firestore reads and writes per job as the workers counted them; the workers' peak memory.
Pickup latency: ``createdAt`` to ``startedAt`` for jobs enqueued one by one while a worker idles
beside a large collection. Every cell gets a fresh emulator (its speed degrades with the data it has
held), warmed up first."""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from jobs_lib.devstack import emulator
from jobs_lib.store import shard_of

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "demo-bench"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def env_for(emu: emulator.Emulator) -> dict[str, str]:
    return {
        **os.environ,
        "FIRESTORE_EMULATOR_HOST": emu.address,
        "GOOGLE_CLOUD_PROJECT": emu.project,
        "PYTHONPATH": str(ROOT),
        "JOBS_HANDLERS": "bench.handlers",
    }


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU a process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def log_entries(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a worker's log (other lines skipped)."""
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries


def warm_up(db: Any) -> None:
    """JVM warm-up: the first seconds of a fresh emulator are ~3x slower; discard them."""
    col = db.collection("warmup")
    for _ in range(4):
        batch = db.batch()
        for _ in range(500):
            batch.set(col.document(), {"status": "pending", "n": 1})
        batch.commit()
    for snap in col.limit(200).stream():
        snap.reference.update(
            {"status": "done"}, option=db.write_option(last_update_time=snap.update_time)
        )
    for _ in range(5):
        list(col.where(filter=FieldFilter("status", "==", "pending")).limit(50).stream())


def create_backlog(db: Any, count: int, due: datetime) -> None:
    col = db.collection("backgroundJobs")
    batch = db.batch()
    for n in range(count):
        ref = col.document()  # as JobsClient.enqueue writes them, in their shard lane
        batch.set(
            ref,
            {
                "type": "bench_noop",
                "status": "pending",
                "metadata": {},
                "priority": 0,
                "attempts": 0,
                "createdAt": firestore.SERVER_TIMESTAMP,
                "scheduledFor": due,
                "shard": shard_of(ref.id),
            },
        )
        if n % 500 == 499:
            batch.commit()
            batch = db.batch()
    batch.commit()


def completed_count(db: Any) -> int:
    query = (
        db.collection("backgroundJobs")
        .where(filter=FieldFilter("status", "==", "completed"))
        .count()
    )
    return int(query.get()[0][0].value)


def first_start(db: Any) -> datetime:
    [snap] = db.collection("backgroundJobs").order_by("startedAt").limit(1).get()
    return snap.get("startedAt")  # type: ignore[no-any-return]


def last_completion(db: Any) -> datetime:
    [snap] = (
        db.collection("backgroundJobs")
        .order_by("completedAt", direction=firestore.Query.DESCENDING)
        .limit(1)
        .get()
    )
    return snap.get("completedAt")  # type: ignore[no-any-return]


class OtlpSink:
    """A stand-in OpenTelemetry collector on loopback: answers every OTLP/HTTP export with 200."""

    def __init__(self) -> None:
        import http.server
        import threading

        sink = self
        self.requests = 0
        self.bytes = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(size)
                sink.requests += 1
                sink.bytes += size
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run_cell(kind: str, workers: int, backlog: int, concurrency: int) -> dict[str, Any]:
    """One measurement on a fresh emulator: `kind` is "library", "bare", "metrics" (the library
    with Prometheus metrics served), "telemetry" (metrics, and every attempt traced to an OTLP
    collector) or "sampled" (metrics, and 1 trace in 10)."""
    with emulator.running(project=PROJECT) as emu:
        db = firestore.Client(project=PROJECT)
        warm_up(db)
        due = datetime.now(UTC)
        create_backlog(db, backlog, due)
        log_dir = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
        emulator_cpu_before = cpu_seconds(emu.process.pid)
        procs = []
        sink = OtlpSink() if kind in ("telemetry", "sampled") else None
        for i in range(workers):
            out = open(log_dir / f"{i}.log", "wb")  # noqa: SIM115 - closed below
            env = env_for(emu)
            if kind in ("library", "metrics", "telemetry", "sampled"):
                cmd = [
                    sys.executable,
                    "-m",
                    "jobs_lib",
                    "worker",
                    "--concurrency",
                    str(concurrency),
                ]
                if kind != "library":
                    cmd += ["--metrics-port", str(emulator.free_port())]
                if sink is not None:
                    env.update(
                        {
                            "JOBS_TRACES_EXPORTER": "otlp",
                            "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
                        }
                    )
                if kind == "sampled":
                    env.update(
                        {
                            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                            "OTEL_TRACES_SAMPLER_ARG": "0.1",
                        }
                    )
            else:
                cmd = [sys.executable, "-m", "bench.bare", "--index", str(i), "--of", str(workers)]
            procs.append(
                (
                    subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT),
                    out,
                )
            )
        deadline = time.monotonic() + 600
        while completed_count(db) < backlog:
            if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p, _ in procs):
                raise RuntimeError(f"{kind} cell did not finish; see {log_dir}")
            time.sleep(0.25)
        seconds = (last_completion(db) - first_start(db)).total_seconds()
        emulator_rss = rss_mb(emu.process.pid)
        emulator_cpu = cpu_seconds(emu.process.pid) - emulator_cpu_before
        for proc, _ in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, out in procs:
            proc.wait(60)
            out.close()
        exported = (
            {"otlpRequests": sink.requests, "otlpBytes": sink.bytes} if sink is not None else {}
        )
        if sink is not None:
            sink.close()
        reads = writes = 0
        worker_rss = worker_cpu = 0.0
        queries: dict[str, dict[str, int]] = {}
        for i in range(workers):
            for entry in log_entries(log_dir / f"{i}.log"):
                if kind == "bare" and "reads" in entry:
                    reads += entry["reads"]
                    writes += entry["writes"]
                    worker_cpu += entry["cpuSeconds"]
                elif entry.get("event") == "worker_stopped":
                    stats = entry["stats"]
                    reads += stats["firestore"]["reads"]
                    writes += stats["firestore"]["writes"]
                    worker_rss = max(worker_rss, stats["maxRssMb"])
                    worker_cpu += stats["cpuSeconds"]
                    for purpose, counts in stats["firestore"]["byKind"].items():
                        entry = queries.setdefault(purpose, {"calls": 0, "reads": 0, "writes": 0})
                        for key in entry:
                            entry[key] += counts[key]
        return {
            "kind": kind,
            "workers": workers,
            "backlog": backlog,
            "seconds": round(seconds, 2),
            "jobs_per_s": round(backlog / seconds, 1),
            "reads_per_job": round(reads / backlog, 2),
            "writes_per_job": round(writes / backlog, 2),
            "worker_rss_mb": round(worker_rss, 1),
            "emulator_rss_mb": round(emulator_rss, 1),
            "worker_cpu_ms_per_job": round(1000 * worker_cpu / backlog, 2),
            "emulator_cpu_ms_per_job": round(1000 * emulator_cpu / backlog, 2),
            "operations": queries,
            **exported,
        }


def pickup_latency(finished_jobs: int, future_jobs: int, samples: int) -> dict[str, Any]:
    """createdAt -> startedAt for jobs enqueued one at a time beside a large collection."""
    from jobs_lib.client import JobsClient
    from jobs_lib.config import Settings

    with emulator.running(project=PROJECT) as emu:
        db = firestore.Client(project=PROJECT)
        warm_up(db)
        col = db.collection("backgroundJobs")
        batch = db.batch()
        far = datetime.now(UTC) + timedelta(days=30)
        for n in range(finished_jobs + future_jobs):
            fields: dict[str, Any] = {
                "type": "bench_noop",
                "metadata": {},
                "createdAt": firestore.SERVER_TIMESTAMP,
            }
            fields |= (
                {"status": "completed"}
                if n < finished_jobs
                else {"status": "pending", "scheduledFor": far}
            )
            ref = col.document()
            batch.set(ref, {**fields, "shard": shard_of(ref.id)})
            if n % 500 == 499:
                batch.commit()
                batch = db.batch()
        batch.commit()
        out = tempfile.TemporaryFile()  # noqa: SIM115 - the worker writes to it until stopped
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobs_lib", "worker"],
            env=env_for(emu),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        time.sleep(4)
        client = JobsClient(Settings(project=PROJECT))
        ids = []
        for _ in range(samples):
            ids.append(client.enqueue("bench_noop", {}).id)
            time.sleep(0.3)
        time.sleep(2)
        latencies = []
        for job_id in ids:
            job = client.get(job_id)
            if job.started_at and job.created_at:
                latencies.append((job.started_at - job.created_at).total_seconds() * 1000)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        latencies.sort()
        return {
            "finished_jobs": finished_jobs,
            "future_jobs": future_jobs,
            "samples": len(latencies),
            "missing": samples - len(latencies),
            "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
            "p95_ms": round(latencies[int(len(latencies) * 0.95) - 1], 1) if latencies else None,
        }


def functions_path(paced: int, burst: int, rate: float) -> list[dict[str, Any]]:
    """Through the emulator's created-events and functions-framework (`jobs dev`'s pieces), no
    worker."""
    from jobs_lib.client import JobsClient
    from jobs_lib.config import Settings
    from jobs_lib.devstack.dev import DevStack

    rows = []
    with DevStack(
        project=PROJECT,
        handlers="bench.handlers",
        tick_interval=None,
        env={"PYTHONPATH": str(ROOT)},
    ):
        db = firestore.Client(project=PROJECT)
        warm_up(db)
        client = JobsClient(Settings(project=PROJECT))
        for _ in range(20):  # warm the function host too
            client.enqueue("bench_noop", {})
        time.sleep(2)
        ids = []
        started = time.monotonic()
        for n in range(paced):
            ids.append(client.enqueue("bench_noop", {}).id)
            time.sleep(max(started + (n + 1) / rate - time.monotonic(), 0))
        jobs = wait_started(client, ids)
        latencies = sorted(
            (j.started_at - j.created_at).total_seconds() * 1000
            for j in jobs
            if j.started_at and j.created_at
        )
        rows.append(
            {
                "case": f"{paced} jobs enqueued one by one at {rate:g}/s",
                "jobs": len(latencies),
                "p50 create->start ms": round(statistics.median(latencies), 1),
                "p95 create->start ms": round(latencies[int(len(latencies) * 0.95) - 1], 1),
                "jobs/s": "-",
            }
        )
        col = db.collection("backgroundJobs")
        batch = db.batch()
        burst_ids = []
        for n in range(burst):
            ref = col.document()
            burst_ids.append(ref.id)
            batch.set(
                ref,
                {
                    "type": "bench_noop",
                    "status": "pending",
                    "metadata": {},
                    "priority": 0,
                    "createdAt": firestore.SERVER_TIMESTAMP,
                    "scheduledFor": firestore.SERVER_TIMESTAMP,
                },
            )
            if n % 250 == 249:
                batch.commit()
                batch = db.batch()
        batch.commit()
        jobs = wait_started(client, burst_ids, finished=True)
        first = min(j.created_at for j in jobs if j.created_at)
        last = max(j.completed_at for j in jobs if j.completed_at)
        latencies = sorted(
            (j.started_at - j.created_at).total_seconds() * 1000
            for j in jobs
            if j.started_at and j.created_at
        )
        rows.append(
            {
                "case": f"{burst} jobs created at once (batched writes)",
                "jobs": len(jobs),
                "p50 create->start ms": round(statistics.median(latencies), 1),
                "p95 create->start ms": round(latencies[int(len(latencies) * 0.95) - 1], 1),
                "jobs/s": round(len(jobs) / (last - first).total_seconds(), 1),
            }
        )
    return rows


def wait_started(
    client: Any, ids: list[str], finished: bool = False, timeout: float = 300
) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = [client.get(i) for i in ids]
        if (
            all(j.status and j.status.finished for j in jobs)
            if finished
            else all(j.started_at for j in jobs)
        ):
            return jobs
        if time.monotonic() > deadline:
            raise RuntimeError("jobs did not run through the functions in time")
        time.sleep(0.5)


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("-|-".join("-" * w for w in widths))
    for row in rows:
        lines.append(
            " | ".join(str(row.get(c, "")).ljust(w) for c, w in zip(columns, widths, strict=True))
        )
    return "\n".join(lines)


def telemetry_overhead(
    workers_list: list[int], backlog: int, concurrency: int, repeats: int
) -> list[dict[str, Any]]:
    """jobs/s and worker CPU per job with telemetry off and on (metrics; metrics and every trace;
    metrics and 1 trace in 10), in the same run, the variants alternating."""
    kinds = ("library", "metrics", "telemetry", "sampled")
    names = {
        "library": "off",
        "metrics": "metrics",
        "telemetry": "metrics + all traces",
        "sampled": "metrics + 10% of traces",
    }
    rows = []
    for workers in workers_list:
        runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
        for _ in range(repeats):
            for kind in kinds:
                log(f"{kind}: {workers} process(es), {backlog} jobs ...")
                runs[kind].append(run_cell(kind, workers, backlog, concurrency))
                log(f"  {runs[kind][-1]['jobs_per_s']} jobs/s")

        def median(cells: list[dict[str, Any]], key: str) -> float:
            return float(statistics.median(c[key] for c in cells))

        off = runs["library"]
        for kind in kinds:
            cells = runs[kind]
            rows.append(
                {
                    "workers": workers,
                    "backlog": backlog,
                    "telemetry": names[kind],
                    "jobs/s": f"{median(cells, 'jobs_per_s'):.0f} "
                    f"({', '.join(str(round(c['jobs_per_s'])) for c in cells)})",
                    "vs off": f"{100 * median(cells, 'jobs_per_s') / median(off, 'jobs_per_s'):.0f}"
                    "%",
                    "worker CPU ms/job": round(median(cells, "worker_cpu_ms_per_job"), 3),
                    "added CPU ms/job": round(
                        median(cells, "worker_cpu_ms_per_job")
                        - median(off, "worker_cpu_ms_per_job"),
                        3,
                    ),
                    "OTLP requests": int(median(cells, "otlpRequests"))
                    if "otlpRequests" in cells[0]
                    else 0,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--backlogs", default="1000,10000")
    parser.add_argument(
        "--concurrency", type=int, default=64, help="jobs at once per worker process"
    )
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument(
        "--only",
        choices=["throughput", "latency", "functions", "telemetry"],
        help="run one part only",
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="telemetry: runs of each variant, alternating"
    )
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    if args.only in (None, "telemetry"):
        telemetry_rows = telemetry_overhead(
            [int(w) for w in args.workers.split(",")][:2],
            max(int(b) for b in args.backlogs.split(",")),
            args.concurrency,
            args.repeats,
        )
        print(
            "\nTelemetry off and on (Prometheus /metrics served; traces to an OTLP collector on "
            "loopback), variants alternating\n"
        )
        print(table(telemetry_rows, list(telemetry_rows[0])))
        if args.only == "telemetry":
            return
    if args.only in (None, "functions"):
        log("functions path (jobs dev: emulator triggers -> functions-framework) ...")
        functions_rows = functions_path(paced=500, burst=1000, rate=25)
        print(
            "\nThrough the Cloud Functions path locally (created-events from the emulator, no "
            "worker)\n"
        )
        print(table(functions_rows, list(functions_rows[0])))
        if args.only == "functions":
            return
    for backlog in (
        [int(b) for b in args.backlogs.split(",")] if args.only in (None, "throughput") else []
    ):
        for workers in [int(w) for w in args.workers.split(",")]:
            for kind in ("library", "bare"):
                log(f"{kind}: {workers} process(es), {backlog} jobs ...")
                results.append(run_cell(kind, workers, backlog, args.concurrency))
                log(f"  {results[-1]}")
    rows = []
    for lib in (r for r in results if r["kind"] == "library"):
        bare = next(
            r
            for r in results
            if r["kind"] == "bare"
            and r["workers"] == lib["workers"]
            and r["backlog"] == lib["backlog"]
        )
        rows.append(
            {
                "backlog": lib["backlog"],
                "workers": lib["workers"],
                "library jobs/s": lib["jobs_per_s"],
                "bare jobs/s": bare["jobs_per_s"],
                "library/bare": f"{100 * lib['jobs_per_s'] / bare['jobs_per_s']:.0f}%",
                "reads/job": lib["reads_per_job"],
                "writes/job": lib["writes_per_job"],
                "bare reads/job": bare["reads_per_job"],
                "bare writes/job": bare["writes_per_job"],
                "worker RSS MB": lib["worker_rss_mb"],
                "emulator RSS MB": lib["emulator_rss_mb"],
                "worker CPU ms/job": lib["worker_cpu_ms_per_job"],
                "bare CPU ms/job": bare["worker_cpu_ms_per_job"],
                "emulator CPU ms/job": lib["emulator_cpu_ms_per_job"],
                "bare emulator CPU ms/job": bare["emulator_cpu_ms_per_job"],
            }
        )
    if rows:
        print(
            f"\nThroughput, no-op jobs, concurrency {args.concurrency} per worker process (bare "
            f"loop: one job at a time per process)\n"
        )
        print(table(rows, list(rows[0])))
    latency = []
    if not args.skip_latency and args.only in (None, "latency"):
        for finished, future in ((0, 0), (10_000, 0), (0, 10_000)):
            log(f"pickup latency beside {finished} finished and {future} future jobs ...")
            latency.append(pickup_latency(finished, future, 30))
        print(
            "\nPickup latency, createdAt -> startedAt, one idle worker (default settings), 30 "
            "jobs 0.3 s apart\n"
        )
        print(table(latency, list(latency[0])))
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "latest.json").write_text(
        json.dumps({"throughput": results, "latency": latency}, indent=2)
    )


if __name__ == "__main__":
    main()
