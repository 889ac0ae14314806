"""Owner-scoped job and schedule listings for the REST API.

`JobListing` pages through one user's (or one organisation's) jobs, newest
first, optionally filtered by status and type, with an opaque cursor.

``createdAt`` may hold a Firestore timestamp (what jobs_lib and server-side
apps write) or an ISO-8601 string (what browser apps write), and
Firestore orders values by type before value: an ``orderBy`` on ``createdAt``
would put every string after every timestamp, and a range on a timestamp never
sees a string. So a page is read from two *lanes*, each one typed query:

* the timestamp lane, ``createdAt >= 0001-01-01T00:00:00Z`` (a timestamp
  bound matches only timestamps), ordered ``createdAt desc, __name__ desc``;
* the string lane, ``createdAt >= ""`` (only strings), in the same order.
  ISO strings in UTC (``...Z``, as apps write them) sort chronologically as
  text; a string with another offset is placed by its text within its lane.

Each lane is read for ``pageSize + 1`` documents after its own cursor, the
two are merged by the instant they denote (then by id), the first
``pageSize`` are the page, and the page token records each lane's last
document taken (or that the lane is exhausted). Because each lane keeps its
own order and cursor, no job is skipped or repeated across pages, whatever
the mix of types. A page costs two queries and at most ``2 * (pageSize + 1)``
document reads. A job whose ``createdAt`` is missing or neither kind is not
listed (jobs_lib always writes one), nor is one outside the shard lanes until the runner has
given it its shard (at once for a job the created-event or a tick sees).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from jobs_lib.errors import InvalidPageToken, TimeParseError
from jobs_lib.model.clock import parse_time, to_iso
from jobs_lib.model.job import Job
from jobs_lib.store.base import ALL_SHARDS
from jobs_lib.store.jobs import JobStore
from jobs_lib.store.results import encodable
from jobs_lib.store.schedules import Schedule

#: The smallest Firestore timestamp: ``createdAt >= TIMESTAMP_FLOOR`` matches every timestamp and
#: nothing else.
TIMESTAMP_FLOOR = datetime(1, 1, 1, tzinfo=UTC)
#: The smallest string: ``createdAt >= STRING_FLOOR`` matches every string and nothing else.
STRING_FLOOR = ""
#: Fields a listing may be scoped by.
SCOPE_FIELDS = ("createdBy", "orgId")
MAX_PAGE_SIZE = 100


@dataclass(frozen=True)
class Scope:
    """Whose jobs a listing shows: ``createdBy == value``, ``orgId == value``, or (field None)
    everyone's."""

    field: str | None
    value: str | None

    def __post_init__(self) -> None:
        if self.field is not None and self.field not in SCOPE_FIELDS:
            raise ValueError(f"a listing is scoped by one of {SCOPE_FIELDS}, not {self.field!r}")


@dataclass(frozen=True)
class Page:
    """One page of jobs, newest first, and the token of the next page (None on the last)."""

    jobs: list[Job]
    next_token: str | None


@dataclass
class _Lane:
    floor: Any
    cursor: tuple[Any, str] | None = None
    done: bool = False
    ceiling: Any = None


def _lanes(after: datetime | None, before: datetime | None) -> dict[str, _Lane]:
    """The two typed lanes, bounded by a creation-time range (each bound in its lane's own type)."""
    return {
        "t": _Lane(max(after, TIMESTAMP_FLOOR) if after else TIMESTAMP_FLOOR, ceiling=before),
        "s": _Lane(
            to_iso(after) if after else STRING_FLOOR, ceiling=to_iso(before) if before else None
        ),
    }


def _sort_key(job: Job) -> tuple[datetime, str]:
    """The instant a job's createdAt denotes (unreadable strings sort oldest), then its id."""
    value = job.raw.get("createdAt")
    try:
        moment = parse_time(value)
    except TimeParseError:
        moment = None
    return (moment or TIMESTAMP_FLOOR, job.id)


class JobListing:
    """Newest-first pages of one owner's jobs, over both kinds of ``createdAt`` (see module
    docs)."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def page(
        self,
        scope: Scope,
        *,
        status: str | None = None,
        job_type: str | None = None,
        page_size: int = 20,
        page_token: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> Page:
        """A page of jobs in `scope`, filtered by `status`, `job_type` and creation time
        (``created_after <= createdAt < created_before``); raises `InvalidPageToken`."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}")
        fingerprint = self._fingerprint(scope, status, job_type, created_after, created_before)
        lanes = (
            self._decode(page_token, fingerprint, created_after, created_before)
            if page_token
            else _lanes(created_after, created_before)
        )
        fetched: dict[str, list[Job]] = {}
        for name, lane in lanes.items():
            fetched[name] = (
                []
                if lane.done
                else self._read_lane(scope, status, job_type, lane, page_size + 1, name)
            )
        taken: list[Job] = []
        heads = {name: 0 for name in lanes}
        while len(taken) < page_size:
            candidates = [
                (name, fetched[name][heads[name]])
                for name in lanes
                if heads[name] < len(fetched[name])
            ]
            if not candidates:
                break
            name, job = max(candidates, key=lambda item: _sort_key(item[1]))
            taken.append(job)
            heads[name] += 1
            lanes[name].cursor = (job.raw.get("createdAt"), job.id)
        for name, lane in lanes.items():
            if (
                not lane.done
                and len(fetched[name]) <= page_size
                and heads[name] == len(fetched[name])
            ):
                lane.done = True  # read to its end and all of it shown
        more = any(not lane.done for lane in lanes.values())
        return Page(taken, self._encode(lanes, fingerprint) if more else None)

    # -- internals --------------------------------------------------------------------------

    def _lane_query(
        self, scope: Scope, status: str | None, job_type: str | None, lane: _Lane
    ) -> Any:
        # In the shard lanes, like the runner's queries: the createdAt indexes then take each status
        # change of a job in one of SHARDS ranges, never all in one (see jobs_lib.store.base).
        query = self.store.collection.where(filter=FieldFilter("shard", "in", list(ALL_SHARDS)))
        if scope.field is not None:
            query = query.where(filter=FieldFilter(scope.field, "==", scope.value))
        if status:
            query = query.where(filter=FieldFilter("status", "==", status))
        if job_type:
            query = query.where(filter=FieldFilter("type", "==", job_type))
        query = query.where(filter=FieldFilter("createdAt", ">=", lane.floor))
        if lane.ceiling is not None:
            query = query.where(filter=FieldFilter("createdAt", "<", lane.ceiling))
        query = query.order_by("createdAt", direction=firestore.Query.DESCENDING).order_by(
            "__name__", direction=firestore.Query.DESCENDING
        )
        if lane.cursor is not None:
            value, job_id = lane.cursor
            query = query.start_after({"createdAt": value, "__name__": self.store.ref(job_id)})
        return query

    def _read_lane(
        self,
        scope: Scope,
        status: str | None,
        job_type: str | None,
        lane: _Lane,
        limit: int,
        name: str,
    ) -> list[Job]:
        query = self._lane_query(scope, status, job_type, lane).limit(limit)
        return self.store.run_query(query, f"list_{'timestamps' if name == 't' else 'strings'}")

    @staticmethod
    def _fingerprint(
        scope: Scope,
        status: str | None,
        job_type: str | None,
        after: datetime | None = None,
        before: datetime | None = None,
    ) -> str:
        bounds = [after.isoformat() if after else None, before.isoformat() if before else None]
        text = json.dumps(
            [scope.field, scope.value, status, job_type, *([bounds] if after or before else [])]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @staticmethod
    def _encode(lanes: dict[str, _Lane], fingerprint: str) -> str:
        state: dict[str, Any] = {"f": fingerprint}
        for name, lane in lanes.items():
            if lane.done:
                state[name] = "done"
            elif lane.cursor is not None:
                value, job_id = lane.cursor
                state[name] = [value.isoformat() if isinstance(value, datetime) else value, job_id]
        return _pack(state)

    @staticmethod
    def _decode(
        token: str, fingerprint: str, after: datetime | None = None, before: datetime | None = None
    ) -> dict[str, _Lane]:
        state = _unpack(token, fingerprint)
        lanes = _lanes(after, before)
        for name, lane in lanes.items():
            entry = state.get(name)
            if entry == "done":
                lane.done = True
            elif entry is not None:
                if not (
                    isinstance(entry, list)
                    and len(entry) == 2
                    and all(isinstance(x, str) and encodable(x) for x in entry)
                    and _possible_id(entry[1])
                ):
                    raise InvalidPageToken("pageToken is not a token this API issued")
                value: Any = entry[0]
                if name == "t":
                    try:
                        value = datetime.fromisoformat(entry[0])
                    except ValueError:
                        raise InvalidPageToken("pageToken is not a token this API issued") from None
                    if value.tzinfo is None:
                        raise InvalidPageToken("pageToken is not a token this API issued")
                lane.cursor = (value, entry[1])
        return lanes


def _pack(state: dict[str, Any]) -> str:
    """A page token: the listing's state as unpadded URL-safe base64 of compact JSON."""
    return (
        base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode())
        .rstrip(b"=")
        .decode()
    )


def _unpack(token: str, fingerprint: str) -> dict[str, Any]:
    """The state in a page token issued for the listing with this `fingerprint`; raises
    `InvalidPageToken`."""
    try:
        state = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidPageToken("pageToken is not a token this API issued") from None
    if not isinstance(state, dict) or state.get("f") != fingerprint:
        raise InvalidPageToken(
            "pageToken belongs to a listing with other filters; start again without it"
        )
    return state


def _possible_id(job_id: str) -> bool:
    """Could name a document: 1 to 1500 bytes, no slash, not ``.``, ``..`` or ``__reserved__``."""
    return (
        0 < len(job_id.encode()) <= 1500
        and "/" not in job_id
        and job_id not in (".", "..")
        and not (job_id.startswith("__") and job_id.endswith("__"))
    )


class ScheduleListing:
    """Pages of one owner's schedules (``scheduledJobs``) in id order, with an opaque cursor.

    An equality filter and ``__name__`` order: no composite index.
    """

    def __init__(self, store: JobStore) -> None:
        self.store = store

    @property
    def collection(self) -> Any:
        """The schedules collection reference."""
        return self.store.schedules.collection

    def page(
        self, scope: Scope, *, page_size: int = 20, page_token: str | None = None
    ) -> tuple[list[Schedule], str | None]:
        """A page of schedules in `scope` and the next page's token; raises `InvalidPageToken`."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}")
        fingerprint = JobListing._fingerprint(scope, "schedules", None)
        query = self.collection
        if scope.field is not None:
            query = query.where(filter=FieldFilter(scope.field, "==", scope.value))
        query = query.order_by("__name__")
        if page_token:
            after = self._decode(page_token, fingerprint)
            query = query.start_after({"__name__": self.collection.document(after)})
        rows = self.store.schedules.page_rows(query.limit(page_size + 1), "list_schedules")
        if len(rows) <= page_size:
            return rows, None
        rows = rows[:page_size]
        return rows, _pack({"f": fingerprint, "after": rows[-1].id})

    @staticmethod
    def _decode(token: str, fingerprint: str) -> str:
        after = _unpack(token, fingerprint).get("after")
        if not isinstance(after, str) or not encodable(after) or not _possible_id(after):
            raise InvalidPageToken("pageToken is not a token this API issued")
        return after


__all__ = ["MAX_PAGE_SIZE", "InvalidPageToken", "JobListing", "Page", "ScheduleListing", "Scope"]
