"""Firestore's write-rate limits against the runner's own writes: `python -m bench.capacity`.

The fields each write path sets are not retyped here: each path (the created-event, the tick,
the worker) is run against the emulator with a handler that holds the job while its document is
read, so every write is seen as a before/after pair of the real document. Against those pairs
the model lays the indexes the database keeps: the composite indexes of firestore.indexes.json
and a single-field index on every field its fieldOverrides do not exempt (Firestore's default).

Firestore's documented limits (https://cloud.google.com/firestore/docs/best-practices):
an index range that receives sequential values (a timestamp near "now") sustains about
``RANGE_LIMIT`` = 500 writes/s; a field whose values are spread evenly (the runner's ``shard``)
spreads such writes over one range per value. So for each index, each write that puts the job's
entry at a sequential position counts against the range fixed by the fields before that value;
a range written `w` times per job caps the collection at ``RANGE_LIMIT * spread / w`` jobs/s.
Other fields of a prefix (status, type, orgId) are taken at their worst: one value for all jobs.

The command fails (exit 1) when an index or field holds the runner below ``TARGET`` jobs/s and
`NOTES` does not say why: an application query, with the ceiling it imposes.

Also printed: billed operations per job on each path (measured over a batch of no-op jobs) and
what a million jobs cost at Firestore's published prices (Standard edition, USD).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from google.cloud import firestore

from jobs_lib import App, JobContext, Settings
from jobs_lib.devstack import emulator
from jobs_lib.functions import Functions, run_created
from jobs_lib.model.job import Job
from jobs_lib.registry import HandlerRegistry
from jobs_lib.store import base as store_base

ROOT = Path(__file__).resolve().parent.parent
SHARDS: int = getattr(store_base, "SHARDS", 1)
PROJECT = "demo-bench-capacity"
RANGE_LIMIT = 500
TARGET = 10_000
#: Values within this much of the write's time count as sequential (delayed jobs included).
SEQUENTIAL_WINDOW = timedelta(days=1)
#: Fields whose values spread evenly over this many values (the rest: one value, the worst case).
SPREAD = {"shard": SHARDS}
#: USD per 100,000 operations, Firestore Standard edition (cloud.google.com/firestore/pricing,
#: 2025-26).
PRICES = {
    "multi-region (nam5, eur3)": {"reads": 0.06, "writes": 0.18, "deletes": 0.02},
    "regional (us-east1)": {"reads": 0.03, "writes": 0.09, "deletes": 0.01},
}

#: Indexes and fields that are not the runner's: what queries them and the ceiling they impose.
NOTES: dict[str, str] = {
    "status,type,completedAt": "application query (the original app: recently completed of a "
    "type); caps completions of one type",
    "orgId,status,type,completedAt": "application query: recently completed of a type in one "
    "organisation; caps one organisation's completions",
    "orgId,status,type,scheduledFor": "application query: pending of a type in one organisation "
    "by due time; caps one organisation",
    "status,scheduledFor": "application query (the original app: pending by scheduledFor)",
    "status,type,scheduledFor": "application query (the original app: pending of a type by "
    "scheduledFor)",
    "createdBy,createdAt": "web client query (clients/web listJobs: a user's own jobs, newest "
    "first, before the runner has given them a shard); caps one user's "
    "jobs",
    "createdBy,status,createdAt": "web client query (clients/web listJobs by status); caps one "
    "user's jobs",
    "createdBy,type,createdAt": "web client query (clients/web listJobs by type); caps one "
    "user's jobs",
    "createdBy,status,type,createdAt": "web client query (clients/web listJobs by status and "
    "type); caps one user's jobs",
}


@dataclass
class Step:
    """One write of a path: the document before and after it."""

    name: str
    before: dict[str, Any] | None
    after: dict[str, Any]
    at: datetime


@dataclass
class Index:
    """An index the database keeps on the job collection."""

    fields: tuple[str, ...]
    kind: str  # "composite" or "single-field"

    @property
    def key(self) -> str:
        return ",".join(self.fields)


@dataclass
class Range:
    """One index range a path writes sequential values into."""

    index: Index
    label: str
    spread: int
    writes_per_job: int = 0
    steps: list[str] = field(default_factory=list)

    @property
    def ceiling(self) -> float:
        return RANGE_LIMIT * self.spread / self.writes_per_job


# -- the indexes
# -------------------------------------------------------------------------------------


def indexes_of(config: dict[str, Any], collection: str, seen_fields: set[str]) -> list[Index]:
    """The composite indexes of the file, and a single-field index on every field not exempted."""
    out = [
        Index(tuple(f["fieldPath"] for f in entry["fields"]), "composite")
        for entry in config.get("indexes", [])
        if entry["collectionGroup"] == collection
    ]
    exempt = {
        o["fieldPath"]
        for o in config.get("fieldOverrides", [])
        if o["collectionGroup"] == collection and not o.get("indexes")
    }
    for path in sorted(seen_fields):
        if not any(path == e or path.startswith(e + ".") for e in exempt):
            out.append(Index((path,), "single-field"))
    return out


def leaves(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every field path of a document (maps flattened), as single-field indexes see them."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(leaves(value, path + "."))
        else:
            out[path] = value
    return out


def sequential(value: Any, at: datetime) -> bool:
    """A timestamp (or ISO string) near the write's own time: it lands at the end of its range."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return False
    return isinstance(value, datetime) and abs(value - at) < SEQUENTIAL_WINDOW


def ranges_of(path_steps: list[Step], indexes: list[Index]) -> list[Range]:
    found: dict[tuple[str, str], Range] = {}
    for step in path_steps:
        before = leaves(step.before or {})
        after = leaves(step.after)
        for index in indexes:
            key_after = tuple(after.get(f, _MISSING) for f in index.fields)
            key_before = tuple(before.get(f, _MISSING) for f in index.fields)
            if _MISSING in key_after or key_after == key_before:
                continue  # no new entry in this index
            position = next(
                (i for i, value in enumerate(key_after) if sequential(value, step.at)), None
            )
            if position is None:
                continue  # the entry lands by a non-sequential value (or by the random document id)
            prefix = index.fields[:position]
            spread = 1
            for name in prefix:
                spread *= SPREAD.get(name, 1)
            label = (
                ", ".join(
                    f"{n}={key_after[i]!r}" if n not in SPREAD else f"{n}=each of {SPREAD[n]}"
                    for i, n in enumerate(prefix)
                )
                or "the whole collection"
            )
            entry = found.setdefault(
                (index.key, label), Range(index, f"{label} by {index.fields[position]}", spread)
            )
            entry.writes_per_job += 1
            entry.steps.append(step.name)
    return list(found.values())


_MISSING = object()


# -- the paths, run for real
# ------------------------------------------------------------------------


class Probe:
    """A handler that holds each job until released, so that the claimed document can be read."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, ctx: JobContext[Any]) -> dict[str, Any]:
        self.entered.set()
        self.release.wait(30)
        return {"ok": True}


def read(db: Any, collection: str, job_id: str) -> dict[str, Any]:
    return db.collection(collection).document(job_id).get().to_dict() or {}


def wait_status(
    db: Any, collection: str, job_id: str, status: str, timeout: float = 60.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = read(db, collection, job_id)
        if doc.get("status") == status:
            return doc
        time.sleep(0.05)
    raise TimeoutError(f"{job_id} did not reach {status}")


def observe(app: App, probe: Probe, job_id: str, created: dict[str, Any], run: Any) -> list[Step]:
    """Run `run` (which claims and runs the job) and record the claim and the completion as
    diffs."""
    db, collection = app.store.db, app.settings.collection
    probe.entered.clear()
    probe.release.clear()
    steps = [Step("create", None, created, datetime.now(UTC))]
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if not probe.entered.wait(60):
        raise TimeoutError("the probe job was not run")
    claimed = read(db, collection, job_id)
    steps.append(Step("claim", created, claimed, datetime.now(UTC)))
    probe.release.set()
    done = wait_status(db, collection, job_id, "completed")
    steps.append(Step("complete", claimed, done, datetime.now(UTC)))
    thread.join(60)
    return steps


def app_document() -> dict[str, Any]:
    """What an app writes (the original app): no shard, no scheduledFor, a server timestamp."""
    return {
        "type": "capacity_probe",
        "status": "pending",
        "metadata": {"note": "written by an app"},
        "createdAt": firestore.SERVER_TIMESTAMP,
        "createdBy": "u1",
    }


def run_paths(app: App, probe: Probe) -> dict[str, list[Step]]:
    db, collection = app.store.db, app.settings.collection
    paths: dict[str, list[Step]] = {}

    ref = db.collection(collection).document()
    ref.set(app_document())
    created = read(db, collection, ref.id)
    snap = ref.get()
    job = Job.from_document(ref.id, snap.to_dict(), snap.update_time)
    paths["created-event"] = observe(
        app, probe, ref.id, created, lambda: run_created(app.engine, job)
    )

    job_id = app.client.enqueue(
        "capacity_probe",
        {"note": "delayed"},
        scheduled_for=datetime.now(UTC) + timedelta(seconds=1),
    ).id
    created = read(db, collection, job_id)
    time.sleep(1.5)
    paths["tick"] = observe(app, probe, job_id, created, lambda: Functions(app).tick())

    job_id = app.client.enqueue("capacity_probe", {"note": "enqueued"}).id
    created = read(db, collection, job_id)
    paths["worker"] = observe(
        app,
        probe,
        job_id,
        created,
        lambda: app.worker(
            engine=app.new_engine(), concurrency=1, burst=True, schedules=False
        ).run(),
    )
    return paths


def operations(app: App, jobs: int) -> dict[str, dict[str, float]]:
    """Billed operations per job on each path, over `jobs` no-op jobs (the app's own create
    included)."""
    db, collection = app.store.db, app.settings.collection
    out: dict[str, dict[str, float]] = {}

    def counted(name: str, create: Any, run: Any) -> None:
        ids = create()
        before = app.store.stats.snapshot()
        cpu = time.process_time()
        run(ids)
        cpu = time.process_time() - cpu
        after = app.store.stats.snapshot()
        for job_id in ids:
            wait_status(db, collection, job_id, "completed")
        out[name] = {
            "reads": (after["reads"] - before["reads"]) / jobs,
            "writes": 1 + (after["writes"] - before["writes"]) / jobs,  # + the create
            "deletes": 1.0,  # the TTL policy (or jobs.cleanup) deletes each finished job once
            "cpu_ms": 1000
            * cpu
            / jobs,  # this process's CPU (the runner's own work; the emulator is another process)
        }

    def app_writes() -> list[str]:
        refs = [db.collection(collection).document() for _ in range(jobs)]
        batch = db.batch()
        for r in refs:
            batch.set(r, {**app_document(), "type": "capacity_noop"})
        batch.commit()
        return [r.id for r in refs]

    def run_events(ids: list[str]) -> None:
        engine = app.new_engine()
        for snap in db.get_all([db.collection(collection).document(i) for i in ids]):
            run_created(engine, Job.from_document(snap.id, snap.to_dict(), snap.update_time))

    def enqueued() -> list[str]:
        return [app.client.enqueue("capacity_noop", {}).id for _ in range(jobs)]

    counted("created-event", app_writes, run_events)
    counted("tick", enqueued, lambda ids: Functions(app).tick())
    counted(
        "worker",
        enqueued,
        lambda ids: app.worker(
            engine=app.new_engine(), concurrency=4, burst=True, schedules=False
        ).run(),
    )
    return out


# -- the report
# ---------------------------------------------------------------------------------------


def report(
    paths: dict[str, list[Step]], indexes: list[Index], ops: dict[str, dict[str, float]]
) -> int:
    problems = 0
    summary = []
    for name, steps in paths.items():
        ranges = sorted(ranges_of(steps, indexes), key=lambda r: r.ceiling)
        print(f"\n## {name} path: writes {', '.join(s.name for s in steps)}")
        print(
            f"{'index':<44} {'kind':<13} {'range written with sequential values':<58} "
            f"{'writes/job':>10} {'ceiling jobs/s':>15}  note"
        )
        runner_ceiling = float("inf")
        for r in ranges:
            note = NOTES.get(r.index.key, "")
            if not note:
                runner_ceiling = min(runner_ceiling, r.ceiling)
                if r.ceiling < TARGET:
                    problems += 1
                    note = f"HOT: below {TARGET:,} jobs/s and no note says why"
            print(
                f"({r.index.key})"[:44].ljust(44)
                + f" {r.index.kind:<13} {r.label[:58]:<58} {r.writes_per_job:>10} "
                f"{r.ceiling:>15,.0f}  {note}"
            )
        app_ceiling = min(
            (r.ceiling for r in ranges if NOTES.get(r.index.key)), default=float("inf")
        )
        summary.append((name, runner_ceiling, app_ceiling))
    print(f"\n## ceilings (range limit {RANGE_LIMIT} writes/s, {SHARDS} shards)")
    print(f"{'path':<14} {'runner indexes jobs/s':>22} {'with the application indexes':>30}")
    for name, runner, app in summary:
        fmt = lambda v: "no hot range" if v == float("inf") else f"{v:,.0f}"  # noqa: E731
        print(f"{name:<14} {fmt(runner):>22} {fmt(min(runner, app)):>30}")
    print("\n## operations per job and cost per million jobs (USD)")
    header = "".join(f" {region:>28}" for region in PRICES)
    print(f"{'path':<14} {'reads':>6} {'writes':>7} {'deletes':>8}{header}")
    for name, o in ops.items():
        costs = "".join(
            f" {sum(o[k] * p[k] for k in ('reads', 'writes', 'deletes')) * 10:>28.2f}"
            for p in PRICES.values()
        )
        print(f"{name:<14} {o['reads']:>6.2f} {o['writes']:>7.2f} {o['deletes']:>8.2f}{costs}")
    functions_model(ops)
    if problems:
        print(
            f"\n{problems} hot range(s) on the runner's own writes without a note: shard the "
            f"index, exempt the field, or add a note in bench/capacity.py (NOTES)",
            file=sys.stderr,
        )
    return 1 if problems else 0


#: Round trips of the event path to Firestore in production (claim, complete), each about this long.
RPC_SECONDS = 0.015
#: A Python function instance's cold start: the measured import (bench.coldstart, ~0.7 s) plus the
#: platform's container start and the first Firestore channel (about 1-2 s more, Cloud Run figures).
COLD_START_SECONDS = 2.5


def functions_model(ops: dict[str, dict[str, float]], rate: float = TARGET) -> None:
    """The Cloud Functions side at `rate` jobs/s: instances of the created-event function, and tick
    sweepers for what it cannot take (delayed jobs, retries, lost events, expired leases).

    Little's law: jobs in flight = rate x time per job. One instance holds JOBS_EVENT_CONCURRENCY
    events at once and has 1 vCPU; the CPU per job is the one measured above on each path.
    """
    defaults = Settings()
    cpu = ops["created-event"]["cpu_ms"] / 1000
    tick_cpu = ops["tick"]["cpu_ms"] / 1000
    print(
        f"\n## Cloud Functions at {rate:,.0f} jobs/s (1 vCPU per instance; runner CPU/job "
        f"measured: event {cpu * 1000:.1f} ms, tick {tick_cpu * 1000:.1f} ms; "
        f"{RPC_SECONDS * 1000:.0f} ms per Firestore round trip, 2 per job)"
    )
    print(
        f"{'handler s':>9} {'concurrency':>11} {'jobs/s/instance':>15} {'instances':>9} "
        f"{'cold starts to scale from 0':>28} {'tick sweepers for all of it':>28}"
    )
    for handler in (0.05, 0.2, 1.0):
        per_job = handler + 2 * RPC_SECONDS
        for concurrency in (defaults.event_concurrency, 80):
            per_instance = min(concurrency / per_job, 1 / cpu)  # bound by concurrency or by the CPU
            instances = math.ceil(rate / per_instance)
            tick_per_instance = (
                min(defaults.tick_concurrency / per_job, 1 / tick_cpu) * defaults.tick_budget / 60
            )  # budget per minute
            print(
                f"{handler:>9} {concurrency:>11} {per_instance:>15,.0f} {instances:>9,} "
                f"{f'{instances} x {COLD_START_SECONDS} s':>28} "
                f"{math.ceil(rate / tick_per_instance):>28,}"
            )
    sweep = (
        min(defaults.tick_concurrency / (0.05 + 2 * RPC_SECONDS), 1 / tick_cpu)
        * defaults.tick_budget
        / 60
    )
    print(
        f"A sweeper (one tick instance, JOBS_TICK_CONCURRENCY={defaults.tick_concurrency}, "
        f"{defaults.tick_budget:g} s of each minute) takes about {sweep:,.0f} jobs/s of 0.05 s "
        f"jobs;"
        f" JOBS_TICK_SWEEPERS=N sweeps N shares of the {SHARDS} lanes at once (at most "
        f"{SHARDS}), so what the created-event leaves"
        f" (lost events, retries, expired leases, delayed jobs) waits at most one schedule "
        f"period (60 s) plus its share's backlog / {sweep:,.0f} jobs/s."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--indexes", default=str(ROOT / "firestore.indexes.json"))
    parser.add_argument(
        "--jobs", type=int, default=200, help="no-op jobs per path for the operation counts"
    )
    args = parser.parse_args()
    config = json.loads(Path(args.indexes).read_text())
    with emulator.running(project=PROJECT):
        registry = HandlerRegistry()
        probe = Probe()
        registry.handler("capacity_probe", max_attempts=1)(probe)
        registry.handler("capacity_noop", max_attempts=1)(lambda ctx: None)
        app = App(Settings(project=PROJECT, tick_budget=5, cleanup_cron=None), registry=registry)
        try:
            paths = run_paths(app, probe)
            seen = set().union(*(leaves(s.after).keys() for steps in paths.values() for s in steps))
            indexes = indexes_of(config, app.settings.collection, seen)
            ops = operations(app, args.jobs)
        finally:
            app.close()
    raise SystemExit(report(paths, indexes, ops))


if __name__ == "__main__":
    main()
