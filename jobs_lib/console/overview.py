"""What the console's overview shows, computed cheaply: count aggregations and minute summaries.

Per job type: due pending, delayed, in progress, completed / failed /
cancelled over the last hour and day, paused or not, concurrency slots in use
against the limit, and the age of the oldest due job; for a type with fair shares, its largest
keys' due and running jobs. Each figure is one
count aggregation (billed one read per 1,000 index entries it counts, at
least one) or one small read; none scans the collection. The chart of
completions and failures per minute comes from the minute summaries the
runners write (`jobs_lib.store.stats`); minutes that can no longer change are
kept in memory, so a refresh reads only the last two minutes' documents.
Figures are cached for `CACHE_SECONDS`, so many open consoles cost what one does.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from jobs_lib.model.job import Status
from jobs_lib.registry import HandlerRegistry
from jobs_lib.store import JobStore

#: An overview is computed at most this often per scope (many viewers share it).
CACHE_SECONDS = 2.0
#: The chart covers this many hours, a point a minute.
CHART_HOURS = 3
#: Minute summaries older than this are final (writers flush within 15 s of a minute's end).
SETTLED = timedelta(minutes=2)
FINISHED = (Status.COMPLETED.value, Status.FAILED.value, Status.CANCELLED.value)


def breaker_view(entry: dict[str, Any] | None, now: datetime) -> dict[str, Any] | None:
    """An open circuit breaker as the console, the API and `jobs stats` show it (None when
    closed)."""
    if entry is None:
        return None
    until = entry.get("openUntil")
    state = "open" if isinstance(until, datetime) and now < until else "half-open"
    return {
        "state": state,
        "openUntil": until.isoformat() if isinstance(until, datetime) else None,
        "failures": entry.get("failures"),
        "lastError": entry.get("lastError"),
    }


#: The fair-share figures list this many keys of a type (those with the most due jobs) ...
FAIR_TOP = 10
#: ... counted among at most this many keys (two count aggregations each).
FAIR_COUNTED = 50


def fair_view(
    store: JobStore, job_type: str, field: str | None, now: datetime
) -> dict[str, Any] | None:
    """A fair type's keys (its jobs shared by `field`) as the console, the API and `jobs stats` show
    them: the keys with the most due jobs (due, running, weight), and how many keys have pending
    jobs (None for a type without ``fair_key``)."""
    if field is None:
        return None
    keys = [entry.key for entry in store.fair.keys(job_type, FAIR_COUNTED)]
    weights = store.fair.weights().get(job_type, {})
    rows: list[dict[str, Any]] = []
    for key in keys:
        due, running = store.key_counts(job_type, field, key, now)
        rows.append({"key": key, "due": due, "running": running, "weight": weights.get(key, 1.0)})
    rows.sort(key=lambda row: (-row["due"], -row["running"], row["key"]))
    return {
        "field": field,
        "keys": rows[:FAIR_TOP],
        "keysWithJobs": len(keys) if len(keys) < FAIR_COUNTED else f"{FAIR_COUNTED}+",
    }


class Overview:
    """Per-type queue figures and the per-minute chart, for one API instance."""

    def __init__(self, store: JobStore, registry: HandlerRegistry, *, threads: int = 8) -> None:
        self.store = store
        self.registry = registry
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="jobs-overview")
        self._lock = threading.Lock()
        self._cache: dict[str | None, tuple[float, dict[str, Any]]] = {}
        self._minutes: dict[datetime, dict[str, dict[str, int]]] = {}
        self._settled_before: datetime | None = None

    def figures(self, org_id: str | None = None) -> dict[str, Any]:
        """The overview (for one organisation with `org_id`, else for everyone), at most
        `CACHE_SECONDS` old."""
        with self._lock:
            cached = self._cache.get(org_id)
            if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
                return cached[1]
        reads_before = self.store.stats.snapshot()["reads"]
        now = self.store.now()
        paused, breakers = self.store.limits.control_state()
        types = self.registry.types()
        rows = list(
            self._pool.map(lambda t: self._type_figures(t, now, org_id, t in paused), types)
        )
        for row in rows:
            row["breaker"] = breaker_view(breakers.get(row["type"]), now)
        chart = (
            self._chart(now) if org_id is None else None
        )  # minute summaries are not kept per organisation
        result = {
            "generatedAt": now.isoformat(),
            "scope": {"orgId": org_id} if org_id else {"all": True},
            "types": rows,
            "chart": chart,
            "reads": self.store.stats.snapshot()["reads"] - reads_before,
        }
        with self._lock:
            self._cache[org_id] = (time.monotonic(), result)
        return result

    def _type_figures(
        self, job_type: str, now: datetime, org_id: str | None, paused: bool
    ) -> dict[str, Any]:
        count = self.store.count_jobs
        hour, day = now - timedelta(hours=1), now - timedelta(days=1)
        oldest = self.store.oldest_due(job_type, now, org_id)
        due = (
            count(
                status=Status.PENDING.value, job_type=job_type, org_id=org_id, scheduled_until=now
            )
            if oldest is not None
            else 0
        )
        figures: dict[str, Any] = {
            "type": job_type,
            "paused": paused,
            "due": due,
            "delayed": count(
                status=Status.PENDING.value, job_type=job_type, org_id=org_id, scheduled_after=now
            ),
            "inProgress": count(status=Status.IN_PROGRESS.value, job_type=job_type, org_id=org_id),
            "oldestDueSeconds": round(max((now - oldest.scheduled_for).total_seconds(), 0.0), 1)
            if oldest is not None and oldest.scheduled_for
            else None,
            "lastHour": {
                s: count(status=s, job_type=job_type, org_id=org_id, completed_since=hour)
                for s in FINISHED
            },
            "lastDay": {
                s: count(status=s, job_type=job_type, org_id=org_id, completed_since=day)
                for s in FINISHED
            },
            "concurrency": None,
            "fair": None,
        }
        spec = self.registry.get(job_type)
        if spec is not None and spec.fair_key is not None and org_id is None:
            figures["fair"] = fair_view(self.store, spec.type, spec.fair_key, now)
        if spec is not None and spec.concurrency is not None:
            in_use = None
            if spec.concurrency_key is None:
                slots = self.store.limits.read_slots(spec.type, "*", spec.concurrency)
                holders = self.store.limits.holders(
                    [str(f["jobId"]) for _i, f, _v in slots if f.get("jobId")]
                )
                in_use = sum(
                    not self.store.limits.slot_is_free(f, holders.get(str(f.get("jobId"))), now)
                    for _i, f, _v in slots
                )
            figures["concurrency"] = {
                "limit": spec.concurrency,
                "per": spec.concurrency_key,
                "inUse": in_use,
            }
        return figures

    def _chart(self, now: datetime) -> dict[str, Any]:
        """Completions and failures per minute over the last `CHART_HOURS` hours."""
        start = (now - timedelta(hours=CHART_HOURS)).replace(second=0, microsecond=0)
        with self._lock:
            read_from = max(self._settled_before, start) if self._settled_before else start
        fresh: dict[datetime, dict[str, dict[str, int]]] = {}
        for minute, counts in self.store.minute_stats.since(read_from):
            merged = fresh.setdefault(minute, {})
            for job_type, by_outcome in counts.items():
                target = merged.setdefault(job_type, {})
                for outcome, n in by_outcome.items():
                    target[outcome] = target.get(outcome, 0) + n
        with self._lock:
            for minute in [m for m in self._minutes if m >= read_from or m < start]:
                del self._minutes[minute]
            self._minutes.update(fresh)
            self._settled_before = (now - SETTLED).replace(second=0, microsecond=0)
            minutes = dict(self._minutes)
        labels, completed, failed = [], [], []
        minute = start
        while minute <= now:
            counts = minutes.get(minute, {})
            labels.append(minute.isoformat())
            completed.append(sum(c.get("completed", 0) for c in counts.values()))
            failed.append(sum(c.get("failed", 0) for c in counts.values()))
            minute += timedelta(minutes=1)
        return {"minutes": labels, "completed": completed, "failed": failed}


__all__ = ["CACHE_SECONDS", "CHART_HOURS", "Overview", "fair_view"]
