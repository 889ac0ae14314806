"""Thousands of job documents as any client could write them, through the created-event function and
a worker at once.

The documents come from `bench.fuzzdocs.documents` (hypothesis, a fixed seed: the same documents
every run) and are written with the raw Firestore client, no jobs_lib code on the write side. Each
one's created-event is delivered to functions/main.py as the emulator sends it, a worker runs
beside it, and some documents are changed while they run. Then every document must end where a
person can see it: completed, failed or cancelled with a reason, left as written when it was
written finished, or pending only when due in the future; no function answered an error, the
worker never stopped, and the good jobs among them all completed. `python -m bench.fuzz` runs
the same with as many documents as you like.
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from google.cloud import firestore
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from bench.fuzzdocs import (
    Mutator,
    Settled,
    documents,
    event_body,
    event_headers,
    settled,
    special_documents,
)
from jobs_lib import App, Settings, Status
from jobs_lib.engine.discovery import Discovery
from jobs_lib.engine.runner import Engine
from jobs_lib.functions import Functions
from jobs_lib.model.retry import Backoff
from jobs_lib.registry import HandlerRegistry
from jobs_lib.store import JobStore
from jobs_lib.worker import Worker

from .conftest import PROJECT, ROOT, serve_main

MAIN = str(ROOT / "functions" / "main.py")
#: Documents in the test command; `python -m bench.fuzz --documents 20000` sets JOBS_FUZZ_DOCUMENTS.
COUNT = int(os.environ.get("JOBS_FUZZ_DOCUMENTS", "700"))


@pytest.fixture
def fuzz_registry(registry: HandlerRegistry) -> HandlerRegistry:
    registry.handler("noop_fuzz", max_attempts=3, timeout=30)(lambda ctx: "ok")

    def flaky(ctx: Any) -> int:
        if ctx.attempt == 1:
            raise ConnectionError("first attempts fail")
        return int(ctx.attempt)

    registry.handler("flaky_fuzz", max_attempts=3, backoff=Backoff.fixed(0), timeout=30)(flaky)
    return registry


@pytest.fixture
def runners(settings: Settings, fuzz_registry: HandlerRegistry) -> Iterator[tuple[Any, Worker]]:
    """The created-event function (functions-framework) and a worker, both on the test's
    emulator."""
    quick = settings.with_(orphan_seconds=2)
    http = serve_main("on_job_created", "cloudevent").test_client()
    function = Functions(App(quick, registry=fuzz_registry, runtime="function"))
    sys.modules["jobs_lib.deploy.entrypoints"].jobs = function
    store = JobStore(quick)
    engine = Engine(store, fuzz_registry, lease_seconds=5)
    worker = Worker(
        engine,
        concurrency=8,
        poll_interval=0.05,
        discovery=Discovery(
            store, lease_seconds=5, holder=engine.holder, scan_interval=0.5, slow_interval=0.5
        ),
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    yield http, worker
    worker.stop()
    thread.join(30)
    function.close()


def test_fuzzed_documents_all_end_somewhere_a_person_can_see(
    store: JobStore, runners: tuple[Any, Worker]
) -> None:
    http, worker = runners
    reference = store.db.collection("elsewhere").document("some-doc")
    now = store.now()
    written: dict[str, dict[str, Any]] = {}
    good: list[str] = []
    result = Settled()
    rng = random.Random(20261201)
    mutator = Mutator(store, [], rng).start()

    def write_and_deliver(job_id: str, doc: dict[str, Any]) -> None:
        try:
            store.ref(job_id).set(doc)
        except (
            Exception
        ):  # Firestore refused it (too deep, too large, an array in an array): nothing to run
            result.refused_by_firestore += 1
            return
        written[job_id] = doc
        mutator.ids.append(job_id)
        response = http.post(
            "/", headers=event_headers(job_id, PROJECT), data=event_body(store, job_id)
        )
        result.events += 1
        result.function_errors += response.status_code != 200

    for job_id, doc in special_documents(now).items():
        write_and_deliver(job_id, doc)

    @seed(20261201)
    @settings(
        max_examples=COUNT,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        derandomize=False,
    )
    @given(documents(reference, now), st.integers(0, 2**32))
    def one(doc: dict[str, Any], salt: int) -> None:
        write_and_deliver(f"fz-{len(written)}-{salt % 997}", doc)
        if len(written) % 7 == 0:  # a good job beside the odd ones, written the same way
            good.append(f"good-{len(good)}")
            write_and_deliver(
                good[-1],
                {
                    "type": "noop_fuzz",
                    "status": "pending",
                    "metadata": {},
                    "createdAt": firestore.SERVER_TIMESTAMP,
                },
            )

    one()
    result.updated_while_running = mutator.stop()
    result.written = len(written)
    deadline = time.monotonic() + 90 + COUNT / 100
    while settled(store, written, result) and time.monotonic() < deadline:
        time.sleep(0.5)
    figures = result.as_dict()
    open_docs = {
        job_id: (store.get(job_id).raw if store.get(job_id) else None)
        for job_id in result.unsettled[:5]
    }  # type: ignore[union-attr]
    assert not result.unsettled, f"documents that never ended anywhere: {open_docs} ({figures})"
    print("fuzz figures:", figures)
    assert result.written >= COUNT * 0.6, figures
    assert (
        result.function_errors == 0 and not result.failed_without_reason and not result.unsettled
    ), figures
    assert result.completed > 50 and result.failed_with_reason > 50, (
        figures
    )  # both kinds really ran
    good_jobs = [store.get(job_id) for job_id in good]
    assert len(good_jobs) >= COUNT // 10
    assert all(j is not None and j.status is Status.COMPLETED for j in good_jobs), [
        (j.id, j.raw) for j in good_jobs if j is None or j.status is not Status.COMPLETED
    ][:3]
    delays = sorted(
        (j.started_at - j.created_at).total_seconds()
        for j in good_jobs
        if j and j.started_at and j.created_at
    )
    print(
        f"good jobs beside them: {len(delays)}, create->start p50 "
        f"{delays[len(delays) // 2]:.3f}s, max {delays[-1]:.3f}s"
    )
    assert worker.running_count() == 0 and worker.last_loop is not None  # the worker is up and idle
    # Firestore refuses an array in an array; the emulator takes maps 21 deep (production refuses
    # them): either way whatever was written ended somewhere, the 1 MiB string included.
    assert "edge-1mib-string" in written and "edge-array-in-array" not in written
    assert store.get("edge-deep-20").status is not None  # type: ignore[union-attr]
