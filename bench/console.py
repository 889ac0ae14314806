"""The console's costs: `python -m bench.console` prints reads per page and completion-to-screen
latency.

1. On a fresh emulator holding 10,000 jobs (three types; pending, delayed, running, and finished
   within the hour, the day and earlier), the Firestore reads one overview, one list page and one
   job page cost, as the API's own operation counts give them; then what one overview would cost
   on 1,000,000 jobs of the same mix, by the billing rule (a count aggregation costs one read per
   1,000 index entries it counts, at least one).
2. In headless Chromium, the time from a job's ``completedAt`` to the console's job page showing
   it completed, over jobs run one after another by a worker in this process.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from werkzeug.test import Client

from jobs_lib import App, Settings
from jobs_lib.console.server import ConsoleServer
from jobs_lib.devstack import emulator
from jobs_lib.registry import HandlerRegistry, default_registry
from jobs_lib.worker import Worker

PROJECT = "demo-bench-console"
TYPES = ("export_report", "send_digest", "process_notifications")


def operator_token() -> str:
    """An emulator ID token of an operator (the API accepts it in emulator mode)."""
    import base64

    def b64(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {
        "iss": f"https://securetoken.google.com/{PROJECT}",
        "aud": PROJECT,
        "sub": "bench",
        "user_id": "bench",
        "iat": now - 5,
        "auth_time": now - 5,
        "exp": now + 3600,
        "operator": True,
        "permissions": ["jobs.view", "jobs.retry"],
    }
    return b64({"alg": "none", "typ": "JWT"}) + "." + b64(claims) + "."


def mix(total: int, now: datetime) -> list[dict[str, Any]]:
    """`total` job documents: 5% due, 5% delayed, 1% running, 10% finished this hour, 30% earlier
    today, the rest days ago."""
    docs = []
    for i in range(total):
        job_type = TYPES[i % len(TYPES)]
        share = (i * 7919) % 100
        doc: dict[str, Any] = {
            "type": job_type,
            "metadata": {},
            "createdAt": now - timedelta(days=3),
            "attempts": 1,
        }
        if share < 5:
            doc.update(status="pending", scheduledFor=now - timedelta(minutes=5))
        elif share < 10:
            doc.update(status="pending", scheduledFor=now + timedelta(hours=2))
        elif share < 11:
            doc.update(
                status="in_progress",
                scheduledFor=now - timedelta(minutes=1),
                leaseExpiresAt=now + timedelta(minutes=5),
            )
        else:
            finished = now - (
                timedelta(minutes=30)
                if share < 21
                else timedelta(hours=10)
                if share < 51
                else timedelta(days=2)
            )
            doc.update(
                status="failed" if share % 10 == 0 else "completed",
                scheduledFor=finished - timedelta(seconds=5),
                completedAt=finished,
            )
        docs.append(doc)
    return docs


def reads_per_page(jobs: int) -> dict[str, Any]:
    """Reads of one overview, list page and job page on a collection of `jobs` documents."""
    from google.cloud import firestore

    with emulator.running(project=PROJECT):
        os.environ["FIREBASE_AUTH_EMULATOR_HOST"] = "127.0.0.1:9099"
        db = firestore.Client(project=PROJECT)
        now = datetime.now(UTC)
        docs = mix(jobs, now)
        for start in range(0, len(docs), 400):
            batch = db.batch()
            for doc in docs[start : start + 400]:
                batch.set(db.collection("backgroundJobs").document(), doc)
            batch.commit()
        registry = HandlerRegistry()
        for job_type in TYPES:
            registry.handler(job_type)(lambda ctx: None)
        app = App(Settings(project=PROJECT), registry=registry)
        http = Client(app.api())
        headers = {"Authorization": f"Bearer {operator_token()}"}
        stats = app.connection.stats

        def cost(path: str) -> tuple[int, Any]:
            before = stats.snapshot()["reads"]
            response = http.get(path, headers=headers)
            assert response.status_code == 200, response.get_data(as_text=True)
            return stats.snapshot()["reads"] - before, response.get_json()

        overview_reads, overview = cost("/v1/overview")
        list_reads, listing = cost("/v1/jobs?scope=all&pageSize=25")
        job_reads, _ = cost(f"/v1/jobs/{listing['jobs'][0]['id']}")
        queries = stats.snapshot()["byKind"]
        # The same overview at 100 times the size, by the billing rule, from the counts just made.
        scale = 1_000_000 / jobs
        counted = []
        for row in overview["types"]:
            figures = [
                row["due"],
                row["delayed"],
                row["inProgress"],
                *row["lastHour"].values(),
                *row["lastDay"].values(),
            ]
            counted += figures
        count_queries = len(counted)
        estimated = sum(max(1, math.ceil(n * scale / 1000)) for n in counted) + (
            overview_reads - sum(max(1, math.ceil(n / 1000)) for n in counted)
        )
        app.close()
        return {
            "jobs": jobs,
            "overview reads": overview_reads,
            "overview count queries": count_queries,
            "list page reads (25 jobs)": list_reads,
            "job page reads": job_reads,
            "overview reads at 1,000,000 jobs (arithmetic)": estimated,
            "byKind": queries,
        }


def completion_latency(samples: int) -> dict[str, Any]:
    """Seconds from a job's completedAt to its page in the console showing it completed."""
    from playwright.sync_api import sync_playwright

    with emulator.running(project=PROJECT):
        os.environ["FIREBASE_AUTH_EMULATOR_HOST"] = "127.0.0.1:9099"
        registry = HandlerRegistry()
        for name in default_registry.types():
            spec = default_registry.get(name)
            assert spec is not None
            registry.register(spec)
        registry.handler("sleepy", timeout=60)(
            lambda ctx: time.sleep(float(ctx.metadata["seconds"])) or "slept"
        )
        settings = Settings(
            project=PROJECT, console_auth="emulator-tokens", auth_emulator_host="127.0.0.1:9099"
        )
        app = App(settings, registry=registry)
        server = ConsoleServer(app.api()).start()
        worker = Worker(app.new_engine(), concurrency=4, poll_interval=0.05)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        latencies = []
        executable = shutil.which("chromium")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=executable,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                ],
            )
            page = browser.new_page()
            page.goto(server.url)
            page.get_by_role("button", name="Sign in as dev operator").click()
            page.wait_for_selector("#who:has-text('dev-operator')")
            rng = random.Random(3)
            for _ in range(samples):
                # Random run times, so completions fall anywhere within the page's polling period.
                job = app.client.enqueue("sleepy", {"seconds": rng.uniform(0.5, 2.5)})
                page.goto(f"{server.url}#/jobs/{job.id}")
                page.wait_for_selector(
                    "#job .status[data-status='in_progress'], #job .status[data-status='pending']",
                    timeout=20_000,
                )
                # The moment the page shows it, noted by the page itself.
                page.evaluate("""() => {
                window.__shownAt = null;
                new MutationObserver((_, observer) => {
                    if (document.querySelector("#job .status[data-status='completed']")) {
                        window.__shownAt = Date.now(); observer.disconnect();
                    }
                }).observe(document.querySelector('#main'), {subtree: true, childList: true}); }""")
                page.wait_for_function("() => window.__shownAt !== null", timeout=20_000)
                shown = page.evaluate("() => window.__shownAt") / 1000
                done = app.client.get(job.id).completed_at
                assert done is not None
                latencies.append(shown - done.timestamp())
            browser.close()
        worker.stop()
        thread.join(30)
        server.stop()
        app.close()
    latencies.sort()
    return {
        "samples": samples,
        "p50 s": round(statistics.median(latencies), 3),
        "p95 s": round(latencies[min(len(latencies) - 1, math.ceil(0.95 * len(latencies)) - 1)], 3),
        "max s": round(latencies[-1], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    print("reads per console page ...", file=sys.stderr, flush=True)
    reads = reads_per_page(args.jobs)
    print(json.dumps({k: v for k, v in reads.items() if k != "byKind"}, indent=2))
    print("completion to console, in headless Chromium ...", file=sys.stderr, flush=True)
    latency = completion_latency(args.samples)
    print(json.dumps(latency, indent=2))
    out = os.path.join(os.path.dirname(__file__), "results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "console.json"), "w") as handle:
        json.dump({"reads": reads, "latency": latency}, handle, indent=2)


if __name__ == "__main__":
    main()
