"""Fuzzed job documents: what any client could write into ``backgroundJobs``, and a check that each
ended somewhere.

`documents()` is a hypothesis strategy over job documents as a raw Firestore client writes them:
every field of the contract, each present or not, holding a value of any Firestore type (null,
booleans, integers at the int64 edges, NaN and infinities, odd Unicode, bytes, references,
geopoints, timestamps at the edges of their range, arrays, nested maps), statuses that are not
ours, due times far in the past and future, attempts and priorities negative or huge, metadata
that is not a map, and fields nobody defined. `FuzzRun` writes them, delivers each one's
created-event to the real function (functions-framework) while a worker runs beside it, updates
some while they run, and `settled` says whether each ended where a person can see it.

Used by tests/test_fuzz_documents.py (a fixed seed, a count that fits the test command) and by
``python -m bench.fuzz`` (as many as you like, figures printed).
"""

from __future__ import annotations

import base64
import math
import random
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.cloud.firestore_v1 import _helpers
from google.cloud.firestore_v1._helpers import GeoPoint
from google.events.cloud.firestore import DocumentEventData
from hypothesis import strategies as st

from jobs_lib.model.job import Status
from jobs_lib.store import JobStore

OURS = [s.value for s in Status]
INT64 = (-(2**63), 2**63 - 1)
#: Unicode a careless client might send: controls, combining marks, right-to-left, astral planes,
#: surrogates' neighbours.
ODD_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", categories=("L", "M", "N", "P", "S", "Z", "Cc", "Cf")),
    max_size=30,
)
TIMES = st.one_of(
    st.datetimes(
        min_value=datetime(1, 1, 1),
        max_value=datetime(9999, 12, 31, 23, 59, 59),
        timezones=st.just(UTC),
    ),
    st.sampled_from(
        [
            datetime(1, 1, 1, tzinfo=UTC),
            datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
            datetime(1970, 1, 1, tzinfo=UTC),
        ]
    ),
)


def scalars(reference: Any) -> st.SearchStrategy[Any]:
    """One value of every scalar Firestore type."""
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(*INT64),
        st.sampled_from([INT64[0], INT64[1], 0, -1]),
        st.floats(allow_nan=True, allow_infinity=True),
        ODD_TEXT,
        st.binary(max_size=24),
        st.builds(GeoPoint, st.floats(-90, 90), st.floats(-180, 180)),
        TIMES,
        st.just(reference),
    )


def values(reference: Any) -> st.SearchStrategy[Any]:
    """Any Firestore value: scalars, arrays of them, maps nested a few levels."""
    # Firestore holds no array directly inside an array: arrays hold scalars and maps (a few such
    # documents are written by hand).
    return st.recursive(
        scalars(reference),
        lambda inner: (
            st.lists(inner.filter(lambda v: not isinstance(v, list)), max_size=3)
            | st.dictionaries(ODD_TEXT.filter(bool), inner, max_size=3)
        ),
        max_leaves=8,
    )


def documents(reference: Any, now: datetime) -> st.SearchStrategy[dict[str, Any]]:
    """A job document as any client could write it."""
    anything = values(reference)
    good_metadata = st.fixed_dictionaries(
        {"targetUsers": st.lists(st.text("abcdefgh0123456789", min_size=1, max_size=8), max_size=3)}
    )
    due = st.one_of(
        st.just(now - timedelta(seconds=1)),
        st.sampled_from(
            [
                datetime(1, 1, 1, tzinfo=UTC),
                now - timedelta(days=3650),
                now + timedelta(days=3650),
                datetime(9999, 12, 31, tzinfo=UTC),
            ]
        ),
        st.sampled_from(["2025-04-27T05:39:36.941Z", "2999-01-01T00:00:00Z", "soon", ""]),
        anything,
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "type": st.one_of(
                st.sampled_from(
                    [
                        "noop_fuzz",
                        "noop_fuzz",
                        "flaky_fuzz",
                        "process_notifications",
                        "ghost_type",
                        "",
                    ]
                ),
                anything,
            ),
            "status": st.one_of(
                st.sampled_from(
                    [
                        "pending",
                        "pending",
                        "pending",
                        None,
                        "in_progress",
                        "completed",
                        "failed",
                        "cancelled",
                        "done",
                        "x",
                        "PENDING",
                    ]
                ),
                anything,
            ),
            "metadata": st.one_of(
                good_metadata,
                st.dictionaries(ODD_TEXT.filter(bool), anything, max_size=4),
                anything,
            ),
            "createdAt": st.one_of(TIMES, st.just("2025-04-27T05:39:36.941Z"), anything),
            "scheduledFor": due,
            "priority": st.one_of(st.integers(-10, 10), st.sampled_from(list(INT64)), anything),
            "maxAttempts": st.one_of(st.integers(-3, 5), st.sampled_from(list(INT64)), anything),
            "attempts": st.one_of(st.integers(0, 5), st.sampled_from(list(INT64)), anything),
            "cancelRequested": st.one_of(st.booleans(), anything),
            "lease": st.one_of(
                st.fixed_dictionaries({"holder": ODD_TEXT, "token": ODD_TEXT}), anything
            ),
            "leaseExpiresAt": st.one_of(TIMES, anything),
            "orgId": st.one_of(ODD_TEXT, anything),
            "createdBy": st.one_of(ODD_TEXT, anything),
            "error": anything,
            "progress": anything,
            "unknownField": anything,
        },
    )


def special_documents(now: datetime) -> dict[str, dict[str, Any]]:
    """Documents at Firestore's limits, written by hand: a string near 1 MiB, maps 20 deep (the
    most) and 21 deep."""
    deep20: dict[str, Any] = {"leaf": 1}
    for _ in range(18):  # the document's top level and metadata make 20 levels of maps
        deep20 = {"d": deep20}
    deep21: dict[str, Any] = {"d": deep20}
    return {
        "edge-1mib-string": {
            "type": "noop_fuzz",
            "status": "pending",
            "metadata": {"blob": "x" * 1_000_000},
        },
        "edge-deep-20": {"type": "noop_fuzz", "status": "pending", "metadata": deep20},
        "edge-deep-21": {"type": "noop_fuzz", "status": "pending", "metadata": deep21},
        "edge-int64": {
            "type": "noop_fuzz",
            "status": "pending",
            "priority": INT64[1],
            "maxAttempts": INT64[1],
            "attempts": INT64[0],
            "metadata": {"n": INT64[0]},
        },
        "edge-nan": {
            "type": "noop_fuzz",
            "status": "pending",
            "priority": math.nan,
            "metadata": {"x": math.inf},
        },
        "edge-ancient": {
            "type": "noop_fuzz",
            "status": "pending",
            "scheduledFor": datetime(1, 1, 1, tzinfo=UTC),
            "createdAt": datetime(1, 1, 1, tzinfo=UTC),
        },
        "edge-array-in-array": {
            "type": "noop_fuzz",
            "status": "pending",
            "metadata": {"grid": [[1, 2], [3]]},
        },
    }


def event_body(store: JobStore, job_id: str, *, raw: bool = False) -> bytes:
    """The created-event's data for a document as it is now: raw DocumentEventData protobuf (as
    Eventarc sends it) or, by default, its base64 text (as the emulator sends it)."""
    snap = store.ref(job_id).get()
    message = DocumentEventData.pb()()
    message.value.name = snap.reference._document_path
    for key, value in (snap.to_dict() or {}).items():
        message.value.fields[key].ParseFromString(
            _helpers.encode_value(value)._pb.SerializeToString()
        )
    message.value.update_time.CopyFrom(snap.update_time.timestamp_pb())
    message.value.create_time.CopyFrom(snap.create_time.timestamp_pb())
    data = message.SerializeToString()
    return data if raw else base64.b64encode(data)


def event_headers(job_id: str, project: str) -> dict[str, str]:
    """Headers of the emulator's binary-mode CloudEvent for a created document."""
    return {
        "ce-specversion": "1.0",
        "ce-type": "google.cloud.firestore.document.v1.created",
        "ce-source": f"//firestore.googleapis.com/projects/{project}/databases/(default)",
        "ce-id": f"evt-{job_id}-{random.random()}",
        "ce-subject": f"documents/backgroundJobs/{job_id}",
        "ce-document": f"backgroundJobs/{job_id}",
        "ce-project": project,
        "ce-database": "(default)",
        "ce-namespace": "(default)",
        "ce-location": "nam5",
        "ce-time": datetime.now(UTC).isoformat(),
        "Content-Type": "application/protobuf",
    }


@dataclass
class Settled:
    """How the fuzzed documents ended."""

    written: int = 0
    refused_by_firestore: int = 0
    completed: int = 0
    failed_with_reason: int = 0
    cancelled: int = 0
    written_final: int = 0
    pending_future: int = 0
    unsettled: list[str] = field(default_factory=list)
    failed_without_reason: list[str] = field(default_factory=list)
    function_errors: int = 0
    events: int = 0
    updated_while_running: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {k: (len(v) if isinstance(v, list) else v) for k, v in self.__dict__.items()}


def future(value: Any, now: datetime) -> bool:
    """A due time a pending job may rightly wait for."""
    from jobs_lib.model.clock import MAX_UTC_OFFSET, parse_time

    try:
        when = parse_time(value)
    except Exception:
        return False
    return when is not None and when > now - MAX_UTC_OFFSET


def settled(store: JobStore, written: dict[str, dict[str, Any]], result: Settled) -> list[str]:
    """The ids not yet somewhere a person can see; fills `result` with how the others ended."""
    now = store.now()
    open_ids = []
    counts = {"completed": 0, "failed": 0, "cancelled": 0, "final": 0, "future": 0}
    without_reason = []
    for job_id, as_written in written.items():
        job = store.get(job_id)
        if job is None:
            continue  # an app-written document the cleanup may delete once finished; none here
        was_final = as_written.get("status") in ("completed", "failed", "cancelled")
        if job.status is Status.COMPLETED:
            counts["completed"] += 1
        elif job.status in (Status.FAILED, Status.CANCELLED):
            if (
                was_final
                and job.version is not None
                and job.raw.get("status") == as_written.get("status")
            ):
                counts["final"] += 1  # written finished by the app; left as it was
            else:
                counts["failed" if job.status is Status.FAILED else "cancelled"] += 1
                if not (isinstance(job.error, str) and job.error.strip()):
                    without_reason.append(job_id)
        elif job.status is Status.PENDING and future(job.raw.get("scheduledFor"), now):
            counts["future"] += 1
        else:
            open_ids.append(job_id)
    result.completed, result.failed_with_reason, result.cancelled = (
        counts["completed"],
        counts["failed"],
        counts["cancelled"],
    )
    result.written_final, result.pending_future = counts["final"], counts["future"]
    result.failed_without_reason = without_reason
    result.unsettled = open_ids
    return open_ids


class Mutator:
    """Changes fields of documents already written while the runners work on them."""

    def __init__(self, store: JobStore, ids: list[str], rng: random.Random) -> None:
        self.store = store
        self.ids = ids
        self.rng = rng
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            if not self.ids:
                continue
            job_id = self.rng.choice(self.ids)
            change = self.rng.choice(
                [
                    {"note": "edited while running"},
                    {"metadata.extra": 1},
                    {"cancelRequested": True},
                    {"priority": 3},
                ]
            )
            try:
                self.store.ref(job_id).update(change)
                self.count += 1
            except (
                Exception
            ):  # deleted meanwhile, or metadata not a map: an app's write can fail too
                pass

    def start(self) -> Mutator:
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.count


__all__ = [
    "Mutator",
    "Settled",
    "documents",
    "event_body",
    "event_headers",
    "settled",
    "special_documents",
]
