"""The chaos suite: try hard to lose, double or strand jobs.

Every scenario asserts the same invariant: every enqueued job ends in exactly
one final state, its handler's side effects happen at least once and its
completion is recorded once, and nothing is left in_progress. Figures go to
bench/results/chaos-*.json and the test output (pytest -s or -rP shows them).
"""

from __future__ import annotations

import random
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from jobs_lib.config import Settings
from jobs_lib.devstack.dev import DevStack
from jobs_lib.devstack.emulator import Emulator
from jobs_lib.store import JobStore

from ..conftest import ROOT
from .conftest import (
    Fleet,
    all_jobs,
    completion_times,
    effects,
    enqueue_effects,
    invariants,
    report,
    wait_all_final,
)
from .proxy import Proxy


def test_thousands_of_jobs_while_workers_are_killed_at_random(
    chaos_store: JobStore, fleet: Fleet, effects_dir: Path
) -> None:
    ids = enqueue_effects(
        chaos_store, 2_500, seconds=0.1
    )  # jobs in flight long enough for kills to land mid-job
    fleet.args = ["--concurrency", "32", "--lease", "3", "--grace", "1"]
    for _ in range(4):
        fleet.start()
    rng = random.Random(2026)
    stop = threading.Event()
    kills: list[tuple[float, Any]] = []

    def chaos() -> None:
        while not stop.wait(rng.uniform(1.5, 2.5)):
            victim = fleet.kill_one(rng, min_age=2.5)  # mid-work, not while it is still starting
            if victim is not None and victim.killed_at is not None:
                kills.append((victim.killed_at, victim))
                fleet.start()

    chaos_thread = threading.Thread(target=chaos, daemon=True)
    chaos_thread.start()
    try:
        seconds = wait_all_final(chaos_store, len(ids), timeout=300)
    finally:
        stop.set()
        chaos_thread.join()
    fleet.stop()
    figures = invariants(chaos_store, [fleet.events(m) for m in fleet.members], ids, effects_dir)
    assert figures["completed"] == len(ids)
    assert len(kills) >= 5, "the chaos loop should have killed several workers"
    # Recovery: a killed worker's unfinished jobs are completed by others once their leases lapse.
    done_at = completion_times(chaos_store, ids)
    recoveries = []
    for killed_at, victim in kills:
        events = fleet.events(victim)
        finished = {
            e["jobId"]
            for e in events
            if e.get("event") in ("job_completed", "job_failed", "job_retrying")
        }
        orphans = {
            e["jobId"] for e in events if e.get("event") in ("job_claimed", "job_recovered")
        } - finished
        if orphans:
            recoveries.append(
                max(done_at[j].timestamp() for j in orphans if j in done_at) - killed_at
            )
    figures |= {
        "seconds": round(seconds, 1),
        "workers_killed": len(kills),
        "worker_processes_started": len(fleet.members),
        "lease_seconds": 3,
        "max_seconds_to_recover_after_a_kill": round(max(recoveries, default=0.0), 1),
        "kills_that_orphaned_jobs": len(recoveries),
    }
    report("kills", figures)
    assert figures["kills_that_orphaned_jobs"] >= 1, (
        "no kill caught a worker mid-job: the scenario proved nothing"
    )
    assert (
        figures["max_seconds_to_recover_after_a_kill"] < 3 + 30
    )  # the lease, plus a poll of the expired lane, with room


def test_connection_cut_and_restored_mid_run(
    chaos_store: JobStore, fresh_emulator: Emulator, tmp_path: Path, effects_dir: Path
) -> None:
    proxy = Proxy(fresh_emulator.host, fresh_emulator.port)
    crew = Fleet(
        proxy.address,
        fresh_emulator.project,
        tmp_path,
        args=["--concurrency", "16", "--lease", "4"],
        env={"JOBS_TEST_EFFECTS_DIR": str(effects_dir)},
    )
    ids = enqueue_effects(chaos_store, 2000, seconds=0.02)
    begun = time.monotonic()
    try:
        crew.start()
        crew.start()
        time.sleep(3)
        for _ in range(2):
            proxy.cut()
            time.sleep(6)  # longer than the lease: leases held through the cut expire
            proxy.restore()
            time.sleep(4)
        wait_all_final(chaos_store, len(ids), timeout=240)
        seconds = time.monotonic() - begun  # the whole run, cuts included
    finally:
        crew.stop()
        proxy.close()
    figures = invariants(chaos_store, [crew.events(m) for m in crew.members], ids, effects_dir)
    assert figures["completed"] == len(ids)
    assert all(m.process.returncode == 0 for m in crew.members), "workers survive the cut"
    report(
        "connection-cut",
        figures | {"seconds": round(seconds, 1), "cuts": proxy.cuts, "cut_seconds": 6},
    )


def test_replayed_created_events_and_concurrent_ticks(effects_dir: Path) -> None:
    env = {"PYTHONPATH": f"{ROOT / 'tests'}:{ROOT}", "JOBS_TEST_EFFECTS_DIR": str(effects_dir)}
    with DevStack(
        project="demo-jobs-chaos",
        handlers="handlers_for_tests",
        tick_interval=None,
        duplicate_events=True,
        env=env,
    ) as stack:
        store = JobStore(Settings(project=stack.project))
        stop = threading.Event()

        def tick_pairs() -> None:
            while not stop.wait(0.5):
                pair = [threading.Thread(target=stack.tick_now) for _ in range(2)]
                for thread in pair:
                    thread.start()
                for thread in pair:
                    thread.join()

        ticker = threading.Thread(target=tick_pairs, daemon=True)
        ticker.start()
        try:
            ids = set()
            for _ in range(300):
                ref = store.collection.document()
                ref.set(
                    {
                        "type": "effect",
                        "status": "pending",
                        "metadata": {"seconds": 0.05},
                        "scheduledFor": store.now(),
                    }
                )
                ids.add(ref.id)
            seconds = wait_all_final(store, len(ids), timeout=180)
        finally:
            stop.set()
            ticker.join()
        assert stack.dispatcher is not None
        logs = [
            [
                __import__("json").loads(line)
                for line in h.log_path.read_text().splitlines()
                if line.startswith("{")
            ]
            for h in stack.hosts.values()
        ]
        figures = invariants(store, logs, ids, effects_dir)
        runs = effects(store, effects_dir)
        assert all(runs[j] == 1 for j in ids), "a replayed event or a second tick ran a job twice"
        report(
            "replays-and-ticks",
            figures
            | {
                "seconds": round(seconds, 1),
                "events_delivered": stack.dispatcher.delivered,
                "ticks": len(stack.ticks),
            },
        )
        assert stack.dispatcher.delivered >= 2 * len(ids)  # every created-event arrived twice


def test_a_job_that_kills_its_worker_fails_after_its_attempts(
    chaos_store: JobStore, fleet: Fleet, effects_dir: Path
) -> None:
    poison = chaos_store.collection.document()
    poison.set(
        {"type": "crash", "status": "pending", "metadata": {}, "scheduledFor": chaos_store.now()}
    )
    ids = enqueue_effects(chaos_store, 200)
    fleet.args = ["--concurrency", "8", "--lease", "2"]
    stop = threading.Event()

    def supervise() -> None:  # a process manager: restart workers that die
        while not stop.wait(0.5):
            while len(fleet.alive()) < 2:
                fleet.start()

    supervisor = threading.Thread(target=supervise, daemon=True)
    supervisor.start()
    try:
        seconds = wait_all_final(chaos_store, len(ids) + 1, timeout=120)
    finally:
        stop.set()
        supervisor.join()
    fleet.stop()
    crashed = all_jobs(chaos_store)[poison.id]
    assert crashed["status"] == "failed" and crashed["attempts"] == 2
    assert "never finished" in crashed["error"] and "attempt 2 of 2" in crashed["error"]
    runs = chaos_store.db.collection("runs").document(poison.id).get().to_dict() or {}
    assert runs["started"] == 2  # tried twice, then given up: not retried forever
    figures = invariants(chaos_store, [fleet.events(m) for m in fleet.members], ids, effects_dir)
    report(
        "crashing-job",
        figures
        | {
            "seconds": round(seconds, 1),
            "crash_job_attempts": crashed["attempts"],
            "worker_processes_started": len(fleet.members),
        },
    )


def test_a_worker_with_a_skewed_clock_neither_steals_leases_nor_runs_early(
    chaos_store: JobStore, fleet: Fleet, effects_dir: Path
) -> None:
    now = chaos_store.now()
    long_jobs = set()
    batch = chaos_store.db.batch()
    for _ in range(6):
        ref = chaos_store.collection.document()
        long_jobs.add(ref.id)
        batch.set(
            ref,
            {
                "type": "effect",
                "status": "pending",
                "metadata": {"seconds": 8},
                "scheduledFor": now,
            },
        )
    later = chaos_store.collection.document()
    batch.set(
        later,
        {
            "type": "effect",
            "status": "pending",
            "metadata": {},
            "scheduledFor": now + timedelta(seconds=20),
        },
    )
    batch.commit()
    fleet.args = ["--concurrency", "8", "--lease", "3"]
    honest = fleet.start()
    time.sleep(4)  # the honest worker holds all six long jobs, renewing 3 s leases
    skew_env = {"PYTHONPATH": f"{ROOT / 'tests' / 'chaos' / 'skew'}:{ROOT / 'tests'}:{ROOT}"}
    ahead = fleet.start(env={**skew_env, "JOBS_TEST_CLOCK_SKEW": "60"})
    behind = fleet.start(env={**skew_env, "JOBS_TEST_CLOCK_SKEW": "-60"})
    ids = long_jobs | {later.id}
    seconds = wait_all_final(chaos_store, len(ids), timeout=120)
    fleet.stop(timeout=15)
    # Each stopped on SIGTERM by itself, none killed after the 15 s wait: the skewed workers' calls
    # retry 504s (their deadlines are computed on the shifted clock) and must not hold a process
    # once its worker stopped (they did, for up to 30 s, from the discovery thread).
    assert [m.process.returncode for m in fleet.members] == [0, 0, 0]
    jobs = all_jobs(chaos_store)
    assert all(jobs[j]["attempts"] == 1 for j in long_jobs), "a skewed worker took a live lease"
    assert jobs[later.id]["startedAt"] >= jobs[later.id]["scheduledFor"], (
        "a skewed worker ran a delayed job early"
    )
    skewed_claims = [
        e
        for m in (ahead, behind)
        for e in fleet.events(m)
        if e.get("event") in ("job_claimed", "job_recovered")
    ]
    assert not [e for e in skewed_claims if e["jobId"] in long_jobs]
    offsets = [
        e.get("detail")
        for m in (ahead, behind)
        for e in fleet.events(m)
        if e.get("event") == "worker_started"
    ]
    figures = invariants(chaos_store, [fleet.events(m) for m in fleet.members], ids, effects_dir)
    report(
        "clock-skew",
        figures
        | {
            "seconds": round(seconds, 1),
            "skews": [60, -60],
            "measured_offsets": offsets,
            "claims_by_skewed_workers": len(skewed_claims),
            "honest_worker_claims": sum(
                1 for e in fleet.events(honest) if e.get("event") == "job_claimed"
            ),
        },
    )
