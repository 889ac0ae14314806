"""Jobs apps write (the original app) are first-class: they run on every path and every operator
sees them.

The documents are written as a browser's Firebase SDK writes them: REST requests under the project's
own rules with a user's token, in the shapes apps use (the minimal one, the original app's with
server timestamps, ISO-string times, no status at all), with no ``shard``, ``priority`` or
``attempts``. A `jobs worker` process (no created-event) runs them; the operators find each one in
`GET /v1/jobs?scope=all` and in the console's job list in a headless Chromium, and the worker's
``job_queue_seconds`` histogram counts their waits."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from werkzeug.test import Client

from jobs_lib import JobsClient, Status
from jobs_lib.api import JobsApi
from jobs_lib.devstack.emulator import free_port
from jobs_lib.store import JobStore, valid_shard

from .conftest import WorkerProcess, wait_finished, wait_for
from .test_api import ALL, token
from .test_console import Console, browser, console, dialogs, page, sign_in  # noqa: F401 - fixtures
from .test_rules import SERVER_TIME, Rest, id_token, load_rules
from .test_telemetry import scrape, value

ROOT_RULES = "firestore.rules"


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def shapes() -> dict[str, dict[str, Any]]:
    """The documents apps write, as alice of acme (the rules want the owner fields)."""
    owner = {"createdBy": "alice", "orgId": "acme"}
    return {
        "minimal": {
            "type": "process_notifications",
            "status": "pending",
            "metadata": {"targetUsers": ["u1"]},
            **owner,
        },
        "seeds-000": {
            "type": "process_notifications",
            "status": "pending",
            "createdAt": SERVER_TIME,
            "scheduledFor": SERVER_TIME,
            "metadata": {"targetUsers": ["u2"], "notificationType": "course_reminder"},
            **owner,
        },
        # Times from the browser's clock as the request goes out (`Rest` calls them then).
        "iso-strings": {
            "type": "process_notifications",
            "status": "pending",
            "createdAt": lambda: iso(datetime.now(UTC)),
            "scheduledFor": lambda: iso(datetime.now(UTC) + timedelta(seconds=1)),
            "metadata": {"targetUsers": ["u3"]},
            **owner,
        },
        "no-status": {
            "type": "process_notifications",
            "metadata": {"targetUsers": ["u4"]},
            **owner,
        },
    }


@pytest.fixture
def written(emulator: Any, store: JobStore) -> dict[str, str]:
    """Each shape written through the project's rules by a signed-in user; shape -> job id."""
    from .conftest import ROOT

    load_rules(emulator, (ROOT / ROOT_RULES).read_text())
    alice = Rest(emulator.url, id_token("alice", orgId="acme"))
    ids = {}
    for name, doc in shapes().items():
        job_id = store.new_id()
        assert alice.create(f"backgroundJobs/{job_id}", doc) == 200, name
        ids[name] = job_id
    return ids


def test_app_written_jobs_run_on_a_worker_and_are_listed_and_counted(
    written: dict[str, str],
    store: JobStore,
    client: JobsClient,
    spawn_worker: Callable[..., WorkerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    spawn_worker("--metrics-port", str(port), "--concurrency", "4")
    jobs = wait_finished(store, list(written.values()), timeout=60)
    for name, job_id in written.items():
        job = jobs[job_id]
        assert job.status is Status.COMPLETED and job.attempts == 1, (name, job)
        # What the runner added with its claim: the shard lane, the server's create time where the
        # app wrote none, a timestamp form of the due time, a status.
        assert valid_shard(job.raw.get("shard")) and isinstance(
            job.raw["scheduledFor"], datetime
        ), (name, job.raw)
        assert job.created_at is not None and job.create_time is not None
    assert jobs[written["minimal"]].raw["createdAt"] == jobs[written["minimal"]].create_time
    assert isinstance(
        jobs[written["iso-strings"]].raw["createdAt"], str
    )  # the app's own value, as written
    samples = wait_for(
        lambda: (
            (s := scrape(port))
            and value(s, "jobs_completed_total", type="process_notifications") == 4
            and s
        ),
        15,
        message="the scrape",
    )
    assert value(samples, "job_queue_seconds_count", type="process_notifications") == 4
    monkeypatch.setenv("FIREBASE_AUTH_EMULATOR_HOST", "127.0.0.1:9099")
    http = Client(JobsApi(client))
    listed = http.get(
        "/v1/jobs?scope=all&pageSize=100",
        headers={"Authorization": f"Bearer {token('olga', operator=True, permissions=ALL)}"},
    ).get_json()["jobs"]
    assert {j["id"] for j in listed} == set(written.values())
    mine = http.get(
        "/v1/jobs?status=completed",
        headers={"Authorization": f"Bearer {token('alice', permissions=ALL)}"},
    ).get_json()["jobs"]
    assert {j["id"] for j in mine} == set(written.values())
    # Newest first by the server's time: the order they were written in, reversed.
    assert [j["id"] for j in listed] == [written[n] for n in reversed(list(written))]


def test_app_written_jobs_are_in_the_consoles_list(
    written: dict[str, str],
    store: JobStore,
    page: Any,  # noqa: F811 - a fixture
    console: Console,  # noqa: F811 - a fixture
    worker_factory: Any,
) -> None:
    worker_factory(concurrency=4)
    wait_finished(store, list(written.values()), timeout=60)
    sign_in(page, console, "dev-operator", "#/jobs?status=completed")
    for job_id in written.values():
        page.wait_for_selector(f"tr[data-job='{job_id}']")
    shown = page.eval_on_selector_all("tr[data-job]", "rows => rows.map(r => r.dataset.job)")
    assert set(shown) == set(written.values())
