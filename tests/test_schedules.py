"""Schedules in Firestore and in code, fired once per slot, against the emulator."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from google.cloud.firestore_v1.base_query import FieldFilter

from jobs_lib import JobContext, JobsClient, Status
from jobs_lib.engine.schedules import ScheduleClient, Scheduler, slot_job_id, system_schedule_id
from jobs_lib.errors import InvalidSchedule, ScheduleNotFound
from jobs_lib.registry import HandlerRegistry
from jobs_lib.store import JobStore
from jobs_lib.store.base import shard_of
from jobs_lib.store.schedules import ScheduleStore

from .conftest import ROOT, TESTS, wait_finished


@pytest.fixture
def schedule_store(store: JobStore) -> ScheduleStore:
    return store.schedules


@pytest.fixture
def schedules(schedule_store: ScheduleStore, registry: HandlerRegistry) -> ScheduleClient:
    return ScheduleClient(store=schedule_store, registry=registry)


@pytest.fixture
def scheduler(
    schedule_store: ScheduleStore, store: JobStore, registry: HandlerRegistry
) -> Scheduler:
    return Scheduler(schedule_store, store, registry)


def jobs_of(store: JobStore, schedule_id: str) -> list[dict[str, Any]]:
    return [
        s.to_dict() | {"id": s.id}
        for s in store.collection.where(
            filter=FieldFilter("scheduleId", "==", schedule_id)
        ).stream()
    ]


def test_saving_refuses_bad_cron_timezone_and_type(schedules: ScheduleClient) -> None:
    with pytest.raises(InvalidSchedule, match="bad cron expression '61 \\* \\* \\* \\*'"):
        schedules.create("process_notifications", "61 * * * *")
    with pytest.raises(InvalidSchedule, match="unknown timezone 'Moon/Base'"):
        schedules.create("process_notifications", "0 * * * *", timezone="Moon/Base")
    with pytest.raises(InvalidSchedule, match="no handler is registered for job type 'nope'"):
        schedules.create("nope", "0 * * * *")
    with pytest.raises(ScheduleNotFound):
        schedules.get("missing")


def test_a_new_schedule_knows_its_next_run(schedules: ScheduleClient) -> None:
    saved = schedules.create(
        "process_notifications",
        "0 9 * * *",
        timezone="Europe/Paris",
        metadata={"targetUsers": ["a"]},
        created_by="u1",
        org_id="o1",
    )
    assert saved.enabled and saved.problems == ()
    assert (
        saved.next_run_at is not None
        and saved.next_run_at.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Paris")).hour == 9
    )
    assert (saved.raw["createdBy"], saved.raw["orgId"], saved.raw["metadata"]) == (
        "u1",
        "o1",
        {"targetUsers": ["a"]},
    )


def overdue(
    schedule_store: ScheduleStore, schedule_id: str, slots_ago: int, minutes: int = 1
) -> datetime:
    """Set nextRunAt as if the schedule had not been fired for `slots_ago` slots (of `minutes`)."""
    now = schedule_store.now()
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=minutes * slots_ago)
    schedule_store.ref(schedule_id).update({"nextRunAt": start})
    return start


def test_a_schedule_overdue_by_ten_slots_fires_once(
    schedules: ScheduleClient, schedule_store: ScheduleStore, scheduler: Scheduler, store: JobStore
) -> None:
    saved = schedules.create("process_notifications", "* * * * *", metadata={"targetUsers": ["x"]})
    overdue(schedule_store, saved.id, 10)
    first = scheduler.fire_due()
    assert [f["schedule"] for f in first.fired] == [saved.id]
    second = scheduler.fire_due()
    assert second.fired == []
    [job] = jobs_of(store, saved.id)
    now = schedule_store.now()
    after = schedules.get(saved.id)
    assert after.last_job_id == job["id"] and after.last_run_at == job["scheduledFor"]
    assert now - timedelta(minutes=1) <= after.last_run_at <= now  # type: ignore[operator]
    assert after.next_run_at is not None and now < after.next_run_at <= now + timedelta(minutes=1)
    assert (job["type"], job["status"], job["metadata"]) == (
        "process_notifications",
        "pending",
        {"targetUsers": ["x"]},
    )
    assert job["id"] == slot_job_id(saved.id, after.last_run_at)  # type: ignore[arg-type]
    # With its shard like any job the library writes: the tick's ordered lanes read only shard
    # lanes.
    assert job["shard"] == shard_of(job["id"])


def test_fired_jobs_run_like_any_other(
    schedules: ScheduleClient, schedule_store: ScheduleStore, worker_factory: Any, store: JobStore
) -> None:
    saved = schedules.create(
        "process_notifications", "* * * * *", metadata={"targetUsers": ["a", "b"]}
    )
    overdue(schedule_store, saved.id, 1)
    worker_factory()  # a worker fires due schedules itself, then runs the job
    job_id = __import__("tests.conftest", fromlist=["wait_for"]).wait_for(
        lambda: schedules.get(saved.id).last_job_id, message="the slot to fire"
    )
    assert wait_finished(store, [job_id])[job_id].result == 2


def test_disabling_stops_it_and_enabling_resumes_from_now(
    schedules: ScheduleClient, schedule_store: ScheduleStore, scheduler: Scheduler, store: JobStore
) -> None:
    saved = schedules.create("process_notifications", "* * * * *")
    schedules.disable(saved.id)
    overdue(schedule_store, saved.id, 5)
    assert scheduler.fire_due().fired == [] and jobs_of(store, saved.id) == []
    resumed = schedules.enable(saved.id)
    assert (
        resumed.next_run_at is not None and resumed.next_run_at > schedule_store.now()
    )  # no backfill
    assert scheduler.fire_due().fired == []


def test_editing_the_cron_recomputes_next_run(
    schedules: ScheduleClient, schedule_store: ScheduleStore
) -> None:
    saved = schedules.create("process_notifications", "0 0 1 1 *")  # once a year
    assert saved.next_run_at is not None and saved.next_run_at - schedule_store.now() > timedelta(
        hours=1
    )
    edited = schedules.update(saved.id, cron_expression="*/5 * * * *")
    assert edited.cron == "*/5 * * * *"
    assert (
        edited.next_run_at is not None
        and edited.next_run_at - schedule_store.now() <= timedelta(minutes=5)
    )
    with pytest.raises(InvalidSchedule):
        schedules.update(saved.id, cron_expression="not a cron")
    assert schedules.get(saved.id).cron == "*/5 * * * *"


def test_malformed_hand_written_schedules_are_marked_and_never_break_the_firing(
    schedule_store: ScheduleStore, scheduler: Scheduler, schedules: ScheduleClient, store: JobStore
) -> None:
    past = schedule_store.now() - timedelta(minutes=3)
    bad = {
        "badcron": {
            "type": "process_notifications",
            "cron": "every day",
            "enabled": True,
            "nextRunAt": past,
        },
        "badzone": {
            "type": "process_notifications",
            "cron": "* * * * *",
            "timezone": "Nowhere/Land",
            "enabled": True,
            "nextRunAt": past,
        },
        "badmeta": {
            "type": "process_notifications",
            "cron": "* * * * *",
            "metadata": "x",
            "enabled": True,
            "nextRunAt": past,
        },
        "notype": {"cron": "* * * * *", "enabled": True},  # no nextRunAt: only the scan sees it
        "badnext": {
            "type": "process_notifications",
            "cron": "* * * * *",
            "enabled": True,
            "nextRunAt": "soon",
        },
    }
    for schedule_id, data in bad.items():
        schedule_store.ref(schedule_id).set(data)
    good = schedules.create("process_notifications", "* * * * *")
    overdue(schedule_store, good.id, 2)
    summary = scheduler.fire_due()
    assert sorted(summary.invalid) == sorted(bad)
    assert [f["schedule"] for f in summary.fired] == [good.id]
    for schedule_id in bad:
        marked = schedules.get(schedule_id)
        assert marked.enabled is False and marked.error, schedule_id
    assert "bad cron expression 'every day'" in schedules.get("badcron").error  # type: ignore[operator]
    assert "unknown timezone 'Nowhere/Land'" in schedules.get("badzone").error  # type: ignore[operator]
    assert "metadata must be a map" in schedules.get("badmeta").error  # type: ignore[operator]
    assert "type must be a non-empty string" in schedules.get("notype").error  # type: ignore[operator]
    assert "nextRunAt 'soon' is not a timestamp" in schedules.get("badnext").error  # type: ignore[operator]


def test_a_hand_written_schedule_without_next_run_is_started(
    schedule_store: ScheduleStore, scheduler: Scheduler, schedules: ScheduleClient
) -> None:
    schedule_store.ref("byhand").set(
        {"type": "process_notifications", "cron": "*/10 * * * *", "enabled": True}
    )
    assert scheduler.fire_due().fired == []
    started = schedules.get("byhand")
    assert (
        started.next_run_at is not None
        and started.next_run_at > schedule_store.now()
        and started.error is None
    )


def test_schedules_declared_in_code_need_no_document(
    store: JobStore, schedule_store: ScheduleStore, schedules: ScheduleClient
) -> None:
    registry = HandlerRegistry()

    @registry.handler("storage:cleanup", schedule="0 * * * *")
    def storage_cleanup(ctx: JobContext[Any]) -> None:
        return None

    scheduler = Scheduler(schedule_store, store, registry)
    assert scheduler.fire_due().fired == []  # created now, first slot at the next full hour
    system = schedules.get(system_schedule_id("storage:cleanup"))
    assert (system.type, system.cron, system.raw["system"], system.enabled) == (
        "storage:cleanup",
        "0 * * * *",
        True,
        True,
    )
    overdue(schedule_store, system.id, 3, minutes=60)
    fired = scheduler.fire_due()
    assert [f["schedule"] for f in fired.fired] == [system.id]
    assert jobs_of(store, system.id)[0]["type"] == "storage:cleanup"


FIRER = """
import json, sys, time
from jobs_lib.app import App
app = App()  # settings from the environment: JOBS_CLEANUP_CRON=off declares no cleanup schedule
app.store.calibrate()
time.sleep(max(float(sys.argv[1]) - time.time(), 0))
print(json.dumps(app.scheduler.fire_due().as_dict()))
"""


def test_four_processes_firing_the_same_due_schedules_create_one_job_per_slot(
    emulator: Any, schedules: ScheduleClient, schedule_store: ScheduleStore, store: JobStore
) -> None:
    saved = [schedules.create("process_notifications", "* * * * *").id for _ in range(6)]
    for n, schedule_id in enumerate(saved):
        overdue(schedule_store, schedule_id, 3 + n)
    env = {
        "FIRESTORE_EMULATOR_HOST": emulator.address,
        "GOOGLE_CLOUD_PROJECT": emulator.project,
        "PYTHONPATH": str(ROOT),
        "PATH": "/usr/bin:/bin",
        "JOBS_CLEANUP_CRON": "off",
    }
    start_at = time.time() + 4
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", FIRER, str(start_at)],
            env=env,
            cwd=str(TESTS),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    summaries = [json.loads(out) for out, _err in outputs]
    fired = [f["schedule"] for s in summaries for f in s["fired"]]
    assert sorted(fired) == sorted(saved), (
        summaries
    )  # each due schedule fired once, by one of the four
    for schedule_id in saved:
        jobs = jobs_of(store, schedule_id)
        assert len(jobs) == 1, (schedule_id, jobs)  # one job for the slot, whoever fired it
        assert schedules.get(schedule_id).last_job_id == jobs[0]["id"]


def test_the_tick_fires_schedules_and_runs_their_jobs(
    schedules: ScheduleClient, schedule_store: ScheduleStore, store: JobStore
) -> None:
    from jobs_lib.functions import Functions

    saved = schedules.create("process_notifications", "* * * * *", metadata={"targetUsers": ["t"]})
    overdue(schedule_store, saved.id, 2)
    functions = Functions()  # a new function instance: its app from the environment
    try:
        summary = functions.tick()
    finally:
        functions.close()
    assert [f["schedule"] for f in summary["schedules"]["fired"]] == [saved.id]
    [job] = jobs_of(store, saved.id)
    assert store.get(job["id"]).status is Status.COMPLETED  # type: ignore[union-attr]


def test_cleanup_deletes_only_expired_finished_jobs(
    client: JobsClient, store: JobStore, worker_factory: Any
) -> None:
    now = store.now()
    old = [client.enqueue("process_notifications", {}).id for _ in range(5)]
    fresh = client.enqueue("process_notifications", {}).id
    for job_id in old:
        store.ref(job_id).update({"status": "completed", "expireAt": now - timedelta(days=1)})
    store.ref(fresh).update({"status": "completed", "expireAt": now + timedelta(days=29)})
    cleanup = client.enqueue("jobs.cleanup", {})
    worker_factory()
    done = wait_finished(store, [cleanup.id])[cleanup.id]
    assert done.result == 5
    assert all(store.get(j) is None for j in old)
    assert store.get(fresh) is not None
