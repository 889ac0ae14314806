"""Recurring jobs: schedules in ``scheduledJobs`` and schedules declared in code, fired once per slot.

Cloud Scheduler is at-least-once and can fire twice, several ticks or workers
can run at once, and slots get missed while nothing runs. None of that may
double or lose a run, so firing a slot is one atomic commit that creates the
slot's job under an id fixed by the schedule and the slot, and advances the
schedule's ``nextRunAt`` conditioned on the version read. Whoever commits
first fires the slot; everyone else's commit is refused. Only the latest due
slot fires (`jobs_lib.cron.fire`), so a schedule overdue by ten slots fires once.

Schedules declared in code (``@handler(..., schedule="0 * * * *")``) are kept
as documents too (``system-<name>``, ``system: true``), created and updated
from the code by the first firer in each process, so that one mechanism fires
both and their last and next runs can be read like any other schedule.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from google.api_core.exceptions import AlreadyExists
from google.cloud import firestore

from jobs_lib import cron
from jobs_lib.clock import TimeParseError, parse_time
from jobs_lib.config import Settings
from jobs_lib.errors import InvalidSchedule, ScheduleNotFound
from jobs_lib.logs import event
from jobs_lib.registry import CodeSchedule, HandlerRegistry, default_registry
from jobs_lib.store import JobStore
from jobs_lib.store.schedules import ScheduleStore

log = logging.getLogger("jobs_lib.schedules")

#: Every so often a firer also reads all schedules, page by page, to find hand-written
#: ones the due query cannot see (no nextRunAt, wrong types) and mark or repair them.
SCAN_INTERVAL = 600.0
SCAN_PAGE = 100


@dataclass(frozen=True)
class Schedule:
    """One ``scheduledJobs`` document, read defensively (`problems` lists what is unusable)."""

    id: str
    type: str | None
    cron: str | None
    timezone: str
    metadata: Any
    enabled: bool
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_job_id: str | None
    created_by: str | None
    org_id: str | None
    priority: int
    error: str | None
    system: bool
    version: datetime | None = None
    problems: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_document(cls, schedule_id: str, data: dict[str, Any], version: datetime | None = None) -> Schedule:
        """Read a schedule document; never raises."""
        problems: list[str] = []
        job_type = data.get("type")
        if not isinstance(job_type, str) or not job_type:
            problems.append(f"type must be a non-empty string, got {job_type!r}")
        expression = data.get("cron")
        timezone = data.get("timezone") or "UTC"
        if not isinstance(timezone, str):
            problems.append(f"timezone must be a string, got {timezone!r}")
            timezone = "UTC"
        try:
            cron.check(expression, timezone)  # type: ignore[arg-type]
        except cron.CronError as exc:
            problems.append(str(exc))
        metadata = data.get("metadata") or {}
        if not isinstance(metadata, dict):
            problems.append(f"metadata must be a map, got {type(metadata).__name__}")
        enabled = data.get("enabled", True)
        if not isinstance(enabled, bool):
            problems.append(f"enabled must be true or false, got {enabled!r}")
            enabled = False
        times = {}
        for name in ("nextRunAt", "lastRunAt"):
            try:
                times[name] = parse_time(data.get(name), name)
            except TimeParseError as exc:
                problems.append(str(exc))
                times[name] = None
        priority = data.get("priority", 0)
        return cls(
            id=schedule_id,
            type=job_type if isinstance(job_type, str) else None,
            cron=expression if isinstance(expression, str) else None,
            timezone=timezone,
            metadata=metadata,
            enabled=enabled,
            next_run_at=times["nextRunAt"],
            last_run_at=times["lastRunAt"],
            last_job_id=data.get("lastJobId") if isinstance(data.get("lastJobId"), str) else None,
            created_by=data.get("createdBy") if isinstance(data.get("createdBy"), str) else None,
            org_id=data.get("orgId") if isinstance(data.get("orgId"), str) else None,
            priority=priority if isinstance(priority, int) and not isinstance(priority, bool) else 0,
            error=data.get("error") if isinstance(data.get("error"), str) else None,
            system=data.get("system") is True,
            version=version,
            problems=tuple(problems),
            raw=data,
        )


def slot_job_id(schedule_id: str, slot: datetime) -> str:
    """The id of the job a slot creates: the same for every firer of that slot."""
    return f"sched-{schedule_id}-{slot:%Y%m%dT%H%MZ}"


def system_schedule_id(name: str) -> str:
    """The document id that holds a schedule declared in code."""
    return "system-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in name)


class ScheduleClient:
    """Create and manage schedules from Python (the command line and the REST API use this)."""

    def __init__(self, settings: Settings | None = None, *, store: ScheduleStore | None = None, registry: HandlerRegistry | None = None) -> None:
        self.store = store or ScheduleStore(settings)
        self.registry = registry if registry is not None else default_registry

    def _validate(self, job_type: str, expression: str, timezone: str, metadata: Any) -> None:
        try:
            cron.check(expression, timezone)
        except cron.CronError as exc:
            raise InvalidSchedule(str(exc)) from None
        if job_type not in self.registry:
            raise InvalidSchedule(f"no handler is registered for job type {job_type!r}")
        if not isinstance(metadata, dict):
            raise InvalidSchedule(f"metadata must be a dict, got {type(metadata).__name__}")

    def create(
        self,
        type: str,
        cron_expression: str,
        *,
        timezone: str = "UTC",
        metadata: dict[str, Any] | None = None,
        schedule_id: str | None = None,
        enabled: bool = True,
        priority: int = 0,
        created_by: str | None = None,
        org_id: str | None = None,
    ) -> Schedule:
        """Save a new schedule; a bad cron, unknown timezone or unknown type raises `InvalidSchedule`."""
        metadata = {} if metadata is None else metadata
        self._validate(type, cron_expression, timezone, metadata)
        now = self.store.now()
        data: dict[str, Any] = {
            "type": type,
            "cron": cron_expression,
            "timezone": timezone,
            "metadata": metadata,
            "enabled": enabled,
            "priority": priority,
            "nextRunAt": cron.next_after(cron_expression, timezone, now),
            "createdAt": firestore.SERVER_TIMESTAMP,
        }
        if created_by is not None:
            data["createdBy"] = created_by
        if org_id is not None:
            data["orgId"] = org_id
        schedule_id = schedule_id or self.store.collection.document().id
        try:
            self.store.create(schedule_id, data)
        except AlreadyExists:
            raise InvalidSchedule(f"a schedule with id {schedule_id!r} already exists") from None
        return self.get(schedule_id)

    def get(self, schedule_id: str) -> Schedule:
        """The schedule with this id; raises `ScheduleNotFound`."""
        found = self.store.get(schedule_id)
        if found is None:
            raise ScheduleNotFound(f"no schedule with id {schedule_id!r}")
        return Schedule.from_document(schedule_id, *found)

    def list(self, *, created_by: str | None = None, org_id: str | None = None, limit: int = 100) -> list[Schedule]:
        """Schedules, optionally of one user or organisation."""
        return [Schedule.from_document(i, d, v) for i, d, v in self.store.list(created_by=created_by, org_id=org_id, limit=limit)]

    def update(
        self,
        schedule_id: str,
        *,
        cron_expression: str | None = None,
        timezone: str | None = None,
        metadata: dict[str, Any] | None = None,
        enabled: bool | None = None,
        priority: int | None = None,
    ) -> Schedule:
        """Change a schedule; a new cron or timezone, or re-enabling, recomputes nextRunAt from now."""

        def decide(data: dict[str, Any]) -> dict[str, Any]:
            current = Schedule.from_document(schedule_id, data)
            new_cron = cron_expression if cron_expression is not None else current.cron or ""
            new_tz = timezone if timezone is not None else current.timezone
            new_meta = metadata if metadata is not None else current.metadata
            self._validate(current.type or "", new_cron, new_tz, new_meta)
            fields: dict[str, Any] = {"cron": new_cron, "timezone": new_tz, "metadata": new_meta, "error": firestore.DELETE_FIELD}
            if priority is not None:
                fields["priority"] = priority
            if enabled is not None:
                fields["enabled"] = enabled
            restarts = (enabled and not current.enabled) or new_cron != current.cron or new_tz != current.timezone
            if restarts or current.next_run_at is None:
                fields["nextRunAt"] = cron.next_after(new_cron, new_tz, self.store.now())
            return fields

        if self.store.update_checked(schedule_id, decide) is None:
            raise ScheduleNotFound(f"no schedule with id {schedule_id!r}")
        return self.get(schedule_id)

    def enable(self, schedule_id: str) -> Schedule:
        """Turn a schedule on (it next runs at its first slot from now)."""
        return self.update(schedule_id, enabled=True)

    def disable(self, schedule_id: str) -> Schedule:
        """Turn a schedule off."""
        return self.update(schedule_id, enabled=False)

    def delete(self, schedule_id: str) -> None:
        """Delete a schedule (its past jobs stay)."""
        self.get(schedule_id)
        self.store.delete(schedule_id)


@dataclass
class FireSummary:
    """What one firing round did."""

    fired: list[dict[str, str]] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    lost: int = 0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary."""
        return {"fired": self.fired, "invalid": self.invalid, "lost": self.lost}


_synced: set[tuple[str, str, int]] = set()
_scan_state: dict[tuple[str, str], tuple[float, str | None]] = {}
_state_lock = threading.Lock()


class Scheduler:
    """The firer: run by every tick and every worker; any number of them may run at once."""

    def __init__(self, store: ScheduleStore, jobs: JobStore, registry: HandlerRegistry | None = None, holder: str = "scheduler") -> None:
        self.store = store
        self.jobs = jobs
        self.registry = registry if registry is not None else default_registry
        self.log = logging.LoggerAdapter(log, {"worker": holder})

    def fire_due(self, now: datetime | None = None, limit: int = 100) -> FireSummary:
        """Fire every due slot of every schedule (code and documents); returns what happened."""
        now = now or self.store.now()
        summary = FireSummary()
        self.sync_code_schedules(now)
        seen: set[str] = set()
        for schedule_id, data, version in self.store.due(now, limit) + self._scan_page():
            if schedule_id in seen:
                continue
            seen.add(schedule_id)
            self._handle(Schedule.from_document(schedule_id, data, version), now, summary)
        return summary

    def _scan_page(self) -> list[tuple[str, dict[str, Any], datetime]]:
        key = (self.store.settings.project, self.store.settings.schedules_collection)
        with _state_lock:
            next_at, after = _scan_state.get(key, (0.0, None))
            if time.monotonic() < next_at:
                return []
        page = self.store.scan(after, SCAN_PAGE)
        with _state_lock:
            more = len(page) >= SCAN_PAGE
            _scan_state[key] = (time.monotonic() + (0 if more else SCAN_INTERVAL), page[-1][0] if more else None)
        return page

    def _handle(self, schedule: Schedule, now: datetime, summary: FireSummary) -> None:
        assert schedule.version is not None
        if schedule.problems:
            if schedule.enabled or schedule.error is None:
                reason = "; ".join(schedule.problems)
                if self.store.write(schedule.id, {"enabled": False, "error": reason}, schedule.version):
                    event(self.log, "schedule_invalid", f"schedule {schedule.id} disabled: {reason}", level=logging.ERROR, schedule=schedule.id, error=reason)
                summary.invalid.append(schedule.id)
            return
        if not schedule.enabled:
            return
        assert schedule.cron is not None and schedule.type is not None
        slot, upcoming = cron.fire(schedule.cron, schedule.timezone, schedule.next_run_at, now)
        if slot is None:
            if upcoming != schedule.next_run_at:
                self.store.write(schedule.id, {"nextRunAt": upcoming}, schedule.version)
            return
        job_id = slot_job_id(schedule.id, slot)
        extra: dict[str, Any] = {"scheduleId": schedule.id, "scheduleSlot": slot}
        if schedule.created_by:
            extra["createdBy"] = schedule.created_by
        if schedule.org_id:
            extra["orgId"] = schedule.org_id
        job = self.jobs.new_job_fields(schedule.type, dict(schedule.metadata), scheduled_for=slot, priority=schedule.priority, max_attempts=None, extra=extra)
        fields = {"lastRunAt": slot, "lastJobId": job_id, "nextRunAt": upcoming, "error": firestore.DELETE_FIELD}
        if self.store.fire(schedule.id, schedule.version, job_id, job, fields):
            summary.fired.append({"schedule": schedule.id, "slot": slot.isoformat(), "jobId": job_id})
            event(self.log, "schedule_fired", f"schedule {schedule.id} fired its {slot.isoformat()} slot as job {job_id}", schedule=schedule.id, jobId=job_id, type=schedule.type)
        else:
            summary.lost += 1  # another firer took this slot (or the schedule changed): nothing to do

    def sync_code_schedules(self, now: datetime) -> None:
        """Create or update the documents of schedules declared in code (once per process and registry)."""
        declared = self.registry.schedules()
        key = (self.store.settings.project, self.store.settings.schedules_collection, id(self.registry))
        with _state_lock:
            if key in _synced or not declared:
                return
        existing = self.store.get_many([system_schedule_id(s.name) for s in declared])
        for spec in declared:
            self._sync_one(spec, existing.get(system_schedule_id(spec.name)), now)
        with _state_lock:
            _synced.add(key)

    def _sync_one(self, spec: CodeSchedule, found: tuple[dict[str, Any], datetime] | None, now: datetime) -> None:
        schedule_id = system_schedule_id(spec.name)
        wanted = {"type": spec.type, "cron": spec.cron, "timezone": spec.timezone, "metadata": spec.metadata, "system": True}
        if found is None:
            with contextlib.suppress(AlreadyExists):  # another process got there first
                self.store.create(schedule_id, {**wanted, "enabled": True, "priority": 0, "nextRunAt": cron.next_after(spec.cron, spec.timezone, now), "createdAt": firestore.SERVER_TIMESTAMP})
            return
        data, version = found
        if all(data.get(k) == v for k, v in wanted.items()):
            return
        fields = dict(wanted)
        if data.get("cron") != spec.cron or data.get("timezone") != spec.timezone:
            fields["nextRunAt"] = cron.next_after(spec.cron, spec.timezone, now)
        self.store.write(schedule_id, fields, version)


__all__ = ["FireSummary", "Schedule", "ScheduleClient", "Scheduler", "slot_job_id", "system_schedule_id"]
