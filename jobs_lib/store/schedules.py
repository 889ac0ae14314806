"""The ``scheduledJobs`` collection: every read and write of schedule documents."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from jobs_lib.store.base import StoreBase


class ScheduleStore(StoreBase):
    """Schedule documents, and firing a slot (creating its job) atomically with the schedule's update."""

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

    def get(self, schedule_id: str) -> tuple[dict[str, Any], datetime] | None:
        """A schedule's fields and version, or None."""
        snap = self._retrying(lambda: self.ref(schedule_id).get(retry=None))
        self.stats.add(reads=1, kind="read:schedule")
        return (snap.to_dict() or {}, snap.update_time) if snap.exists else None

    def get_many(self, ids: list[str]) -> dict[str, tuple[dict[str, Any], datetime]]:
        """Several schedules by id (missing ones are left out)."""
        if not ids:
            return {}
        snaps = self._retrying(lambda: list(self.db.get_all([self.ref(i) for i in ids])))
        self.stats.add(reads=len(ids), kind="read:schedule")
        return {s.id: (s.to_dict() or {}, s.update_time) for s in snaps if s.exists}

    def due(self, now: datetime, limit: int) -> list[tuple[str, dict[str, Any], datetime]]:
        """Enabled schedules whose nextRunAt has come, soonest first."""
        query = (
            self.collection.where(filter=FieldFilter("enabled", "==", True))
            .where(filter=FieldFilter("nextRunAt", "<=", now))
            .order_by("nextRunAt")
            .limit(limit)
        )
        return self._query(query, "schedules_due")

    def scan(self, after: str | None, limit: int) -> list[tuple[str, dict[str, Any], datetime]]:
        """A page of all schedules in id order: finds hand-written ones the due query cannot see."""
        query = self.collection.order_by("__name__")
        if after:
            query = query.start_after({"__name__": self.ref(after)})
        return self._query(query.limit(limit), "schedules_scan")

    def list(self, *, created_by: str | None = None, org_id: str | None = None, limit: int = 100) -> list[tuple[str, dict[str, Any], datetime]]:
        """Schedules, optionally those of one user or organisation, in id order."""
        query = self.collection
        if created_by is not None:
            query = query.where(filter=FieldFilter("createdBy", "==", created_by))
        if org_id is not None:
            query = query.where(filter=FieldFilter("orgId", "==", org_id))
        return self._query(query.limit(limit), "schedules_list")

    def create(self, schedule_id: str, fields: dict[str, Any]) -> None:
        """Create a schedule; raises AlreadyExists if the id is taken."""
        self._retrying(lambda: self.ref(schedule_id).create(fields, retry=None))
        self.stats.add(writes=1, kind="write:schedule")

    def write(self, schedule_id: str, fields: dict[str, Any], version: datetime) -> bool:
        """Update a schedule if unchanged since `version`; False if it changed."""
        try:
            self._retrying(lambda: self.ref(schedule_id).update({**fields, "updatedAt": firestore.SERVER_TIMESTAMP}, option=self.db.write_option(last_update_time=version), retry=None))
        except (gexc.FailedPrecondition, gexc.NotFound):
            self.stats.add(writes=1, kind="write:schedule:refused")
            return False
        self.stats.add(writes=1, kind="write:schedule")
        return True

    def update_checked(self, schedule_id: str, decide: Callable[[dict[str, Any]], dict[str, Any] | None], attempts: int = 10) -> tuple[dict[str, Any], bool] | None:
        """Read, let `decide` return fields (or None), write if unchanged; None if there is no such schedule."""
        for _ in range(attempts):
            found = self.get(schedule_id)
            if found is None:
                return None
            data, version = found
            fields = decide(data)
            if fields is None:
                return data, False
            if self.write(schedule_id, fields, version):
                return {**data, **fields}, True
        raise gexc.Aborted(f"schedule {schedule_id} kept changing")  # type: ignore[no-untyped-call]

    def delete(self, schedule_id: str) -> None:
        """Delete a schedule."""
        self._retrying(lambda: self.ref(schedule_id).delete(retry=None))
        self.stats.add(writes=1, kind="delete:schedule")

    def fire(self, schedule_id: str, version: datetime, job_id: str, job: dict[str, Any], schedule_fields: dict[str, Any]) -> bool:
        """Create the slot's job and advance the schedule in one atomic commit.

        The job id is fixed by the schedule and the slot, and the schedule
        update is conditioned on the version read, so of several firers at
        the same moment exactly one commit succeeds: one job per slot.
        """
        batch = self.db.batch()
        batch.create(self.jobs.document(job_id), job)
        batch.update(self.ref(schedule_id), {**schedule_fields, "updatedAt": firestore.SERVER_TIMESTAMP}, option=self.db.write_option(last_update_time=version))
        try:
            self._retrying(lambda: batch.commit(retry=None))
        except (gexc.AlreadyExists, gexc.FailedPrecondition, gexc.NotFound, gexc.Conflict):
            self.stats.add(writes=2, kind="write:fire:refused")
            return False
        self.stats.add(writes=2, kind="write:fire")
        return True


__all__ = ["ScheduleStore"]
