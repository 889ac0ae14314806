"""The Cloud Functions, driven with the requests the platform sends: emulator and Eventarc
CloudEvents (captured from the emulator, tests/data/emulator-events) and Cloud Scheduler's HTTP
call."""

from __future__ import annotations

import base64
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bench.fuzzdocs import event_body as fuzz_event_body
from jobs_lib import ConfigurationError, JobsClient, Status
from jobs_lib.app import load_handler_modules
from jobs_lib.registry import HandlerRegistry, default_registry
from jobs_lib.store import JobStore
from jobs_lib.store.events import decode_document_event

from .conftest import ROOT, serve_main, wait_finished

CAPTURES = ROOT / "tests" / "data" / "emulator-events"
MAIN = str(ROOT / "functions" / "main.py")


def capture(name: str) -> tuple[dict[str, str], bytes]:
    """Headers and body of a captured request."""
    headers = {}
    for line in (CAPTURES / f"{name}.headers.txt").read_text().splitlines()[1:]:
        if ": " in line:
            key, value = line.split(": ", 1)
            headers[key] = value
    return headers, (CAPTURES / f"{name}.body").read_bytes()


@pytest.fixture
def function_app(store: JobStore) -> Iterator[Callable[[str, str], Any]]:
    """Serve a function of functions/main.py as functions-framework does: each call is a new
    instance (main.py loaded anew, its jobs_lib built from the environment on the first request)."""
    load_handler_modules("tests.handlers_for_tests")
    instances: list[Any] = []

    def serve(target: str, signature: str) -> Any:
        client = serve_main(target, signature).test_client()
        instances.append(sys.modules["main"].jobs)  # the module functions-framework just loaded
        return client

    yield serve
    for jobs in instances:
        jobs.close()


@pytest.fixture
def created_app(function_app: Callable[[str, str], Any]) -> Any:
    return function_app("on_job_created", "cloudevent")


@pytest.fixture
def tick_app(function_app: Callable[[str, str], Any]) -> Any:
    return function_app("tick", "http")


def event_body(store: JobStore, job_id: str, *, raw: bool) -> bytes:
    """A DocumentEventData for the document as it is now: raw protobuf (Eventarc) or base64
    (emulator)."""
    return fuzz_event_body(store, job_id, raw=raw)


def event_headers(job_id: str, event_id: str = "evt-1") -> dict[str, str]:
    headers, _body = capture("v2_created_cloudevent_b64proto")
    headers.update(
        {
            "ce-id": event_id,
            "ce-subject": f"documents/backgroundJobs/{job_id}",
            "ce-document": f"backgroundJobs/{job_id}",
            "ce-project": "demo-jobs-test",
        }
    )
    return headers


def runs(store: JobStore, job_id: str) -> dict[str, Any]:
    return store.db.collection("runs").document(job_id).get().to_dict() or {}


# -- decoding --------------------------------------------------------------------------------


def test_decodes_the_emulators_base64_created_event() -> None:
    _headers, body = capture("v2_created_cloudevent_b64proto")
    doc = decode_document_event(body)
    assert doc is not None
    assert (doc.collection, doc.job_id) == ("backgroundJobs", "job1")
    assert (
        doc.fields["status"] == "queued"
        and doc.fields["n"] == 1
        and doc.fields["tags"] == ["a", "b"]
    )
    assert doc.fields["nested"] == {"x": 1.5} and doc.fields["nul"] is None
    assert doc.fields["ts"] == datetime(2026, 11, 22, 23, 59, 54, 435000, tzinfo=UTC)
    assert doc.update_time.year == 2026


def test_decodes_raw_protobuf_as_eventarc_sends_it() -> None:
    _headers, body = capture("v2_created_cloudevent_b64proto")
    assert decode_document_event(base64.b64decode(body)) == decode_document_event(body)


def test_created_event_without_a_document_is_ignored() -> None:
    _headers, body = capture("v2_created_BOGUS_from_delete_of_nonexistent_doc")
    assert decode_document_event(body) is None
    assert decode_document_event(b"") is None


def test_decodes_other_collections_for_the_caller_to_ignore() -> None:
    _headers, body = capture("v2_created_withAuthContext_b64proto")
    doc = decode_document_event(body)
    assert doc is not None and (doc.collection, doc.job_id, doc.fields) == (
        "authJobs",
        "j1",
        {"a": 1},
    )


# -- the created-event function ---------------------------------------------------------------


@pytest.mark.parametrize("raw", [False, True], ids=["emulator-base64", "eventarc-raw-protobuf"])
def test_created_event_runs_the_job(
    created_app: Any, client: JobsClient, store: JobStore, raw: bool
) -> None:
    job = client.enqueue("sleep", {"seconds": 0.05})
    response = created_app.post(
        "/", headers=event_headers(job.id), data=event_body(store, job.id, raw=raw)
    )
    assert response.status_code == 200
    done = store.get(job.id)
    assert done is not None and done.status is Status.COMPLETED and done.attempts == 1
    assert runs(store, job.id) == {"started": 1, "finished": 1, "pid": runs(store, job.id)["pid"]}


def test_seed_000_document_with_string_timestamps_runs_from_its_event(
    created_app: Any, store: JobStore
) -> None:
    ref = store.collection.document()
    ref.set(
        {
            "createdAt": "2025-04-27T05:39:36.941Z",
            "metadata": {},
            "scheduledFor": "2025-04-27T05:39:36.941Z",
            "type": "process_notifications",
        }
    )
    assert (
        created_app.post(
            "/", headers=event_headers(ref.id), data=event_body(store, ref.id, raw=False)
        ).status_code
        == 200
    )
    done = store.get(ref.id)
    assert done is not None and (done.status, done.result) == (Status.COMPLETED, 0)


def test_a_replayed_event_runs_the_handler_once(
    created_app: Any, client: JobsClient, store: JobStore
) -> None:
    job = client.enqueue("sleep", {"seconds": 0.05})
    body = event_body(store, job.id, raw=True)
    for _ in range(3):
        assert (
            created_app.post("/", headers=event_headers(job.id, "same-id"), data=body).status_code
            == 200
        )
    assert runs(store, job.id)["started"] == 1
    assert store.get(job.id).status is Status.COMPLETED  # type: ignore[union-attr]


def test_concurrent_deliveries_of_one_event_run_it_once(
    created_app: Any, client: JobsClient, store: JobStore
) -> None:
    job = client.enqueue("sleep", {"seconds": 0.3})
    body = event_body(store, job.id, raw=True)
    results: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(
                created_app.post("/", headers=event_headers(job.id), data=body).status_code
            )
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 4
    assert runs(store, job.id)["started"] == 1


def test_poison_documents_end_failed_and_the_function_still_answers_200(
    created_app: Any, store: JobStore, client: JobsClient
) -> None:
    cases = {
        "unknown": {"type": "no_such_type", "status": "pending"},
        "badmeta": {"type": "process_notifications", "metadata": "x"},
        "queued": {"type": "process_notifications", "status": "queued"},
        "badtime": {"type": "process_notifications", "scheduledFor": "soon"},
    }
    for job_id, data in cases.items():
        store.ref(job_id).set(data)
        assert (
            created_app.post(
                "/", headers=event_headers(job_id), data=event_body(store, job_id, raw=True)
            ).status_code
            == 200
        )
    errors = {job_id: store.get(job_id).error for job_id in cases}  # type: ignore[union-attr]
    assert all(store.get(j).status is Status.FAILED for j in cases)  # type: ignore[union-attr]
    assert "no handler is registered for job type 'no_such_type'" in errors["unknown"]  # type: ignore[operator]
    assert "metadata must be a map" in errors["badmeta"]  # type: ignore[operator]
    assert "status 'queued' is not one of" in errors["queued"]  # type: ignore[operator]
    assert "scheduledFor 'soon' is not a timestamp" in errors["badtime"]  # type: ignore[operator]
    good = client.enqueue("process_notifications", {"targetUsers": ["a"]})
    assert (
        created_app.post(
            "/", headers=event_headers(good.id), data=event_body(store, good.id, raw=True)
        ).status_code
        == 200
    )
    assert store.get(good.id).status is Status.COMPLETED  # type: ignore[union-attr]


def test_a_stale_event_for_a_poison_job_settles_it_in_the_same_invocation(
    created_app: Any, store: JobStore, client: JobsClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The document changed after the event was sent (an app added a field): the event's version is
    stale, so the settling write is refused; the function reads the job again and settles it then,
    as it does for a runnable job, instead of leaving it pending for a tick."""
    cases = {
        "stale-unknown": {"type": "no_such_type", "status": "pending"},
        "stale-badmeta": {
            "type": "process_notifications",
            "metadata": {"targetUsers": "not-a-list"},
        },
    }
    for job_id, data in cases.items():
        store.ref(job_id).set(data)
        body = event_body(
            store, job_id, raw=False
        )  # the event as the emulator sends it, for this version
        store.ref(job_id).update({"note": "edited after the event"})  # now the event is stale
        assert created_app.post("/", headers=event_headers(job_id), data=body).status_code == 200
        job = store.get(job_id)
        assert job is not None and job.status is Status.FAILED, (
            job_id,
            job,
        )  # settled by this very request
        assert job.raw["note"] == "edited after the event"
    assert "no handler is registered for job type 'no_such_type'" in (
        store.get("stale-unknown").error or ""
    )  # type: ignore[union-attr]
    assert "metadata is not valid input for process_notifications" in (
        store.get("stale-badmeta").error or ""
    )  # type: ignore[union-attr]
    good = client.enqueue("process_notifications", {"targetUsers": ["a"]})
    body = event_body(store, good.id, raw=True)
    store.ref(good.id).update({"note": "edited"})
    assert created_app.post("/", headers=event_headers(good.id), data=body).status_code == 200
    assert store.get(good.id).status is Status.COMPLETED  # type: ignore[union-attr]  # the runnable case, as before


def test_events_without_a_job_are_answered_and_ignored(created_app: Any, store: JobStore) -> None:
    headers, body = capture("v2_created_BOGUS_from_delete_of_nonexistent_doc")
    assert created_app.post("/", headers=headers, data=body).status_code == 200
    headers, body = capture("v2_created_withAuthContext_b64proto")
    assert created_app.post("/", headers=headers, data=body).status_code == 200
    headers, body = capture("v2_updated_cloudevent_b64proto")
    assert created_app.post("/", headers=headers, data=body).status_code == 200
    assert list(store.collection.stream()) == []


def test_jobs_not_yet_due_are_left_for_the_tick(
    created_app: Any, client: JobsClient, store: JobStore
) -> None:
    job = client.enqueue(
        "sleep", {"seconds": 0}, scheduled_for=datetime.now(UTC) + timedelta(hours=1)
    )
    assert (
        created_app.post(
            "/", headers=event_headers(job.id), data=event_body(store, job.id, raw=True)
        ).status_code
        == 200
    )
    assert store.get(job.id).status is Status.PENDING  # type: ignore[union-attr]


# -- time limits ---------------------------------------------------------------------------------


def test_a_handler_longer_than_any_function_must_be_worker_only() -> None:
    registry = HandlerRegistry()
    with pytest.raises(ConfigurationError, match="longer than any Cloud Function may run"):
        registry.handler("overnight", timeout=4 * 3600)(lambda ctx: None)
    registry.handler("overnight", timeout=4 * 3600, worker_only=True)(lambda ctx: None)


@pytest.fixture
def long_handlers() -> Iterator[None]:
    default_registry.handler("ten_minutes", timeout=600)(lambda ctx: "ran")
    default_registry.handler("worker_job", timeout=7200, worker_only=True)(lambda ctx: "ran")
    yield
    default_registry.unregister("ten_minutes")
    default_registry.unregister("worker_job")


def test_long_jobs_are_left_by_the_event_to_the_tick_and_worker_only_ones_to_workers(
    long_handlers: None,
    created_app: Any,
    function_app: Callable[[str, str], Any],
    client: JobsClient,
    store: JobStore,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    worker_factory: Any,
) -> None:
    long_job, worker_job = client.enqueue("ten_minutes", {}), client.enqueue("worker_job", {})
    for job in (long_job, worker_job):
        assert (
            created_app.post(
                "/", headers=event_headers(job.id), data=event_body(store, job.id, raw=True)
            ).status_code
            == 200
        )
    assert {r.jobId for r in caplog.records if getattr(r, "event", None) == "job_deferred"} == {
        long_job.id,
        worker_job.id,
    }  # type: ignore[attr-defined]
    assert store.get(long_job.id).status is Status.PENDING  # type: ignore[union-attr]

    monkeypatch.setenv(
        "JOBS_FUNCTION_TIMEOUT", "300"
    )  # a tick deployed too short for a 600 s handler: left alone
    assert (
        function_app("tick", "http").post("/", headers=scheduler_headers()).get_json()["claimed"]
        == 0
    )
    monkeypatch.setenv("JOBS_FUNCTION_TIMEOUT", "900")  # redeployed with room for it
    assert (
        function_app("tick", "http").post("/", headers=scheduler_headers()).get_json()["claimed"]
        == 1
    )
    assert store.get(long_job.id).result == "ran"  # type: ignore[union-attr]
    assert store.get(worker_job.id).status is Status.PENDING  # type: ignore[union-attr]

    from jobs_lib.registry import default_registry as registry

    worker = worker_factory()
    worker.worker.engine.registry = registry
    assert wait_finished(store, [worker_job.id])[worker_job.id].result == "ran"


# -- the tick ------------------------------------------------------------------------------------


def scheduler_headers() -> dict[str, str]:
    return {
        "User-Agent": "Google-Cloud-Scheduler",
        "X-CloudScheduler": "true",
        "X-CloudScheduler-JobName": "jobs-tick",
        "X-CloudScheduler-ScheduleTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "Content-Type": "application/octet-stream",
        "Authorization": "Bearer an-oidc-token-checked-by-cloud-run",
    }


def test_tick_runs_delayed_retried_orphaned_and_expired_jobs(
    tick_app: Any, client: JobsClient, store: JobStore
) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    delayed = client.enqueue("sleep", {"seconds": 0}, scheduled_for=past)
    orphan = client.enqueue("sleep", {"seconds": 0})  # its created-event was lost
    retried = client.enqueue("sleep", {"seconds": 0})
    store.ref(retried.id).update({"attempts": 1, "error": "earlier failure", "scheduledFor": past})
    expired = client.enqueue("sleep", {"seconds": 0})
    store.claim([store.get(expired.id)], "dead-instance", 0.2)  # type: ignore[list-item]
    future = client.enqueue(
        "sleep", {"seconds": 0}, scheduled_for=datetime.now(UTC) + timedelta(hours=1)
    )
    time.sleep(0.3)
    response = tick_app.post("/", headers=scheduler_headers(), data=b"{}")
    assert response.status_code == 200
    summary = response.get_json()
    assert summary["claimed"] == 4 and summary["outcomes"] == {"completed": 4}
    assert summary["scheduleTime"] is not None
    jobs = {j: store.get(j) for j in (delayed.id, orphan.id, retried.id, expired.id, future.id)}
    assert [jobs[j].status for j in (delayed.id, orphan.id, retried.id, expired.id)] == [
        Status.COMPLETED
    ] * 4  # type: ignore[union-attr]
    assert jobs[retried.id].attempts == 2 and jobs[expired.id].attempts == 2  # type: ignore[union-attr]
    assert jobs[future.id].status is Status.PENDING  # type: ignore[union-attr]


def test_two_ticks_at_the_same_moment_run_each_job_once(
    tick_app: Any, client: JobsClient, store: JobStore
) -> None:
    ids = [client.enqueue("sleep", {"seconds": 0.2}).id for _ in range(12)]
    answers: list[dict[str, Any]] = []
    threads = [
        threading.Thread(
            target=lambda: answers.append(
                tick_app.post("/", headers=scheduler_headers()).get_json()
            )
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(a["claimed"] for a in answers) == 12
    assert all(runs(store, j)["started"] == 1 for j in ids)
    assert all(store.get(j).status is Status.COMPLETED for j in ids)  # type: ignore[union-attr]


def test_a_job_that_sleeps_in_its_created_event_is_woken_by_a_tick(
    created_app: Any, tick_app: Any, client: JobsClient, store: JobStore
) -> None:
    job = client.enqueue("napping", {"seconds": 0.5})
    assert (
        created_app.post(
            "/", headers=event_headers(job.id), data=event_body(store, job.id, raw=False)
        ).status_code
        == 200
    )
    slept = store.get(job.id)
    assert (
        slept is not None
        and slept.status is Status.PENDING
        and slept.attempts == 0
        and len(slept.sleeps) == 1
    )
    assert (
        tick_app.post("/", headers=scheduler_headers()).get_json()["claimed"] == 0
    )  # not due yet: nothing to run
    time.sleep(max((slept.sleeps[0] - store.now()).total_seconds(), 0) + 0.1)
    assert tick_app.post("/", headers=scheduler_headers()).get_json()["claimed"] == 1
    done = store.get(job.id)
    assert done is not None and done.status is Status.COMPLETED and done.attempts == 1
    assert done.started_at is not None and done.started_at >= slept.sleeps[0]
    assert set(done.steps) == {"before", "after"} and done.steps["before"]["attempt"] == 1


def test_an_idle_tick_returns_quickly_with_an_empty_summary(tick_app: Any, store: JobStore) -> None:
    started = time.monotonic()
    summary = tick_app.post("/", headers=scheduler_headers()).get_json()
    assert summary["claimed"] == 0 and summary["outcomes"] == {}
    assert time.monotonic() - started < summary["budgetSeconds"]


def test_functions_folder_is_self_contained_after_packaging(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    from jobs_lib.deploy.commands import package_functions

    folder = tmp_path / "functions"
    shutil.copytree(
        ROOT / "functions", folder, ignore=shutil.ignore_patterns("jobs_lib", "__pycache__")
    )
    package_functions(folder)
    requirements = (folder / "requirements.txt").read_text()
    for needed in ("functions-framework", "google-cloud-firestore", "google-events", "pydantic"):
        assert needed in requirements
    # Import main.py with only the folder on the path (and the venv's third-party packages), not the
    # repo.
    code = (
        "import sys; sys.path = [p for p in sys.path if 'work/main' not in p or "
        "'site-packages' in p]; sys.path.insert(0, '.'); import main, jobs_lib; "
        "print(jobs_lib.__file__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=folder,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(str(folder))


def test_tick_sweepers_each_sweep_their_share_of_the_shard_lanes(
    function_app: Callable[[str, str], Any],
    client: JobsClient,
    store: JobStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOBS_TICK_SWEEPERS", "3")
    tick = function_app("tick", "http")
    from jobs_lib.store import shard_of

    ids = [client.enqueue("sleep", {"seconds": 0}).id for _ in range(45)]
    unsharded = store.collection.document()  # an app's job without a shard: sweeper 0's scan
    unsharded.set(
        {
            "type": "sleep",
            "status": "pending",
            "metadata": {"seconds": 0},
            "scheduledFor": store.now(),
        }
    )
    by_sweeper = {k: {i for i in ids if shard_of(i) * 3 // 30 == k} for k in range(3)}
    assert all(by_sweeper.values())

    # Cloud Scheduler sends the body as application/octet-stream: the tick reads it anyway.
    one = tick.post("/", headers=scheduler_headers(), data=b'{"sweeper": 1}').get_json()
    assert one["sweeper"] == 1 and one["claimed"] == len(by_sweeper[1]) and one["schedules"] is None
    done = {i for i in ids if store.get(i).status is Status.COMPLETED}  # type: ignore[union-attr]
    assert done == by_sweeper[1] and store.get(unsharded.id).status is Status.PENDING  # type: ignore[union-attr]

    two = tick.post("/?sweeper=2", headers=scheduler_headers()).get_json()
    assert two["claimed"] == len(by_sweeper[2])
    zero = tick.post("/", headers=scheduler_headers(), data=b'{"sweeper": 0}').get_json()
    assert zero["claimed"] == len(by_sweeper[0]) + 1 and zero["schedules"] is not None
    jobs = wait_finished(store, [*ids, unsharded.id], timeout=30)
    assert {j.status for j in jobs.values()} == {Status.COMPLETED} and {
        j.attempts for j in jobs.values()
    } == {1}
    assert jobs[unsharded.id].raw["shard"] == shard_of(unsharded.id)

    # A sweeper out of range sweeps every lane (with a warning), so a misconfigured job loses
    # nothing.
    late = client.enqueue("sleep", {"seconds": 0})
    stray = tick.post("/", headers=scheduler_headers(), data=b'{"sweeper": 7}').get_json()
    assert stray["sweeper"] is None and stray["shards"] == "all" and stray["claimed"] == 1
    assert store.get(late.id).status is Status.COMPLETED  # type: ignore[union-attr]


def test_deploy_schedules_one_scheduler_job_per_sweeper() -> None:
    from jobs_lib.deploy.commands import DeployPlan, commands

    plan = DeployPlan(
        project="p",
        region="europe-west1",
        trigger_location="eur3",
        service_account="sa@p.iam.gserviceaccount.com",
        tick_sweepers=3,
    )
    jobs = [
        c for c in commands(plan, HandlerRegistry()) if c.startswith("gcloud scheduler jobs create")
    ]
    assert [c.split()[5] for c in jobs] == ["jobs-tick-0", "jobs-tick-1", "jobs-tick-2"]
    assert all(f"--message-body='{{\"sweeper\": {k}}}'" in c for k, c in enumerate(jobs))
    assert any(
        "JOBS_TICK_SWEEPERS=3" in c for c in commands(plan, HandlerRegistry()) if "jobs-tick " in c
    )
    single = [
        c
        for c in commands(
            DeployPlan(project="p", region="r", trigger_location="l", service_account="s"),
            HandlerRegistry(),
        )
        if c.startswith("gcloud scheduler")
    ]
    assert len(single) == 1 and " jobs-tick " in single[0]
