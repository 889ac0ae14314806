"""Minute summaries of outcomes, for the console's chart: one small document per process per minute.

Counting completions per minute over hours with count aggregations would cost
a query per minute and type; scanning finished jobs would grow with the
collection. Instead each process adds up its own outcomes in memory
(`jobs_lib.engine.throughput.MinuteCounter`) and writes them, a few times a minute,
into ``{collection}_stats/{minute}-{process}`` (one writer per document, so
no document is hot). A chart of the last hours reads those documents once;
minutes that can no longer change are cached by the reader.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from jobs_lib.store.base import StorePart

#: Minute summaries are kept this long (a TTL policy on expireAt deletes them).
KEEP = timedelta(days=3)


def minute_key(minute: datetime) -> str:
    """The id prefix of a minute: ``YYYYMMDDHHMM`` in UTC."""
    return minute.strftime("%Y%m%d%H%M")


class MinuteStats(StorePart):
    """``{collection}_stats``: counts of outcomes per type, per minute, per writing process."""

    @property
    def collection(self) -> Any:
        """The minute summaries collection (``backgroundJobs_stats``)."""
        return self.db.collection(f"{self.settings.collection}_stats")

    def add(self, minute: datetime, holder: str, counts: dict[str, dict[str, int]]) -> None:
        """Add `counts` (type -> outcome -> n) to this process's document for `minute` (one
        write)."""
        process = hashlib.sha256(holder.encode()).hexdigest()[:12]
        fields: dict[str, Any] = {
            "minute": minute,
            "expireAt": minute + KEEP,
            "counts": {
                job_type: {outcome: firestore.Increment(n) for outcome, n in by_outcome.items()}
                for job_type, by_outcome in counts.items()
            },
        }
        ref = self.collection.document(f"{minute_key(minute)}-{process}")
        self.connection.write(lambda: ref.set(fields, merge=True, retry=None), "write:minute_stats")

    def since(self, start: datetime) -> list[tuple[datetime, dict[str, dict[str, int]]]]:
        """Every summary from `start` on: (minute, type -> outcome -> n), one read per document."""
        query = self.collection.where(filter=FieldFilter("minute", ">=", start)).order_by("minute")
        rows = []
        for _id, fields, _version, _created in self.connection.query(query, "minute_stats"):
            minute, counts = fields.get("minute"), fields.get("counts")
            if isinstance(minute, datetime) and isinstance(counts, dict):
                rows.append(
                    (
                        minute,
                        {
                            t: {o: int(n) for o, n in c.items() if isinstance(n, int)}
                            for t, c in counts.items()
                            if isinstance(c, dict)
                        },
                    )
                )
        return rows


__all__ = ["KEEP", "MinuteStats", "minute_key"]
