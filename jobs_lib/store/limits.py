"""Concurrency slots and paused types: the documents that limit what runs.

A handler with ``concurrency=N`` runs at most N jobs at once across every
worker and function instance. Its slots are N small documents
(``{collection}_slots/{type}~{key}~{i}``), so no single document takes every
claim. A slot names the job holding it and that job's lease token; it is free
when that job no longer runs under that token (finished, handed back, or its
lease expired with a dead worker). Taking a slot and claiming the job are one
atomic commit, each write conditioned on the version read, so two claimers
can never both get the same slot, and a finished job frees its slot without a
write of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.field_path import FieldPath

from jobs_lib.errors import Contention, DocumentExists, StoreRefused
from jobs_lib.model.job import Job, Status
from jobs_lib.store.base import StorePart


def slot_id(job_type: str, key: str, index: int) -> str:
    """The document id of one slot."""

    def clean(part: str) -> str:
        return "".join(c if c not in "/~" else "_" for c in part)

    return f"{clean(job_type)}~{clean(key)}~{index}"


class ConcurrencyLimits(StorePart):
    """Slot documents and the paused-types document."""

    @property
    def slot_collection(self) -> Any:
        """``{collection}_slots``."""
        return self.db.collection(f"{self.settings.collection}_slots")

    @property
    def control(self) -> Any:
        """``{collection}_control/types``: which types are paused."""
        return self.db.collection(f"{self.settings.collection}_control").document("types")

    def read_slots(
        self, job_type: str, key: str, count: int
    ) -> list[tuple[str, dict[str, Any], datetime | None]]:
        """The `count` slots of a type (and key): (slot id, fields, version or None if never
        used)."""
        ids = [slot_id(job_type, key, i) for i in range(count)]
        snaps = self.connection.get_all([self.slot_collection.document(i) for i in ids], "slots")
        return [
            (i, snaps[i].to_dict() or {}, snaps[i].update_time) if i in snaps else (i, {}, None)
            for i in ids
        ]

    def slot_version(self, slot: str) -> datetime | None:
        """One slot's version as it is now (None if never used): one read."""
        snap = self.connection.get(self.slot_collection.document(slot), "slot")
        return snap.update_time if snap.exists else None

    def holders(self, job_ids: list[str]) -> dict[str, Job]:
        """The jobs that hold slots, as they are now."""
        jobs_col = self.db.collection(self.settings.collection)
        snaps = self.connection.get_all([jobs_col.document(i) for i in job_ids], "slot_holders")
        return {
            i: Job.from_document(i, s.to_dict(), s.update_time, created=s.create_time)
            for i, s in snaps.items()
        }

    def take_slot(
        self,
        slot: str,
        slot_version: datetime | None,
        job_id: str,
        token: str,
        job_ref: Any,
        claim_fields: dict[str, Any],
        job_version: datetime | None,
    ) -> tuple[datetime, datetime] | None:
        """Take the slot and write the job's claim in one atomic commit; the job's and the slot's
        new versions, or None if the slot or the job changed since read."""
        batch = self.db.batch()
        slot_ref = self.slot_collection.document(slot)
        slot_fields = {"jobId": job_id, "token": token, "takenAt": firestore.SERVER_TIMESTAMP}
        if slot_version is None:
            batch.create(slot_ref, slot_fields)
        else:
            batch.update(
                slot_ref, slot_fields, option=self.db.write_option(last_update_time=slot_version)
            )
        batch.update(
            job_ref, claim_fields, option=self.db.write_option(last_update_time=job_version)
        )
        try:
            results = self.connection.commit(batch, 2, "claim_slot")
        except (Contention, DocumentExists, StoreRefused):
            return None  # refused: someone took the slot or the job first (or the job is gone)
        return results[1].update_time, results[0].update_time

    @staticmethod
    def slot_is_free(fields: dict[str, Any], holder_job: Job | None, now: datetime) -> bool:
        """Whether a slot's job no longer runs under the token the slot names."""
        if not fields.get("jobId"):
            return True
        if holder_job is None or holder_job.status is not Status.IN_PROGRESS:
            return True
        if holder_job.lease is None or holder_job.lease.token != fields.get("token"):
            return True
        return holder_job.lease_expired(now)

    def paused_types(self) -> set[str]:
        """The job types paused by an operator."""
        return self.control_state()[0]

    def control_state(self) -> tuple[set[str], dict[str, dict[str, Any]]]:
        """One read of the control document: the paused types, and the open circuit breakers by type
        (``openUntil``, ``openedAt``, ``failures``, ``lastError``)."""
        snap = self.connection.get(self.control, "control")
        return self._control_fields((snap.to_dict() or {}) if snap.exists else {})

    def watch_control(self, changed: Callable[[set[str], dict[str, dict[str, Any]]], None]) -> Any:
        """Listen to the control document (one billed read per change): `changed` gets what
        `control_state` returns, at once and after each change. Returns the watch
        (``unsubscribe()``)."""

        def on_snapshot(snapshots: list[Any], _changes: Any, _read_time: Any) -> None:
            self.stats.add(reads=1, kind="read:control_watch")
            snap = snapshots[0] if snapshots else None
            changed(
                *self._control_fields(
                    (snap.to_dict() or {}) if snap is not None and snap.exists else {}
                )
            )

        return self.control.on_snapshot(on_snapshot)

    @staticmethod
    def _control_fields(data: dict[str, Any]) -> tuple[set[str], dict[str, dict[str, Any]]]:
        paused = data.get("paused")
        breakers = data.get("breakers")
        return (
            {p for p in paused if isinstance(p, str)} if isinstance(paused, list) else set(),
            {t: b for t, b in breakers.items() if isinstance(b, dict)}
            if isinstance(breakers, dict)
            else {},
        )

    def open_breaker(
        self, job_type: str, until: datetime, opened_at: datetime, failures: int, error: str | None
    ) -> None:
        """Open (or open again) a type's circuit breaker: one write, merged into the control
        document."""
        entry = {
            "openUntil": until,
            "openedAt": opened_at,
            "failures": failures,
            "lastError": (error or "")[:500],
        }
        self.connection.write(
            lambda: self.control.set(
                {"breakers": {job_type: entry}, "updatedAt": firestore.SERVER_TIMESTAMP},
                merge=True,
                retry=None,
            ),
            "write:breaker",
        )

    def close_breaker(self, job_type: str) -> None:
        """Close a type's circuit breaker (its probe succeeded)."""
        path = FieldPath("breakers", job_type).to_api_repr()
        self.connection.write(
            lambda: self.control.update(
                {path: firestore.DELETE_FIELD, "updatedAt": firestore.SERVER_TIMESTAMP}, retry=None
            ),
            "write:breaker",
        )

    def set_paused(self, job_type: str, paused: bool) -> None:
        """Pause or resume a type (an atomic array change; no read needed)."""
        change = firestore.ArrayUnion([job_type]) if paused else firestore.ArrayRemove([job_type])
        self.connection.write(
            lambda: self.control.set(
                {"paused": change, "updatedAt": firestore.SERVER_TIMESTAMP}, merge=True, retry=None
            ),
            "write:control",
        )


__all__ = ["ConcurrencyLimits", "slot_id"]
