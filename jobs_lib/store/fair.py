"""Fair shares' documents: which keys of a fair type have jobs, and the keys' weights.

A handler with ``fair_key`` (jobs_lib.limits.fair) shares the runner between the values of a job
field. The runner reads due jobs per key, so it must know the keys: each has a small document in
``{collection}_fair`` (``{type, field, key, at}``), written where its jobs enter (`enqueue`, and a
created-event for a job an app wrote) and deleted, conditioned on its version, once the key has no
pending job left. The weights are one document, ``{collection}_control/fair``
(``weights: {type: {key: weight}}``), read now and then.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.field_path import FieldPath

from jobs_lib.errors import Contention, DocumentExists, StoreRefused
from jobs_lib.store.base import StorePart

#: A weight is a share of turns: 1 is an equal share; at most this.
MAX_WEIGHT = 1000.0


def key_id(job_type: str, key: str) -> str:
    """The document id of a key of a fair type: a digest, since a key is any string an app
    wrote."""
    return hashlib.sha256(f"{job_type}\0{key}".encode()).hexdigest()[:32]


class FairKeys(StorePart):
    """The ``{collection}_fair`` collection (keys with jobs) and the weights document."""

    @property
    def collection(self) -> Any:
        return self.db.collection(f"{self.settings.collection}_fair")

    @property
    def weights_document(self) -> Any:
        return self.db.collection(f"{self.settings.collection}_control").document("fair")

    def register(self, entries: Sequence[tuple[str, str, str]], writer: Any = None) -> None:
        """Note that these (type, field, key) have pending jobs: one write per key, in one commit
        (no precondition: a later write only moves ``at``). With `writer` (the caller's batch or
        transaction), the writes join it, committed with the caller's jobs."""
        unique = sorted(set(entries))
        for start in range(0, len(unique), 400):
            batch = writer if writer is not None else self.db.batch()
            chunk = unique[start : start + 400]
            for job_type, field, key in chunk:
                batch.set(
                    self.collection.document(key_id(job_type, key)),
                    {
                        "type": job_type,
                        "field": field,
                        "key": key,
                        "at": firestore.SERVER_TIMESTAMP,
                    },
                )
            if writer is None:
                self.connection.commit(batch, len(chunk), "fair_key")

    def keys(
        self, job_type: str, limit: int, after: str | None = None
    ) -> list[tuple[str, str, datetime | None]]:
        """Up to `limit` keys of a type, in document order after the document id `after`: (document
        id, key, version)."""
        query = self.collection.where(filter=FieldFilter("type", "==", job_type)).order_by(
            FieldPath.document_id()
        )
        if after is not None:
            query = query.start_after({FieldPath.document_id(): self.collection.document(after)})
        rows = self.connection.query(query.limit(limit), "fair_keys")
        return [
            (row.id, str(row.fields.get("key")), row.version)
            for row in rows
            if isinstance(row.fields.get("key"), str)
        ]

    def retire(self, doc_id: str, version: datetime | None) -> bool:
        """Delete a key's document if unchanged since read (a job enqueued meanwhile wrote it
        again, and keeps it); True when deleted."""
        batch = self.db.batch()
        ref = self.collection.document(doc_id)
        if version is None:
            batch.delete(ref)
        else:
            batch.delete(ref, option=self.db.write_option(last_update_time=version))
        try:
            self.connection.commit(batch, 1, "fair_key:retire")
        except (Contention, DocumentExists, StoreRefused):
            return False
        return True

    def weights(self) -> dict[str, dict[str, float]]:
        """Every weight set, by type and key (one read)."""
        snap = self.connection.get(self.weights_document, "fair_weights")
        data = (snap.to_dict() or {}) if snap.exists else {}
        raw = data.get("weights")
        out: dict[str, dict[str, float]] = {}
        if isinstance(raw, dict):
            for job_type, keys in raw.items():
                if isinstance(keys, dict):
                    out[str(job_type)] = {
                        str(k): float(w)
                        for k, w in keys.items()
                        if isinstance(w, int | float)
                        and not isinstance(w, bool)
                        and 0 < w <= MAX_WEIGHT
                    }
        return out

    def set_weight(self, job_type: str, key: str, weight: float | None) -> None:
        """Set a key's weight (None: back to 1): one write, merged into the weights document."""
        value: Any = firestore.DELETE_FIELD if weight is None else float(weight)
        self.connection.write(
            lambda: self.weights_document.set(
                {"weights": {job_type: {key: value}}, "updatedAt": firestore.SERVER_TIMESTAMP},
                merge=True,
                retry=None,
            ),
            "write:fair_weight",
        )


__all__ = ["MAX_WEIGHT", "FairKeys", "key_id"]
