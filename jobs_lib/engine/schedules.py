"""Recurring jobs: schedules in ``scheduledJobs`` and schedules declared in code, fired once per
slot.

Cloud Scheduler is at-least-once and can fire twice, several ticks or workers
can run at once, and slots get missed while nothing runs. None of that may
double or lose a run, so firing a slot is one atomic commit that creates the
slot's job under an id fixed by the schedule and the slot, and advances the
schedule's ``nextRunAt`` conditioned on the version read. Whoever commits
first fires the slot; everyone else's commit is refused. Only the latest due
slot fires (`jobs_lib.model.cron.fire`), so a schedule overdue by ten slots fires once.

Schedules declared in code (``@handler(..., schedule="0 * * * *")``) are kept
as documents too (``system-<name>``, ``system: true``), created and updated
from the code by the first firer in each process, so that one mechanism fires
both and their last and next runs can be read like any other schedule.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jobs_lib.errors import DocumentExists, InvalidSchedule, ScheduleNotFound
from jobs_lib.model import cron
from jobs_lib.observability.logs import event
from jobs_lib.observability.telemetry import Telemetry
from jobs_lib.registry import CodeSchedule, HandlerRegistry, default_registry
from jobs_lib.store import JobStore
from jobs_lib.store.schedules import Schedule, ScheduleChange, ScheduleStore

log = logging.getLogger("jobs_lib.schedules")

#: Every so often a firer also reads all schedules, page by page, to find hand-written
#: ones the due query cannot see (no nextRunAt, wrong types) and mark or repair them.
SCAN_INTERVAL = 600.0
SCAN_PAGE = 100


def slot_job_id(schedule_id: str, slot: datetime) -> str:
    """The id of the job a slot creates: the same for every firer of that slot."""
    return f"sched-{schedule_id}-{slot:%Y%m%dT%H%MZ}"


def system_schedule_id(name: str) -> str:
    """The document id that holds a schedule declared in code."""
    return "system-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in name)


class ScheduleClient:
    """Create and manage schedules from Python (the command line and the REST API use this)."""

    def __init__(
        self,
        *,
        store: ScheduleStore,
        registry: HandlerRegistry | None = None,
        jobs: Any = None,
    ) -> None:
        """`jobs` (a `jobs_lib.client.JobsClient`) creates the job of `fire_now`."""
        self.store = store  # built by jobs_lib.app.App, the one assembly
        self.registry = registry if registry is not None else default_registry
        self.jobs = jobs

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
        """Save a new schedule; a bad cron, unknown timezone or unknown type raises
        `InvalidSchedule`."""
        metadata = {} if metadata is None else metadata
        self._validate(type, cron_expression, timezone, metadata)
        schedule_id = schedule_id or self.store.new_id()
        try:
            self.store.create(
                schedule_id,
                job_type=type,
                cron_expression=cron_expression,
                timezone=timezone,
                metadata=metadata,
                enabled=enabled,
                priority=priority,
                next_run_at=cron.next_after(cron_expression, timezone, self.store.now()),
                created_by=created_by,
                org_id=org_id,
            )
        except DocumentExists:
            raise InvalidSchedule(f"a schedule with id {schedule_id!r} already exists") from None
        return self.get(schedule_id)

    def get(self, schedule_id: str) -> Schedule:
        """The schedule with this id; raises `ScheduleNotFound`."""
        found = self.store.get(schedule_id)
        if found is None:
            raise ScheduleNotFound(f"no schedule with id {schedule_id!r}")
        return found

    def count_of(self, created_by: str) -> int:
        """How many schedules one user has."""
        return self.store.count_of(created_by)

    def list(
        self, *, created_by: str | None = None, org_id: str | None = None, limit: int = 100
    ) -> list[Schedule]:
        """Schedules, optionally of one user or organisation."""
        return self.store.list(created_by=created_by, org_id=org_id, limit=limit)

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
        """Change a schedule; a new cron or timezone, or re-enabling, recomputes nextRunAt from
        now."""

        def decide(current: Schedule) -> ScheduleChange:
            new_cron = cron_expression if cron_expression is not None else current.cron or ""
            new_tz = timezone if timezone is not None else current.timezone
            new_meta = metadata if metadata is not None else current.metadata
            self._validate(current.type or "", new_cron, new_tz, new_meta)
            restarts = (
                (enabled and not current.enabled)
                or new_cron != current.cron
                or new_tz != current.timezone
            )
            next_run = (
                cron.next_after(new_cron, new_tz, self.store.now())
                if restarts or current.next_run_at is None
                else None
            )
            return ScheduleChange(
                cron=new_cron,
                timezone=new_tz,
                metadata=new_meta,
                enabled=enabled,
                priority=priority,
                next_run_at=next_run,
            )

        if self.store.update_checked(schedule_id, decide) is None:
            raise ScheduleNotFound(f"no schedule with id {schedule_id!r}")
        return self.get(schedule_id)

    def enable(self, schedule_id: str) -> Schedule:
        """Turn a schedule on (it next runs at its first slot from now)."""
        return self.update(schedule_id, enabled=True)

    def disable(self, schedule_id: str) -> Schedule:
        """Turn a schedule off."""
        return self.update(schedule_id, enabled=False)

    def fire_now(self, schedule_id: str) -> tuple[Schedule, str]:
        """Run a schedule's job now, outside its slots (its next slot is unchanged); the schedule
        and the job id."""
        schedule = self.get(schedule_id)
        if schedule.type is None or schedule.problems:
            raise InvalidSchedule(
                f"schedule {schedule_id} cannot fire: {'; '.join(schedule.problems) or 'no type'}"
            )
        if self.jobs is None:
            from jobs_lib.client import JobsClient

            self.jobs = JobsClient(
                store=JobStore(connection=self.store.connection), registry=self.registry
            )
        now = self.store.now()
        job = self.jobs.enqueue(
            schedule.type,
            dict(schedule.metadata),
            priority=schedule.priority,
            key=f"fire-now:{schedule.id}:{now.isoformat()}",
            org_id=schedule.org_id,
            created_by=schedule.created_by,
        )
        self.store.record_fired(schedule, job.id, now)
        return self.get(schedule_id), job.id

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


class Scheduler:
    """The firer: run by every tick and every worker; any number of them may run at once."""

    def __init__(
        self,
        store: ScheduleStore,
        jobs: JobStore,
        registry: HandlerRegistry | None = None,
        holder: str = "scheduler",
        *,
        system_schedules: Sequence[CodeSchedule] = (),
        telemetry: Telemetry | None = None,
    ) -> None:
        """`system_schedules` are declared by the configuration (the cleanup) beside the registry's
        own."""
        self.store = store
        self.jobs = jobs
        self.registry = registry if registry is not None else default_registry
        self.system_schedules = tuple(system_schedules)
        self.telemetry = telemetry or Telemetry()
        self.log = logging.LoggerAdapter(log, {"worker": holder})
        # One firer per App is shared by its worker and ticks; this state lives with it.
        self._lock = threading.Lock()
        self._synced = False
        self._scan_next_at = 0.0
        self._scan_after: str | None = None

    def fire_due(self, now: datetime | None = None, limit: int = 100) -> FireSummary:
        """Fire every due slot of every schedule (code and documents); returns what happened."""
        now = now or self.store.now()
        summary = FireSummary()
        self.sync_code_schedules(now)
        seen: set[str] = set()
        for schedule in self.store.due(now, limit) + self._scan_page():
            if schedule.id in seen:
                continue
            seen.add(schedule.id)
            self._handle(schedule, now, summary)
        return summary

    def _scan_page(self) -> list[Schedule]:
        with self._lock:
            if time.monotonic() < self._scan_next_at:
                return []
            after = self._scan_after
        page = self.store.scan(after, SCAN_PAGE)
        with self._lock:
            more = len(page) >= SCAN_PAGE
            self._scan_next_at = time.monotonic() + (0 if more else SCAN_INTERVAL)
            self._scan_after = page[-1].id if more else None
        return page

    def _handle(self, schedule: Schedule, now: datetime, summary: FireSummary) -> None:
        assert schedule.version is not None
        if schedule.problems:
            if schedule.enabled or schedule.error is None:
                reason = "; ".join(schedule.problems)
                if self.store.disable_invalid(schedule, reason):
                    event(
                        self.log,
                        "schedule_invalid",
                        f"schedule {schedule.id} disabled: {reason}",
                        level=logging.ERROR,
                        schedule=schedule.id,
                        error=reason,
                    )
                summary.invalid.append(schedule.id)
            return
        if not schedule.enabled:
            return
        if (
            schedule.created_by
            and schedule.next_run_at is None
            and not schedule.system
            and not self._within_limit(schedule)
        ):
            return
        assert schedule.cron is not None and schedule.type is not None
        slot, upcoming = cron.fire(schedule.cron, schedule.timezone, schedule.next_run_at, now)
        if slot is None:
            if upcoming != schedule.next_run_at:
                self.store.move_next_run(schedule, upcoming)
            return
        job_id = slot_job_id(schedule.id, slot)
        extra: dict[str, Any] = {}
        if schedule.created_by:
            extra["createdBy"] = schedule.created_by
        if schedule.org_id:
            extra["orgId"] = schedule.org_id
        job = self.jobs.new_job_fields(
            schedule.type,
            dict(schedule.metadata),
            scheduled_for=slot,
            priority=schedule.priority,
            max_attempts=None,
            extra=extra,
        )
        fired = self.store.fire(schedule, slot, upcoming, job_id, job)
        if fired == "taken":
            # A document the scheduler did not write holds the slot's id (the rules refuse such ids
            # to clients; this is the check on use): fire the slot under an id nobody can guess.
            event(
                self.log,
                "schedule_slot_taken",
                f"schedule {schedule.id}: the id {job_id} of its {slot.isoformat()} slot is held "
                f"by a document the scheduler did not write; firing it under another id",
                level=logging.WARNING,
                schedule=schedule.id,
                jobId=job_id,
            )
            job_id = f"{job_id}-{secrets.token_hex(6)}"
            fired = self.store.fire(schedule, slot, upcoming, job_id, job)
        if fired == "fired":
            self.telemetry.count("enqueued", schedule.type)
            summary.fired.append(
                {"schedule": schedule.id, "slot": slot.isoformat(), "jobId": job_id}
            )
            event(
                self.log,
                "schedule_fired",
                f"schedule {schedule.id} fired its {slot.isoformat()} slot as job {job_id}",
                schedule=schedule.id,
                jobId=job_id,
                type=schedule.type,
            )
        else:
            summary.lost += (
                1  # another firer took this slot (or the schedule changed): nothing to do
            )

    def _within_limit(self, schedule: Schedule) -> bool:
        """A user's schedule the scheduler meets for the first time (no nextRunAt yet): True when
        it is among the user's first `schedules_per_user` schedules (by id, the same answer in every
        process), else it is switched off with an error naming the limit."""
        assert schedule.created_by is not None
        most = self.store.settings.schedules_per_user
        if schedule.id in self.store.owner_ids(schedule.created_by, most):
            return True
        reason = (
            f"switched off: its owner has more than {most} schedules, the most one user "
            f"may have (JOBS_SCHEDULES_PER_USER)"
        )
        if self.store.over_limit(schedule, reason):
            event(
                self.log,
                "schedule_over_limit",
                f"schedule {schedule.id} of {schedule.created_by} {reason}",
                level=logging.WARNING,
                schedule=schedule.id,
                user=schedule.created_by,
            )
        return False

    def declared(self) -> list[CodeSchedule]:
        """Schedules declared in code: the registry's and the configuration's."""
        return [*self.registry.schedules(), *self.system_schedules]

    def sync_code_schedules(self, now: datetime) -> None:
        """Create or update the documents of schedules declared in code (once per firer)."""
        declared = self.declared()
        with self._lock:
            if self._synced or not declared:
                return
        existing = self.store.get_many([system_schedule_id(s.name) for s in declared])
        for spec in declared:
            name = system_schedule_id(spec.name)
            reclaimed = self.store.sync_declared(
                name,
                existing.get(name),
                job_type=spec.type,
                cron_expression=spec.cron,
                timezone=spec.timezone,
                metadata=spec.metadata,
                next_run_at=lambda spec=spec: cron.next_after(spec.cron, spec.timezone, now),  # type: ignore[misc]
            )
            if reclaimed:
                event(
                    self.log,
                    "schedule_reclaimed",
                    f"schedule {name} was held by a document the scheduler did not write; "
                    f"replaced by the one declared in code",
                    level=logging.WARNING,
                    schedule=name,
                )
        with self._lock:
            self._synced = True


__all__ = [
    "FireSummary",
    "Schedule",
    "ScheduleClient",
    "Scheduler",
    "slot_job_id",
    "system_schedule_id",
]
