"""`jobs demo`: the emulator, worker processes and real `process_notifications` jobs, end to end."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

from rich.console import Console
from rich.table import Table

from jobs_lib import emulator
from jobs_lib.client import JobsClient
from jobs_lib.config import Settings
from jobs_lib.store import JobStore


def run_demo(console: Console, *, jobs: int = 20, workers: int = 2) -> int:
    """Run the demo; returns the exit code (0 when every job ended as expected)."""
    console.print("[bold]Starting the Firestore emulator[/bold] ...")
    with emulator.running(project="demo-jobs") as emu:
        console.print(f"  emulator on {emu.address}")
        env = {**os.environ, "FIRESTORE_EMULATOR_HOST": emu.address, "GOOGLE_CLOUD_PROJECT": emu.project}
        log_dir = tempfile.mkdtemp(prefix="jobs-demo-")
        procs = []
        for n in range(workers):
            log = open(os.path.join(log_dir, f"worker-{n}.log"), "wb")  # noqa: SIM115 - closed below
            procs.append((subprocess.Popen([sys.executable, "-m", "jobs_lib", "worker", "--concurrency", "8"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True), log))
        console.print(f"[bold]Started {workers} workers[/bold] (logs in {log_dir})")
        client = JobsClient(store=JobStore(Settings(project=emu.project)))
        rng = random.Random(7)
        users = [f"user{i:03d}" for i in range(50)]
        ids = []
        for _ in range(jobs):
            target = rng.sample(users, rng.randint(1, 12))
            ids.append(client.enqueue("process_notifications", {"targetUsers": target, "notificationType": "course_reminder", "title": "Your course starts soon"}).id)
        # The seeds/000 document, as a browser app writes it: ISO-string timestamps, empty metadata.
        seed = client.db.collection("backgroundJobs").document()
        seed.set({"type": "process_notifications", "status": "pending", "createdAt": "2025-04-27T05:39:36.941Z", "scheduledFor": "2025-04-27T05:39:36.941Z", "metadata": {}})
        ids.append(seed.id)
        # A poison job: its metadata cannot be a notification request.
        poison = client.enqueue("process_notifications", {"targetUsers": "everyone"})
        ids.append(poison.id)
        console.print(f"[bold]Enqueued {len(ids)} jobs[/bold] (one with ISO-string timestamps, one malformed); waiting ...")
        started = time.monotonic()
        while time.monotonic() - started < 60:
            states = [client.get(i) for i in ids]
            if all(j.status and j.status.finished for j in states):
                break
            time.sleep(0.3)
        elapsed = time.monotonic() - started
        for proc, _log in procs:
            proc.send_signal(signal.SIGTERM)
        for proc, log in procs:
            proc.wait(30)
            log.close()
        table = Table("job", "status", "attempts", "result (users notified)", "error", title="backgroundJobs")
        for job in states:
            table.add_row(job.id, job.status.value if job.status else "?", str(job.attempts), json.dumps(job.result), (job.error or "")[:80])
        console.print(table)
        notified = sum(1 for _ in client.db.collection_group("notifications").stream())
        expected = sum(j.result for j in states if isinstance(j.result, int))
        events: collections.Counter[str] = collections.Counter()
        for n in range(workers):
            with open(os.path.join(log_dir, f"worker-{n}.log")) as handle:
                for line in handle:
                    with contextlib.suppress(json.JSONDecodeError):
                        events[json.loads(line).get("event", "-")] += 1
        console.print(f"notification documents written: {notified} (results add up to {expected})")
        console.print("worker log events: " + ", ".join(f"{k}={v}" for k, v in sorted(events.items()) if k != "-"))
        ok = sum(j.status is not None and j.status.value == "completed" for j in states) == len(ids) - 1 and notified == expected
        console.print(f"[bold {'green' if ok else 'red'}]{'OK' if ok else 'UNEXPECTED'}[/]: {len(ids)} jobs finished in {elapsed:.1f}s")
        return 0 if ok else 1
