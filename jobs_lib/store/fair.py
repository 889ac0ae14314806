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
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.field_path import FieldPath

from jobs_lib.errors import Contention, DocumentExists, StoreRefused
from jobs_lib.store.base import StorePart

#: A weight is a share of turns: 1 is an equal share; at most this.
MAX_WEIGHT = 1000.0
#: A key's document names at most this many of its newest jobs.
MAX_RECENT = 500


@dataclass(frozen=True)
class FairKey:
    """A key of a fair type with pending jobs: its document, version, and newest job ids."""

    doc_id: str
    key: str
    version: datetime | None
    recent: tuple[str, ...] = ()
    #: How many jobs were ever noted for the key.
    count: int = 0


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

    def register(
        self, entries: Sequence[tuple[str, str, str, str | None]], writer: Any = None
    ) -> None:
        """Note that these (type, field, key, job id) have pending jobs: one write per key, in one
        commit (no precondition), naming the key's newest job ids (``recent``, at most
        `MAX_RECENT`), so that runners fetch new jobs of a quiet key by id instead of querying for
        them. With `writer` (the caller's batch or transaction), the writes join it, committed
        with the caller's jobs."""
        by_key: dict[tuple[str, str, str], list[str]] = {}
        for job_type, field, key, job_id in entries:
            ids = by_key.setdefault((job_type, field, key), [])
            if job_id is not None and job_id not in ids:
                ids.append(job_id)
        items = sorted(by_key.items())
        for start in range(0, len(items), 400):
            batch = writer if writer is not None else self.db.batch()
            chunk = items[start : start + 400]
            for (job_type, field, key), ids in chunk:
                batch.set(
                    self.collection.document(key_id(job_type, key)),
                    {
                        "type": job_type,
                        "field": field,
                        "key": key,
                        "recent": ids[-MAX_RECENT:],
                        # Jobs ever noted: a runner that sees it grow by more than `recent` holds
                        # knows it missed some (two enqueues between its reads) and queries.
                        "count": firestore.Increment(len(ids)),
                        "at": firestore.SERVER_TIMESTAMP,
                    },
                )
            if writer is None:
                self.connection.commit(batch, len(chunk), "fair_key")

    def keys(self, job_type: str, limit: int, after: str | None = None) -> list[FairKey]:
        """Up to `limit` keys of a type, in document order after the document id `after`."""
        query = self.collection.where(filter=FieldFilter("type", "==", job_type)).order_by(
            FieldPath.document_id()
        )
        if after is not None:
            query = query.start_after({FieldPath.document_id(): self.collection.document(after)})
        rows = self.connection.query(query.limit(limit), "fair_keys")
        out = []
        for row in rows:
            key, recent = row.fields.get("key"), row.fields.get("recent")
            count = row.fields.get("count")
            if isinstance(key, str):
                ids = (
                    tuple(i for i in recent if isinstance(i, str))
                    if isinstance(recent, list)
                    else ()
                )
                noted = count if isinstance(count, int) and not isinstance(count, bool) else 0
                out.append(FairKey(row.id, key, row.version, ids, noted))
        return out

    def types(self, limit: int = 200) -> dict[str, str]:
        """The fair types that have keys with pending jobs, and the field of each (a read of up to
        `limit` key documents): what `jobs stats` shows without the handlers at hand."""
        rows = self.connection.query(self.collection.limit(limit), "fair_types")
        return {
            str(row.fields["type"]): str(row.fields.get("field", ""))
            for row in rows
            if isinstance(row.fields.get("type"), str)
        }

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


__all__ = ["MAX_RECENT", "MAX_WEIGHT", "FairKey", "FairKeys", "key_id"]
