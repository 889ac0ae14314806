"""`jobs demo`: the local stack (emulator, functions, scheduler) and real jobs through it."""

from __future__ import annotations

import collections
import contextlib
import json
import random
import time
from datetime import UTC, datetime, timedelta

from rich.console import Console
from rich.table import Table

from jobs_lib.client import JobsClient
from jobs_lib.config import Settings
from jobs_lib.devstack.dev import DevStack
from jobs_lib.model.job import Job
from jobs_lib.store import open_store


def run_demo(console: Console, *, jobs: int = 20, stay: bool = False) -> int:
    """Run the demo; returns the exit code (0 when every job ended as expected). With `stay`, the
    stack and its console stay up after the results until Ctrl-C."""
    console.print(
        "[bold]Starting the local stack[/bold]: Firestore emulator, functions "
        "(functions-framework), scheduler ticks, console ..."
    )
    with DevStack(tick_interval=2.0, console_port=0, example=True) as stack:
        assert stack.emulator is not None
        console.print(
            f"  emulator {stack.emulator.address}; functions: {', '.join(stack.hosts)}; logs in "
            f"{stack.log_dir}"
        )
        if stack.console is not None:
            console.print(
                f"  console  {stack.console.url}  (sign in as the dev operator)", highlight=False
            )
        if stack.example is not None:
            console.print(
                f"  web app  {stack.example.url}  (the example web app: sign in as "
                f"alice@example.test / alice-password, send, watch, cancel)",
                highlight=False,
            )
        elif stack.example_missing:
            console.print(f"  web app  not served: {stack.example_missing}")
        client = JobsClient(store=open_store(Settings(project=stack.project)))
        rng = random.Random(7)
        users = [f"user{i:03d}" for i in range(50)]
        expected: dict[str, str] = {}
        for _ in range(jobs):
            target = rng.sample(users, rng.randint(1, 12))
            expected[
                client.enqueue(
                    "process_notifications",
                    {
                        "targetUsers": target,
                        "notificationType": "course_reminder",
                        "title": "Your course starts soon",
                    },
                ).id
            ] = "completed"
        # The original app's document as a browser writes it: ISO-string timestamps, empty metadata,
        # no priority.
        seed = client.db.collection("backgroundJobs").document()
        seed.set(
            {
                "type": "process_notifications",
                "status": "pending",
                "createdAt": "2025-04-27T05:39:36.941Z",
                "scheduledFor": "2025-04-27T05:39:36.941Z",
                "metadata": {},
            }
        )
        expected[seed.id] = "completed"
        # A job for later: the created-event leaves it, a scheduler tick runs it when due.
        later = client.enqueue(
            "process_notifications",
            {"targetUsers": ["user001"]},
            scheduled_for=datetime.now(UTC) + timedelta(seconds=3),
        )
        expected[later.id] = "completed"
        # A malformed job: it ends failed with its reason; nothing else is disturbed.
        expected[client.enqueue("process_notifications", {"targetUsers": "everyone"}).id] = "failed"
        console.print(
            f"[bold]Enqueued {len(expected)} jobs[/bold] (one with ISO-string timestamps, one "
            f"due in 3 s, one malformed); no worker runs: the emulator's created-events and the "
            f"ticks do the work"
        )
        started = time.monotonic()
        states: list[Job] = []
        while time.monotonic() - started < 60:
            states = [client.get(job_id) for job_id in expected]
            if all(j.status and j.status.finished for j in states):
                break
            time.sleep(0.3)
        elapsed = time.monotonic() - started
        table = Table(title="backgroundJobs")
        table.add_column("job", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("attempts", justify="right")
        table.add_column("result (users notified)", justify="right")
        table.add_column("started after (s)", justify="right")
        for job in states:
            delay = (
                (job.started_at - job.created_at).total_seconds()
                if job.started_at and job.created_at
                else None
            )
            shown = (
                "-" if delay is None else (f"{delay:.2f}" if delay < 3600 else "(2025 createdAt)")
            )
            table.add_row(
                job.id,
                job.status.value if job.status else "?",
                str(job.attempts),
                json.dumps(job.result),
                shown,
            )
        console.print(table)
        for job in states:
            if job.error:
                console.print(
                    f"[red]{job.id}[/red] {job.status.value if job.status else '?'}: {job.error}"
                )
        notified = sum(1 for _ in client.db.collection_group("notifications").stream())
        results = sum(j.result for j in states if isinstance(j.result, int))
        events: collections.Counter[str] = collections.Counter()
        for host in stack.hosts.values():
            for line in host.log_path.read_text(errors="replace").splitlines():
                with contextlib.suppress(json.JSONDecodeError, AttributeError):
                    events[json.loads(line).get("event", "-")] += 1
        console.print(f"notification documents written: {notified} (results add up to {results})")
        console.print(
            f"created-events delivered to the function: "
            f"{stack.dispatcher.delivered if stack.dispatcher else 0}; scheduler ticks: "
            f"{len(stack.ticks)}"
        )
        console.print(
            "function log events: "
            + ", ".join(f"{k}={v}" for k, v in sorted(events.items()) if k != "-")
        )
        ok = (
            all(j.status is not None and j.status.value == expected[j.id] for j in states)
            and notified == results
        )
        console.print(
            f"[bold {'green' if ok else 'red'}]{'OK' if ok else 'UNEXPECTED'}[/]: {len(states)} "
            f"jobs finished in {elapsed:.1f}s"
        )
        if stay and stack.console is not None:
            console.print(
                f"The stack stays up: open {stack.console.url} (Ctrl-C stops it)", highlight=False
            )
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(1)
        return 0 if ok else 1
