"""A soak: hours (or a minute) of steady jobs through restarted workers, the tick and the cleanup.

A steady stream of jobs (most quick, some failing for good, some retried), a schedule firing
every minute, two `jobs worker` processes, one of them restarted every `restart_every` seconds,
the real tick body every 10 s, and the built-in cleanup every minute deleting finished jobs past
their (20 s) retention. Measured per window: jobs created, create-to-start latency (the
``queueMs`` of each claim, from the workers' logs), documents held, and the long-lived worker's
RSS and threads. Checked: every job ends; none is deleted before it finished and its expireAt
passed; no cleanup deletes more than its batch; the collection stays bounded.
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from google.cloud.firestore_v1.base_query import FieldFilter

from jobs_lib import App, Settings
from jobs_lib.builtin.housekeeping import BATCH, CLEANUP_TYPE, MAX_BATCHES
from jobs_lib.devstack import emulator
from jobs_lib.functions import Functions

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "demo-soak"
MIX = (("soak_ok", 0.8), ("soak_fail", 0.1), ("soak_retry", 0.1))
#: Jobs not yet seen finished are looked at this often (their retention is 20 s).
OBSERVE_EVERY = 3.0


def proc_figures(pid: int) -> tuple[float, int]:
    """(RSS MB, threads) of a process."""
    rss, threads = 0.0, 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return rss, threads


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Soak:
    seconds: float
    per_minute: int = 300
    restart_every: float = 20.0
    window: float = 20.0
    #: Enqueue the cleanup once the stream ends rather than wait for its next minute (the short
    #: soak of the test command: up to a minute less; the cron still fires it every minute).
    cleanup_at_end: bool = False
    windows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def run(self) -> dict[str, Any]:
        with emulator.running(project=PROJECT) as emu:
            env = {
                **os.environ,
                "FIRESTORE_EMULATOR_HOST": emu.address,
                "GOOGLE_CLOUD_PROJECT": PROJECT,
                "PYTHONPATH": str(ROOT),
                "JOBS_HANDLERS": "bench.soakhandlers",
                "JOBS_CLEANUP_CRON": "* * * * *",
            }
            folder = Path(tempfile.mkdtemp(prefix="jobs-soak-"))
            settings = Settings(
                project=PROJECT, handlers=("bench.soakhandlers",), cleanup_cron="* * * * *"
            )
            app = App(settings)
            schedules = app.schedules
            schedules.create("soak_ok", "* * * * *", schedule_id="soak-every-minute")
            starts = 0

            def spawn() -> Worker:
                nonlocal starts
                starts += 1
                log = folder / f"worker-{starts}.log"
                handle = open(log, "wb")  # noqa: SIM115 - the process writes it
                process = subprocess.Popen(
                    [sys.executable, "-m", "jobs_lib", "worker", "--concurrency", "8"],
                    env=env,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    cwd=ROOT,
                )
                return Worker(process, log)

            steady, restarted = spawn(), spawn()
            all_logs = [steady.log, restarted.log]
            functions = Functions(App(settings, runtime="function"))
            stop = threading.Event()

            def ticker() -> None:
                while not stop.wait(10):
                    try:
                        functions.tick()
                    except Exception as exc:  # the soak reports it; the next tick tries again
                        self.problems.append(f"tick failed: {exc}")

            tick_thread = threading.Thread(target=ticker, daemon=True)
            tick_thread.start()
            rng = random.Random(1)
            created: dict[str, float] = {}
            last_seen: dict[str, tuple[str, Any]] = {}
            started = time.monotonic()
            next_restart = started + self.restart_every
            next_window = started + self.window
            window_ids: list[str] = []
            first_figures = None
            interval = 60.0 / self.per_minute
            next_job = started
            next_look = started + OBSERVE_EVERY
            while time.monotonic() - started < self.seconds:
                now = time.monotonic()
                if now >= next_job:
                    job_type = rng.choices([t for t, _ in MIX], [w for _, w in MIX])[0]
                    job = app.client.enqueue(job_type, {})
                    created[job.id] = time.time()
                    window_ids.append(job.id)
                    next_job += interval
                if now >= next_restart:
                    restarted.process.send_signal(signal.SIGTERM)
                    restarted.process.wait(60)
                    restarted = spawn()
                    all_logs.append(restarted.log)
                    next_restart = now + self.restart_every
                if now >= next_look:
                    self._observe(app, created, last_seen)
                    next_look = now + OBSERVE_EVERY
                if now >= next_window:
                    figures = proc_figures(steady.process.pid)
                    first_figures = first_figures or figures
                    self.windows.append(
                        {
                            "window": len(self.windows) + 1,
                            "jobs": len(window_ids),
                            "documents": self._documents(app),
                            "rssMb": round(figures[0], 1),
                            "threads": figures[1],
                        }
                    )
                    window_ids = []
                    next_window = now + self.window
                time.sleep(
                    max(0.0, min(next_job, next_restart, next_window, next_look) - time.monotonic())
                )
            if self.cleanup_at_end:
                app.client.enqueue(CLEANUP_TYPE, {})
            # Let the last jobs finish, and the cleanup come round (it runs every minute) and delete
            # some.
            deadline = time.monotonic() + 100
            while time.monotonic() < deadline:
                self._observe(app, created, last_seen)
                open_jobs = [
                    i
                    for i, (status, _e) in last_seen.items()
                    if status in ("pending", "in_progress")
                ]
                if not open_jobs and len(app.store.get_many(list(created))) < len(created):
                    break
                time.sleep(1)
            end_figures = proc_figures(steady.process.pid)
            stop.set()
            tick_thread.join(60)
            for worker in (steady, restarted):
                worker.process.send_signal(signal.SIGTERM)
                worker.process.wait(60)
            latencies = self._latencies(all_logs)
            result = self._verdict(
                app,
                created,
                last_seen,
                first_figures or end_figures,
                end_figures,
                latencies,
                starts,
            )
            functions.close()
            app.close()
            return result

    def _documents(self, app: App) -> int:
        return sum(app.store.count_by_status().values())

    def _observe(
        self, app: App, created: dict[str, float], last_seen: dict[str, tuple[str, Any]]
    ) -> None:
        """Note the state and expireAt of each job not yet seen finished (a small set: the work in
        flight), every few seconds, well within the 20 s retention: a job deleted later was seen
        finished first, or the check reports it."""
        ids = [
            i
            for i in created
            if last_seen.get(i, ("?", None))[0] not in ("completed", "failed", "cancelled")
        ]
        for start in range(0, len(ids), 300):
            found = app.store.get_many(ids[start : start + 300])
            for job_id, job in found.items():
                last_seen[job_id] = (
                    job.status.value if job.status else "?",
                    job.raw.get("expireAt"),
                )

    def _latencies(self, logs: list[Path]) -> list[tuple[float, float]]:
        """(log time, queueMs) of every claim."""
        from datetime import datetime

        out = []
        for log in logs:
            for line in log.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if entry.get("event") == "job_claimed" and isinstance(
                    entry.get("queueMs"), int | float
                ):
                    out.append(
                        (
                            datetime.fromisoformat(
                                entry["time"].replace("Z", "+00:00")
                            ).timestamp(),
                            float(entry["queueMs"]),
                        )
                    )
        return sorted(out)

    def _verdict(
        self,
        app: App,
        created: dict[str, float],
        last_seen: dict[str, tuple[str, Any]],
        first: tuple[float, int],
        end: tuple[float, int],
        latencies: list[tuple[float, float]],
        starts: int,
    ) -> dict[str, Any]:
        now = app.store.now()
        present = app.store.get_many(list(created))
        deleted = [i for i in created if i not in present]
        for job_id in deleted:
            status, expire_at = last_seen.get(job_id, ("never seen", None))
            if status not in ("completed", "failed", "cancelled"):
                self.problems.append(f"job {job_id} was deleted while {status}")
            elif expire_at is None or expire_at > now:
                self.problems.append(f"job {job_id} was deleted before its expireAt {expire_at}")
        unfinished = [
            i for i, job in present.items() if job.status is None or not job.status.finished
        ]
        cleanups = app.store.run_query(
            app.store.collection.where(filter=FieldFilter("type", "==", "jobs.cleanup")), "soak"
        )
        too_big = [
            j.id for j in cleanups if isinstance(j.result, int) and j.result > BATCH * MAX_BATCHES
        ]
        overdue = len(app.store.expired_finished(now - timedelta(minutes=2), 5000))
        origin = latencies[0][0] if latencies else 0
        per_window: dict[int, list[float]] = {}
        for at, queue_ms in latencies:
            per_window.setdefault(int((at - origin) // self.window), []).append(queue_ms)
        for row in self.windows:
            values = sorted(per_window.get(row["window"] - 1, []))
            row["p50 queue ms"] = round(statistics.median(values), 1) if values else None
            row["p95 queue ms"] = (
                round(values[int(0.95 * (len(values) - 1))], 1) if values else None
            )
        return {
            "seconds": self.seconds,
            "jobs": len(created),
            "deleted by cleanup": len(deleted),
            "unfinished": len(unfinished),
            "worker starts": starts,
            "steady worker RSS MB start/end": [round(first[0], 1), round(end[0], 1)],
            "steady worker threads start/end": [first[1], end[1]],
            "documents at the end": self._documents(app),
            "cleanup runs": len(cleanups),
            "cleanup runs over their batch": len(too_big),
            "finished and expired over 2 min ago, not yet deleted": overdue,
            "problems": self.problems,
            "windows": self.windows,
        }


__all__ = ["Soak"]
