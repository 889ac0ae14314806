"""The ``scheduledJobs`` collection: every read and write of schedule documents, and their field
names.

Schedules cross this boundary as `Schedule` values (read defensively, like
`jobs_lib.model.job.Job`) and changes as `ScheduleChange` values; nothing outside
this module spells a schedule's field names.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from jobs_lib.errors import Contention, CronError, DocumentExists, StoreRefused, TimeParseError
from jobs_lib.model import cron
from jobs_lib.model.clock import parse_time
from jobs_lib.store.base import StorePart, with_shard


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
    def from_document(
        cls, schedule_id: str, data: dict[str, Any], version: datetime | None = None
    ) -> Schedule:
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
        except CronError as exc:
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
            priority=priority
            if isinstance(priority, int) and not isinstance(priority, bool)
            else 0,
            error=data.get("error") if isinstance(data.get("error"), str) else None,
            system=data.get("system") is True,
            version=version,
            problems=tuple(problems),
            raw=data,
        )


@dataclass(frozen=True)
class ScheduleChange:
    """What an update sets on a schedule (None: leave as it is). Setting anything clears
    ``error``."""

    cron: str | None = None
    timezone: str | None = None
    metadata: dict[str, Any] | None = None
    enabled: bool | None = None
    priority: int | None = None
    next_run_at: datetime | None = None


#: Fields of a fired job that name the schedule and the slot it fired (clients cannot write them).
SLOT_OWNER = "scheduleId"
SLOT_FIELD = "scheduleSlot"


class ScheduleStore(StorePart):
    """Schedule documents, and firing a slot (creating its job) atomically with the schedule's
    update."""

    @property
    def collection(self) -> Any:
        """The schedules collection reference."""
        return self.db.collection(self.settings.schedules_collection)

    @property
    def jobs(self) -> Any:
        """The jobs collection reference (fired jobs go there)."""
        return self.db.collection(self.settings.collection)

    def ref(self, schedule_id: str) -> Any:
        """The document reference of a schedule."""
        return self.collection.document(schedule_id)

    def new_id(self) -> str:
        """A fresh auto-id for a schedule."""
        return str(self.collection.document().id)

    def _rows(self, rows: list[Any]) -> list[Schedule]:
        return [Schedule.from_document(row.id, row.fields, row.version) for row in rows]

    def get(self, schedule_id: str) -> Schedule | None:
        """A schedule, or None."""
        snap = self.connection.get(self.ref(schedule_id), "schedule")
        return (
            Schedule.from_document(schedule_id, snap.to_dict() or {}, snap.update_time)
            if snap.exists
            else None
        )

    def get_many(self, ids: list[str]) -> dict[str, Schedule]:
        """Several schedules by id (missing ones are left out)."""
        snaps = self.connection.get_all([self.ref(i) for i in ids], "schedule")
        return {
            i: Schedule.from_document(i, s.to_dict() or {}, s.update_time) for i, s in snaps.items()
        }

    def due(self, now: datetime, limit: int) -> list[Schedule]:
        """Enabled schedules whose nextRunAt has come, soonest first."""
        query = (
            self.collection.where(filter=FieldFilter("enabled", "==", True))
            .where(filter=FieldFilter("nextRunAt", "<=", now))
            .order_by("nextRunAt")
            .limit(limit)
        )
        return self._rows(self.connection.query(query, "schedules_due"))

    def scan(self, after: str | None, limit: int) -> list[Schedule]:
        """A page of all schedules in id order: finds hand-written ones the due query cannot see."""
        query = self.collection.order_by("__name__")
        if after:
            query = query.start_after({"__name__": self.ref(after)})
        return self._rows(self.connection.query(query.limit(limit), "schedules_scan"))

    def list_schedules(
        self, *, created_by: str | None = None, org_id: str | None = None, limit: int = 100
    ) -> list[Schedule]:
        """Schedules, optionally those of one user or organisation, in id order."""
        query = self.collection
        if created_by is not None:
            query = query.where(filter=FieldFilter("createdBy", "==", created_by))
        if org_id is not None:
            query = query.where(filter=FieldFilter("orgId", "==", org_id))
        return self._rows(self.connection.query(query.limit(limit), "schedules_list"))

    def page_rows(self, query: Any, label: str) -> list[Schedule]:
        """Run a listing's query over schedules (see `jobs_lib.store.listing.ScheduleListing`)."""
        return self._rows(self.connection.query(query, label))

    def create(
        self,
        schedule_id: str,
        *,
        job_type: str,
        cron_expression: str,
        timezone: str,
        metadata: dict[str, Any],
        enabled: bool,
        priority: int,
        next_run_at: datetime,
        created_by: str | None = None,
        org_id: str | None = None,
        system: bool = False,
    ) -> None:
        """Create a schedule; raises `DocumentExists` if the id is taken."""
        data: dict[str, Any] = {
            "type": job_type,
            "cron": cron_expression,
            "timezone": timezone,
            "metadata": metadata,
            "enabled": enabled,
            "priority": priority,
            "nextRunAt": next_run_at,
            "createdAt": firestore.SERVER_TIMESTAMP,
        }
        if system:
            data["system"] = True
        if created_by is not None:
            data["createdBy"] = created_by
        if org_id is not None:
            data["orgId"] = org_id
        self.connection.write(
            lambda: self.ref(schedule_id).create(data, retry=None), "write:schedule"
        )

    def _write(self, schedule_id: str, fields: dict[str, Any], version: datetime) -> bool:
        """Update a schedule if unchanged since `version`; False if it changed."""
        try:
            self.connection.retrying(
                lambda: self.ref(schedule_id).update(
                    {**fields, "updatedAt": firestore.SERVER_TIMESTAMP},
                    option=self.db.write_option(last_update_time=version),
                    retry=None,
                )
            )
        except (Contention, StoreRefused):
            self.stats.add(writes=1, kind="write:schedule:refused")
            return False
        self.stats.add(writes=1, kind="write:schedule")
        return True

    @staticmethod
    def _change_fields(change: ScheduleChange) -> dict[str, Any]:
        fields: dict[str, Any] = {"error": firestore.DELETE_FIELD}
        for name, value in (
            ("cron", change.cron),
            ("timezone", change.timezone),
            ("metadata", change.metadata),
            ("enabled", change.enabled),
            ("priority", change.priority),
            ("nextRunAt", change.next_run_at),
        ):
            if value is not None:
                fields[name] = value
        return fields

    def change(self, schedule: Schedule, change: ScheduleChange) -> bool:
        """Apply a change to the schedule as read; False if it changed meanwhile."""
        assert schedule.version is not None
        return self._write(schedule.id, self._change_fields(change), schedule.version)

    def disable_invalid(self, schedule: Schedule, reason: str) -> bool:
        """Switch off a schedule that cannot fire, saying why in its ``error``."""
        assert schedule.version is not None
        return self._write(schedule.id, {"enabled": False, "error": reason}, schedule.version)

    def move_next_run(self, schedule: Schedule, next_run_at: datetime) -> bool:
        """Set when the schedule next fires (no slot fired)."""
        assert schedule.version is not None
        return self._write(schedule.id, {"nextRunAt": next_run_at}, schedule.version)

    def update_checked(
        self,
        schedule_id: str,
        decide: Callable[[Schedule], ScheduleChange | None],
        attempts: int = 10,
    ) -> Schedule | None:
        """Read, let `decide` return a change (or None), write if unchanged; the schedule as
        read last, or None if there is no such schedule. Raises `Contention` if it kept changing."""
        for _ in range(attempts):
            found = self.get(schedule_id)
            if found is None:
                return None
            change = decide(found)
            if change is None or self.change(found, change):
                return found
        raise Contention(f"schedule {schedule_id} kept changing")

    def record_fired(self, schedule: Schedule, job_id: str, when: datetime) -> None:
        """Note a run fired by hand (``lastRunAt``, ``lastJobId``); the next slot is unchanged."""
        self.connection.write(
            lambda: self.ref(schedule.id).update(
                {"lastRunAt": when, "lastJobId": job_id, "updatedAt": firestore.SERVER_TIMESTAMP},
                retry=None,
            ),
            "write:schedule",
        )

    def delete(self, schedule_id: str) -> None:
        """Delete a schedule."""
        self.connection.write(lambda: self.ref(schedule_id).delete(retry=None), "delete:schedule")

    def fire(
        self,
        schedule: Schedule,
        slot: datetime,
        next_run_at: datetime,
        job_id: str,
        job: dict[str, Any],
    ) -> str:
        """Create the slot's job and advance the schedule in one atomic commit.

        The job id is fixed by the schedule and the slot, and the schedule
        update is conditioned on the version read, so of several firers at
        the same moment exactly one commit succeeds: one job per slot.
        Returns ``"fired"``, ``"lost"`` (another firer has fired it, or the schedule changed), or
        ``"taken"``: a document the scheduler did not write holds the slot's id (the caller fires
        the slot under another id; the schedule's precondition still lets only one firer through).
        """
        assert schedule.version is not None
        fields = {
            "lastRunAt": slot,
            "lastJobId": job_id,
            "nextRunAt": next_run_at,
            "error": firestore.DELETE_FIELD,
            "updatedAt": firestore.SERVER_TIMESTAMP,
        }
        batch = self.db.batch()
        batch.create(
            self.jobs.document(job_id),
            with_shard(job_id, {**job, SLOT_OWNER: schedule.id, SLOT_FIELD: slot}),
        )
        batch.update(
            self.ref(schedule.id),
            fields,
            option=self.db.write_option(last_update_time=schedule.version),
        )
        try:
            self.connection.commit(batch, 2, "fire")
        except DocumentExists:
            holder = self.connection.get(self.jobs.document(job_id), "fire:holder")
            data = (holder.to_dict() or {}) if holder.exists else {}
            ours = data.get(SLOT_OWNER) == schedule.id and data.get(SLOT_FIELD) == slot
            return "lost" if ours or not holder.exists else "taken"
        except (Contention, StoreRefused):
            return "lost"
        return "fired"

    def owner_ids(self, created_by: str, limit: int) -> list[str]:
        """The ids of one user's first `limit` schedules, in id order (an equality filter and the
        document id: no composite index)."""
        query = (
            self.collection.where(filter=FieldFilter("createdBy", "==", created_by))
            .order_by("__name__")
            .limit(limit)
        )
        return [row[0] for row in self.connection.query(query, "schedules_of_owner")]

    def count_of(self, created_by: str) -> int:
        """How many schedules one user has (a count aggregation, one read per 1,000)."""
        return self.connection.count(
            self.collection.where(filter=FieldFilter("createdBy", "==", created_by)),
            "schedules_of_owner",
        )

    def over_limit(self, schedule: Schedule, reason: str) -> bool:
        """Switch off a user's schedule beyond their limit, saying why, and forget its next run
        (so that switching it back on brings it to the scheduler's check again)."""
        assert schedule.version is not None
        return self._write(
            schedule.id,
            {"enabled": False, "error": reason, "nextRunAt": firestore.DELETE_FIELD},
            schedule.version,
        )

    def sync_declared(
        self,
        schedule_id: str,
        found: Schedule | None,
        *,
        job_type: str,
        cron_expression: str,
        timezone: str,
        metadata: dict[str, Any],
        next_run_at: Callable[[], datetime],
    ) -> bool:
        """Make the document of a schedule declared in code match the code (create it if missing).

        Returns True when it found the id held by a document the library did not write (no
        ``system: true``, or an owner): that document is replaced by the library's own, enabled,
        owned by nobody, so a squatted id can neither stop the schedule nor be steered by a user.
        """
        wanted = {
            "type": job_type,
            "cron": cron_expression,
            "timezone": timezone,
            "metadata": metadata,
            "system": True,
        }
        if found is None:
            with contextlib.suppress(DocumentExists):  # another process got there first
                self.create(
                    schedule_id,
                    job_type=job_type,
                    cron_expression=cron_expression,
                    timezone=timezone,
                    metadata=metadata,
                    enabled=True,
                    priority=0,
                    next_run_at=next_run_at(),
                    system=True,
                )
            return False
        assert found.version is not None
        if (
            found.raw.get("system") is not True
            or found.created_by is not None
            or found.org_id is not None
        ):
            fresh: dict[str, Any] = {
                **wanted,
                "enabled": True,
                "priority": 0,
                "nextRunAt": next_run_at(),
                "createdAt": firestore.SERVER_TIMESTAMP,
            }
            fresh.update({name: firestore.DELETE_FIELD for name in found.raw if name not in fresh})
            self._write(schedule_id, fresh, found.version)
            return True
        if all(found.raw.get(k) == v for k, v in wanted.items()):
            return False
        fields = dict(wanted)
        if found.raw.get("cron") != cron_expression or found.raw.get("timezone") != timezone:
            fields["nextRunAt"] = next_run_at()
        self._write(schedule_id, fields, found.version)
        return False

    # Last in the class: a method named `list` shadows the builtin in the annotations after it.
    def list(
        self, *, created_by: str | None = None, org_id: str | None = None, limit: int = 100
    ) -> list[Schedule]:
        """Schedules, optionally those of one user or organisation, in id order."""
        return self.list_schedules(created_by=created_by, org_id=org_id, limit=limit)


__all__ = ["Schedule", "ScheduleChange", "ScheduleStore"]
