"""The chaos suite's harness: a fresh emulator per module, fleets of worker processes,
invariants."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from google.cloud.firestore_v1.base_query import FieldFilter

from jobs_lib.config import Settings
from jobs_lib.devstack.emulator import Emulator
from jobs_lib.store import JobStore, shard_of

from ..conftest import ROOT, TESTS, start_emulator

REPORTS = ROOT / "bench" / "results"


@pytest.fixture(scope="module")
def fresh_emulator() -> Iterator[Emulator]:
    """An emulator of this module's own: the chaos scenarios move thousands of documents."""
    emu = start_emulator()
    yield emu
    emu.stop()


@pytest.fixture
def chaos_store(fresh_emulator: Emulator) -> JobStore:
    fresh_emulator.clear()
    previous = os.environ.get("FIRESTORE_EMULATOR_HOST")
    os.environ["FIRESTORE_EMULATOR_HOST"] = fresh_emulator.address
    store = JobStore(Settings(project=fresh_emulator.project))
    _ = store.db  # bind the client to this emulator now
    if previous is not None:
        os.environ["FIRESTORE_EMULATOR_HOST"] = previous
    return store


@dataclass
class Member:
    process: subprocess.Popen[bytes]
    log_path: Path
    started: float
    killed_at: float | None = None


@dataclass
class Fleet:
    """Worker processes on one emulator (or a proxy in front of it), with their JSON logs."""

    address: str
    project: str
    log_dir: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    members: list[Member] = field(default_factory=list)

    def start(self, *extra: str, env: dict[str, str] | None = None) -> Member:
        log_path = self.log_dir / f"worker-{len(self.members)}.log"
        full_env = {
            **os.environ,
            "FIRESTORE_EMULATOR_HOST": self.address,
            "GOOGLE_CLOUD_PROJECT": self.project,
            "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)]),
            "JOBS_HANDLERS": "handlers_for_tests",
            "JOBS_CLEANUP_CRON": "off",
            **self.env,
            **(env or {}),
        }
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "jobs_lib", "worker", *self.args, *extra],
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        member = Member(process, log_path, time.time())
        self.members.append(member)
        return member

    def alive(self) -> list[Member]:
        return [m for m in self.members if m.process.poll() is None]

    def kill_one(self, rng: random.Random, min_age: float = 0.0) -> Member | None:
        """SIGKILL a random live worker that has run at least `min_age` seconds, preferring one
        that is mid-job (jobs in flight), so that the kill strands jobs to recover."""
        alive = [m for m in self.alive() if time.time() - m.started >= min_age]
        if not alive:
            return None
        working = [m for m in alive if self.in_flight(m)]
        victim = rng.choice(working or alive)
        victim.killed_at = time.time()
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(10)
        return victim

    def in_flight(self, member: Member) -> set[str]:
        """Jobs the member has claimed and not yet finished, as its log shows now."""
        events = self.events(member)
        claimed = {e["jobId"] for e in events if e.get("event") in ("job_claimed", "job_recovered")}
        return claimed - {
            e["jobId"]
            for e in events
            if e.get("event") in ("job_completed", "job_failed", "job_retrying", "job_released")
        }

    def stop(self, timeout: float = 30.0) -> None:
        for member in self.alive():
            member.process.send_signal(signal.SIGTERM)
        for member in self.members:
            with contextlib.suppress(subprocess.TimeoutExpired):
                member.process.wait(timeout)
            if member.process.poll() is None:
                member.process.kill()
                member.process.wait(10)

    def events(self, member: Member) -> list[dict[str, Any]]:
        out = []
        for line in member.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
        return out


@pytest.fixture
def effects_dir(tmp_path: Path) -> Path:
    """Where the `effect` handler records each run (one file per process)."""
    folder = tmp_path / "effects"
    folder.mkdir()
    return folder


@pytest.fixture
def fleet(fresh_emulator: Emulator, tmp_path: Path, effects_dir: Path) -> Iterator[Fleet]:
    crew = Fleet(
        fresh_emulator.address,
        fresh_emulator.project,
        tmp_path,
        env={"JOBS_TEST_EFFECTS_DIR": str(effects_dir)},
    )
    yield crew
    crew.stop()


def wait_all_final(store: JobStore, total: int, timeout: float) -> float:
    """Wait until `total` jobs are completed, failed or cancelled; returns the seconds it took."""
    started = time.monotonic()
    open_jobs = store.collection.where(
        filter=FieldFilter("status", "in", ["pending", "in_progress"])
    ).count()
    while True:
        # One cheap count a poll: each query costs the emulator a scan of the collection.
        if int(open_jobs.get()[0][0].value) == 0:
            counts = store.count_by_status()
            if counts["completed"] + counts["failed"] + counts["cancelled"] >= total:
                return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(
                f"not every job ended within {timeout:g}s: {store.count_by_status()}"
            )
        time.sleep(2.0)


def all_jobs(store: JobStore) -> dict[str, dict[str, Any]]:
    return {s.id: s.to_dict() or {} for s in store.collection.stream()}


def effects(store: JobStore, folder: Path | None = None) -> dict[str, int]:
    """Handler runs per job: from the effect files in `folder`, or the effects collection."""
    if folder is not None:
        counts: collections.Counter[str] = collections.Counter()
        for path in folder.iterdir():
            counts.update(line for line in path.read_text().splitlines() if line)
        return dict(counts)
    return {
        s.id: int((s.to_dict() or {}).get("runs", 0))
        for s in store.db.collection("effects").stream()
    }


def invariants(
    store: JobStore,
    fleet_events: list[list[dict[str, Any]]],
    expected: set[str],
    effects_dir: Path | None = None,
) -> dict[str, Any]:
    """Check: every job in exactly one final state, nothing in progress, side effects at least once,
    each completion recorded once. Returns the figures for the report."""
    jobs = all_jobs(store)
    final = {"completed", "failed", "cancelled"}
    states = collections.Counter(jobs[j].get("status") for j in expected if j in jobs)
    lost = sorted(j for j in expected if j not in jobs or jobs[j].get("status") not in final)
    in_progress = [j for j, d in jobs.items() if d.get("status") == "in_progress"]
    completions = collections.Counter(
        e["jobId"] for events in fleet_events for e in events if e.get("event") == "job_completed"
    )
    duplicates = sorted(j for j, n in completions.items() if n > 1)
    runs = effects(store, effects_dir)
    no_effect = sorted(
        j for j in expected if jobs.get(j, {}).get("status") == "completed" and runs.get(j, 0) < 1
    )
    # The recorded result is the attempt that wrote it: the last claim, never an earlier run.
    stale = sorted(
        j
        for j in expected
        if jobs.get(j, {}).get("status") == "completed"
        and jobs[j].get("result") != jobs[j].get("attempts")
    )
    assert not lost, f"{len(lost)} jobs not final: {lost[:5]}"
    assert not in_progress, in_progress[:5]
    assert not duplicates, f"completion recorded more than once: {duplicates[:5]}"
    assert not no_effect, no_effect[:5]
    assert not stale, [(j, jobs[j].get("result"), jobs[j].get("attempts")) for j in stale[:5]]
    return {
        "enqueued": len(expected),
        "completed": states.get("completed", 0),
        "failed": states.get("failed", 0),
        "cancelled": states.get("cancelled", 0),
        "duplicates_recorded": len(duplicates),
        "lost": len(lost),
        "left_in_progress": len(in_progress),
        "handler_runs": sum(runs.get(j, 0) for j in expected),
        "jobs_run_more_than_once": sum(1 for j in expected if runs.get(j, 0) > 1),
    }


def report(name: str, figures: dict[str, Any]) -> None:
    """Keep the figures (bench/results/chaos-<name>.json) and show them in the test output."""
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / f"chaos-{name}.json").write_text(json.dumps(figures, indent=2, default=str))
    print(f"\nchaos {name}: {json.dumps(figures, default=str)}")


def enqueue_effects(store: JobStore, count: int, seconds: float = 0.0) -> set[str]:
    """Create `count` effect jobs in batches; returns their ids."""
    ids: set[str] = set()
    batch = store.db.batch()
    now = store.now()
    for n in range(count):
        ref = store.collection.document()
        ids.add(ref.id)
        batch.set(
            ref,
            {
                "type": "effect",
                "status": "pending",
                "metadata": {"seconds": seconds},
                "priority": 0,
                "attempts": 0,
                "createdAt": now,
                "scheduledFor": now,
                "shard": shard_of(ref.id),
            },
        )
        if n % 400 == 399:
            batch.commit()
            batch = store.db.batch()
    batch.commit()
    return ids


def completion_times(store: JobStore, ids: set[str]) -> dict[str, datetime]:
    jobs = all_jobs(store)
    return {j: jobs[j]["completedAt"] for j in ids if j in jobs and jobs[j].get("completedAt")}
