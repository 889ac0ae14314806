"""The connection every store part shares: the client, retries, error translation, operation counts.

`Connection` is the one place a Google API exception is caught and turned
into jobs_lib's own (`jobs_lib.errors.StoreError` and its children), so no
caller outside ``jobs_lib.store`` ever imports ``google.api_core``.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NamedTuple

from google.api_core import exceptions as gexc
from google.cloud import firestore

from jobs_lib.config import Settings
from jobs_lib.errors import Contention, DocumentExists, StoreError, StoreRefused, StoreUnavailable
from jobs_lib.model.clock import ServerClock, to_iso
from jobs_lib.store import wire

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


class Code(enum.IntEnum):
    """The gRPC status codes a BatchWrite answers per write (google.rpc.Code)."""

    OK = 0
    INVALID_ARGUMENT = 3
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    FAILED_PRECONDITION = 9


class WriteResult(NamedTuple):
    """One write of a BatchWrite: its status code, its new update time (when it was applied) and
    Firestore's message."""

    code: int
    update_time: datetime | None
    message: str

    @property
    def ok(self) -> bool:
        return self.code == Code.OK

    @property
    def exists(self) -> bool:
        """A create found the id taken."""
        return self.code == Code.ALREADY_EXISTS


#: Where a document should hold the time Firestore writes it (a create's ``createdAt``).
SERVER_TIME = firestore.SERVER_TIMESTAMP

#: Shard lanes. Every job carries ``shard`` (0 to SHARDS - 1, from its id, written once: at
#: creation, or by the runner's first write for documents apps wrote without one), and every query
#: that ranges over a timestamp reads the shard lanes. Each index with a sequential value (a
#: timestamp near "now") then receives its writes in SHARDS key ranges instead of one: Firestore
#: sustains about 500 writes/s per such range, so 30 shards carry 10,000 jobs/s at 333 writes/s per
#: range (bench/capacity.py). The runner's lanes read a contiguous range of shards (``shard >= a``,
#: ``shard <= b``, ordered by shard, then the timestamp: Firestore's inequality filters on several
#: fields), starting where the last full page ended; listings need one order across shards and read
#: ``shard in [0..29]`` (30 is also the most values one ``in`` takes). In the emulator an ``in``
#: over 30 values costs about 20 plain queries (2.2 s against 0.12 s over 10,000 jobs), a range
#: about 1.3.
SHARDS = 30
#: Firestore's auto-ids use these 62 characters.
ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ALL_SHARDS: tuple[int, ...] = tuple(range(SHARDS))
#: A contended worker reads one partition of the backlog: partition p holds the shards 2p and 2p +
#: 1.
PARTITIONS = 15


def shard_of(job_id: str) -> int:
    """The shard a job id belongs to (a stable hash: any process computes the same)."""
    return zlib.crc32(job_id.encode()) % SHARDS


def valid_shard(value: object) -> bool:
    """True for a shard value the lanes read (an app may have written none, or anything)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < SHARDS


def with_shard(job_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """A new job's fields with its shard, as every job the library writes: the ordered lanes read
    only shard lanes."""
    return data if valid_shard(data.get("shard")) else {**data, "shard": shard_of(job_id)}


def partition_of(job_id: str) -> int:
    """The partition a job id falls in."""
    return shard_of(job_id) * PARTITIONS // SHARDS


def partition_shards(partition: int) -> tuple[int, ...]:
    """The shards of one partition (contiguous: the lanes read a partition as one range of
    ``shard``)."""
    return tuple(shard for shard in ALL_SHARDS if shard * PARTITIONS // SHARDS == partition)


def translate(exc: Exception) -> StoreError:
    """The jobs_lib error for a Google API error."""
    if isinstance(exc, gexc.AlreadyExists):
        return DocumentExists(str(exc))
    if isinstance(exc, gexc.FailedPrecondition | gexc.Conflict):
        return Contention(str(exc))
    if isinstance(exc, TRANSIENT):
        return StoreUnavailable(f"Firestore could not be reached in time: {exc}")
    return StoreRefused(str(exc))


@contextmanager
def translated() -> Iterator[None]:
    """Raise Google API errors as jobs_lib's `StoreError`s."""
    try:
        yield
    except gexc.GoogleAPIError as exc:
        raise translate(exc) from exc


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


class Connection:
    """A Firestore client with retries, a server-calibrated clock and operation counts.

    One per `jobs_lib.app.App`; every store part (jobs, partitions, slots,
    schedules, rate windows) is built on it, so they share one client, one
    clock and one set of counts.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        db: Any | None = None,
        clock: ServerClock | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self._db = db
        self._db_lock = threading.Lock()
        self.clock = clock or ServerClock()
        self.stats = OpStats()
        #: time.monotonic() of the last call Firestore answered successfully (what a readiness probe
        #: looks at).
        self.last_answer: float | None = None

    @property
    def db(self) -> Any:
        """The Firestore client, created on first use (never at import: cold starts stay cheap)."""
        if self._db is None:
            with self._db_lock:
                if self._db is None:
                    self._db = firestore.Client(
                        project=self.settings.project, database=self.settings.database
                    )
        return self._db

    def now(self) -> datetime:
        """Server time, as the clock knows it."""
        return self.clock.now()

    def time_value(self, moment: datetime) -> Any:
        """A time as the runner writes it (timestamp, or ISO string when configured)."""
        return to_iso(moment) if self.settings.timestamps == "iso" else moment

    def now_value(self) -> Any:
        """ "Now" as the runner writes it: the server's timestamp, or an ISO string when
        configured."""
        return (
            to_iso(self.now()) if self.settings.timestamps == "iso" else firestore.SERVER_TIMESTAMP
        )

    def retrying(self, fn: Callable[[], Any], budget: float = 30.0) -> Any:
        """Call `fn`, retrying transient errors with backoff for up to `budget` seconds.

        Raises `StoreUnavailable` once the budget is spent, and the other
        `StoreError`s for errors that retrying cannot help.
        """
        deadline = time.monotonic() + budget
        delay = 0.1
        while True:
            try:
                result = fn()
            except TRANSIENT as exc:
                if time.monotonic() + delay > deadline:
                    raise translate(exc) from exc
                log.warning("firestore call failed, retrying in %.1fs: %s", delay, exc)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            except gexc.GoogleAPIError as exc:
                raise translate(exc) from exc
            self.last_answer = time.monotonic()
            return result

    def get(self, ref: Any, kind: str) -> Any:
        """Read one document (a snapshot, which may not exist); observes the server's clock."""
        sent = time.time()
        snap = self.retrying(lambda: ref.get(retry=None))
        if snap.read_time is not None:
            self.clock.observe(snap.read_time, sent, time.time())
        self.stats.add(reads=1, kind=f"read:{kind}")
        return snap

    def get_all(self, refs: Sequence[Any], kind: str) -> dict[str, Any]:
        """Read several documents in one call: snapshots that exist, by id."""
        if not refs:
            return {}
        snaps = self.retrying(lambda: list(self.db.get_all(list(refs))))
        self.stats.add(reads=len(refs), kind=f"read:{kind}")
        return {snap.id: snap for snap in snaps if snap.exists}

    def query(self, query: Any, label: str) -> list[wire.Row]:
        """Run a query; a `wire.Row` (id, fields, update time, create time) per document. Counts as
        Firestore bills it."""
        sent = time.time()
        documents, read_time = self.retrying(lambda: wire.run_query(self.db, query))
        received = time.time()
        if read_time is not None:
            self.clock.observe(read_time, sent, received)
        self.stats.add(reads=max(1, len(documents)), queries=1, kind=f"query:{label}")
        return documents  # type: ignore[no-any-return]

    def count(self, query: Any, label: str) -> int:
        """A count aggregation (billed one read per 1,000 index entries, at least one)."""
        result: Any = self.retrying(lambda: query.count().get(retry=None))
        value = int(result[0][0].value)
        self.stats.add(reads=max(1, -(-value // 1000)), queries=1, kind=f"count:{label}")
        return value

    def commit(self, batch: Any, writes: int, kind: str) -> list[Any]:
        """Commit a write batch atomically; a refused precondition raises `Contention` or
        `DocumentExists`."""
        try:
            results = self.retrying(lambda: batch.commit(retry=None))
        except (Contention, DocumentExists, StoreRefused):
            self.stats.add(writes=writes, kind=f"write:{kind}:refused")
            raise
        self.stats.add(writes=writes, kind=f"write:{kind}")
        return list(results)

    def write(self, fn: Callable[[], Any], kind: str, writes: int = 1) -> Any:
        """One write call (set, create, update, delete) with retries; returns its result."""
        result = self.retrying(fn)
        self.stats.add(writes=writes, kind=kind)
        return result

    def batch_write(
        self,
        prefix: str,
        writes: Sequence[tuple[str, dict[str, Any], datetime | None]],
        kind: str,
        *,
        create: bool = False,
        server_times: list[list[datetime]] | None = None,
    ) -> list[WriteResult]:
        """One BatchWrite RPC: each write applied on its own, conditioned on its version
        (or, with `create`, on there being no document). Ids are relative to `prefix`.

        Returns a `WriteResult` per write; with `server_times`, also fills
        it with the values Firestore gave each write's SERVER_TIMESTAMP fields, in field order.
        """
        pbs = [
            wire.update_write(prefix + doc_id, fields, version, create=create)
            for doc_id, fields, version in writes
        ]
        sent = time.time()
        response = self.retrying(lambda: wire.batch_write(self.db, pbs))
        received = time.time()
        results: list[WriteResult] = []
        statuses = response.status
        update_time: datetime | None
        for i, write_result in enumerate(response.write_results):
            code = statuses[i].code if i < len(statuses) else Code.OK
            message = statuses[i].message if i < len(statuses) else ""
            update_time = (
                wire.from_timestamp_pb(write_result.update_time) if code == Code.OK else None
            )
            results.append(WriteResult(code, update_time, message))
            if server_times is not None:
                server_times.append(
                    [
                        wire.from_timestamp_pb(v.timestamp_value)
                        for v in write_result.transform_results
                        if v.HasField("timestamp_value")
                    ]
                )
        won = sum(result.ok for result in results)
        if won:
            self.stats.add(writes=won, kind=f"write:{kind}")
        if len(results) > won:
            self.stats.add(writes=len(results) - won, kind=f"write:{kind}:refused")
        for _code, update_time, _message in results:
            if update_time is not None:
                self.clock.observe(update_time, sent, received)
                break
        return results


class StorePart:
    """A part of the store: built on a shared `Connection` (or its own, from settings)."""

    def __init__(
        self,
        settings: Settings | None = None,
        db: Any | None = None,
        clock: ServerClock | None = None,
        *,
        connection: Connection | None = None,
    ) -> None:
        self.connection = connection or Connection(settings, db, clock)

    @property
    def settings(self) -> Settings:
        """The settings the connection was made with."""
        return self.connection.settings

    @property
    def db(self) -> Any:
        """The Firestore client."""
        return self.connection.db

    @property
    def clock(self) -> ServerClock:
        """The server-calibrated clock."""
        return self.connection.clock

    @property
    def stats(self) -> OpStats:
        """Billed operations counted so far."""
        return self.connection.stats

    def now(self) -> datetime:
        """Server time, as the clock knows it."""
        return self.connection.now()

    def time_value(self, moment: datetime) -> Any:
        """A time as the runner writes it."""
        return self.connection.time_value(moment)


__all__ = [
    "ALL_SHARDS",
    "ID_ALPHABET",
    "PARTITIONS",
    "SHARDS",
    "TRANSIENT",
    "Connection",
    "OpStats",
    "StorePart",
    "partition_of",
    "partition_shards",
    "shard_of",
    "translate",
    "translated",
    "valid_shard",
    "with_shard",
]
