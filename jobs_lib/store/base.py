"""Plumbing shared by the stores: the client, retries, operation counts, fenced-write types."""

from __future__ import annotations

import bisect
import enum
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from jobs_lib import wire
from jobs_lib.clock import ServerClock, to_iso
from jobs_lib.config import Settings, firestore_client
from jobs_lib.job import Job

log = logging.getLogger("jobs_lib.store")

#: Errors worth another try: the connection dropped, the server was busy.
TRANSIENT = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.Aborted,
    gexc.ResourceExhausted,
    gexc.Unknown,
)
#: gRPC status codes in BatchWrite results.
_OK, _INVALID_ARGUMENT, _NOT_FOUND, _FAILED_PRECONDITION = 0, 3, 5, 9

#: Auto-ids use these 62 characters; partitions split the id space on them.
_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
PARTITIONS = 16
#: Lower bounds of the id-range partitions (the first has none, the last no upper bound).
PARTITION_BOUNDS: tuple[str | None, ...] = (None, *tuple(_ID_ALPHABET[round(i * len(_ID_ALPHABET) / PARTITIONS)] for i in range(1, PARTITIONS)))


def partition_of(job_id: str) -> int:
    """The partition (slice of the id space) a document id falls in."""
    return bisect.bisect_right(PARTITION_BOUNDS[1:], job_id)  # type: ignore[type-var]


class OpStats:
    """Counts of billed Firestore operations, as Firestore bills them, in total and by purpose."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reads = 0
        self.writes = 0
        self.queries = 0
        self.by_kind: dict[str, dict[str, int]] = {}

    def add(self, reads: int = 0, writes: int = 0, queries: int = 0, kind: str = "other") -> None:
        """Count one request."""
        with self._lock:
            self.reads += reads
            self.writes += writes
            self.queries += queries
            entry = self.by_kind.setdefault(kind, {"calls": 0, "reads": 0, "writes": 0})
            entry["calls"] += 1
            entry["reads"] += reads
            entry["writes"] += writes

    def snapshot(self) -> dict[str, Any]:
        """The counts so far."""
        with self._lock:
            return {
                "reads": self.reads,
                "writes": self.writes,
                "queries": self.queries,
                "byKind": {k: dict(v) for k, v in sorted(self.by_kind.items())},
            }


@dataclass
class Claim:
    """A job this process holds: the token that fences its writes, and the version to write on."""

    job: Job
    token: str
    holder: str
    version: datetime
    attempt: int
    lease_expires_at: datetime
    cancel_requested: bool = False
    lost: bool = False

    @property
    def job_id(self) -> str:
        """The job's document id."""
        return self.job.id


class WriteStatus(enum.Enum):
    """What became of a fenced write."""

    OK = "ok"
    LOST = "lost"  # the lease is no longer ours: the write was refused
    INVALID = "invalid"  # Firestore refused the content (too large, bad value)
    ERROR = "error"  # Firestore could not be reached in time


@dataclass
class WriteOutcome:
    """The result of one fenced write."""

    status: WriteStatus
    version: datetime | None = None
    cancel_requested: bool = False
    detail: str = ""


@dataclass
class FencedWrite:
    """Fields to write to a claimed job, if the claim still holds."""

    claim: Claim
    fields: dict[str, Any]
    final: bool = False
    #: Filled in by `JobStore.commit`.
    outcome: WriteOutcome | None = field(default=None)


class StoreBase:
    """A Firestore client with retries, a server-calibrated clock and operation counts."""

    def __init__(
        self,
        settings: Settings | None = None,
        db: Any | None = None,
        clock: ServerClock | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self._db = db
        self.clock = clock or ServerClock()
        self.stats = OpStats()

    @property
    def db(self) -> Any:
        """The Firestore client, created on first use."""
        if self._db is None:
            self._db = firestore_client(self.settings)
        return self._db

    def now(self) -> datetime:
        """Server time, as the clock knows it."""
        return self.clock.now()

    def time_value(self, moment: datetime) -> Any:
        """A time as the runner writes it (timestamp, or ISO string when configured)."""
        return to_iso(moment) if self.settings.timestamps == "iso" else moment

    def _now_value(self) -> Any:
        return to_iso(self.now()) if self.settings.timestamps == "iso" else firestore.SERVER_TIMESTAMP

    def _retrying(self, fn: Callable[[], Any], budget: float = 30.0) -> Any:
        """Call `fn`, retrying transient errors with backoff for up to `budget` seconds."""
        deadline = time.monotonic() + budget
        delay = 0.1
        while True:
            try:
                return fn()
            except TRANSIENT as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("firestore call failed, retrying in %.1fs: %s", delay, exc)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _query(self, query: Any, label: str) -> list[tuple[str, dict[str, Any], datetime]]:
        """Run a query; (id, fields, update time) per document. Counts as Firestore bills it."""
        sent = time.time()
        documents, read_time = self._retrying(lambda: wire.run_query(self.db, query))
        received = time.time()
        if read_time is not None:
            self.clock.observe(read_time, sent, received)
        self.stats.add(reads=max(1, len(documents)), queries=1, kind=f"query:{label}")
        return documents  # type: ignore[no-any-return]

    def _batch_write(self, prefix: str, writes: Sequence[tuple[str, dict[str, Any], datetime | None]], kind: str, *, create: bool = False) -> list[tuple[int, datetime | None, str]]:
        """One BatchWrite RPC: each write applied on its own, conditioned on its version
        (or, with `create`, on there being no document). Ids are relative to `prefix`.

        Returns (grpc code, new update time, message) per write.
        """
        pbs = [wire.update_write(prefix + doc_id, fields, version, create=create) for doc_id, fields, version in writes]
        sent = time.time()
        response = self._retrying(lambda: wire.batch_write(self.db, pbs))
        received = time.time()
        results: list[tuple[int, datetime | None, str]] = []
        statuses = response.status
        update_time: datetime | None
        for i, write_result in enumerate(response.write_results):
            code = statuses[i].code if i < len(statuses) else _OK
            message = statuses[i].message if i < len(statuses) else ""
            update_time = wire.from_timestamp_pb(write_result.update_time) if code == _OK else None
            results.append((code, update_time, message))
        won = sum(code == _OK for code, _t, _m in results)
        if won:
            self.stats.add(writes=won, kind=f"write:{kind}")
        if len(results) > won:
            self.stats.add(writes=len(results) - won, kind=f"write:{kind}:refused")
        for _code, update_time, _message in results:
            if update_time is not None:
                self.clock.observe(update_time, sent, received)
                break
        return results
