"""Fair shares (``fair_key=``): one tenant's backlog never starves another's jobs.

Without it, runners take due jobs by priority and age, so 50,000 jobs one organisation wrote at
once run before anything another writes after them. A handler with ``fair_key="orgId"`` (or
``"createdBy"``) has its jobs read per key instead: a small document per key with pending jobs
(`jobs_lib.store.fair`) tells runners the keys, each read takes the oldest due jobs of every key
(a query on ``(type, key, status, shard, scheduledFor)``, so a key's backlog costs the other keys
nothing), and the candidates are laid out round by round, each key taking as many places a round
as its weight. A worker drains its page of candidates before it reads again, so every key with a
due job has its turn within one page. The main lane leaves fair types to this lane.

Deficit round robin over the keys is written here by hand: the scheduling libraries on PyPI
schedule in-process queues, and what is to be shared here are Firestore queries.

A created-event of a fair type (where each job brings its own invocation) spends its run on a key
drawn at random in proportion to the weights (lottery scheduling, which needs no state shared
between instances): its own job when its own key is drawn, else the oldest due job of the key
drawn, leaving its own for a later event or the tick.

Nothing depends on the key documents for safety: a key whose document is missing is found by a
sweep of the type's oldest due jobs (every few seconds, which registers the keys it finds), and
every claim is the usual conditional write.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from jobs_lib.limits.policy import Policy
from jobs_lib.model.job import Job
from jobs_lib.observability.logs import JobLogger, event
from jobs_lib.registry import HandlerSpec
from jobs_lib.store import ALL_SHARDS, JobStore

#: A type's keys are read again after this long (one read per key document).
KEYS_TTL = 1.0
#: The weights document is read again after this long.
WEIGHTS_TTL = 10.0
#: At most this many keys are read per type per read; more keys are read in turn, this many at a
#: time (so that a type with thousands of tenants costs a bounded read per poll).
MAX_KEYS = 16
#: The sweep of a type's oldest due jobs (keys whose document is missing) runs this often.
SWEEP_EVERY = 2.0
#: A key found with nothing due is not read again for this long, unless its next job is due sooner.
REST_SECONDS = 5.0


def fair_key_of(job: Job, spec: HandlerSpec) -> str | None:
    """The value of a job's fair field, as a string (None when its type is not fair; a job without
    the field shares the key ``-``)."""
    if spec.fair_key is None:
        return None
    return fair_value(job.field_value(spec.fair_key))


def fair_value(value: object) -> str:
    """A fair field's value as a key: strings and integers as written, anything else ``-``."""
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else "-"


@dataclass
class _TypeState:
    keys: list[tuple[str, str, datetime | None]] = field(default_factory=list)
    read_at: float = float("-inf")
    #: The document id to read the next window of keys after (None: from the first).
    cursor: str | None = None
    swept_at: float = float("-inf")
    #: Keys with nothing due, by key: not read again until then (monotonic), unless their document
    #: changes meanwhile (a job was enqueued for them): (until, the version seen).
    resting: dict[str, tuple[float, datetime | None]] = field(default_factory=dict)
    #: Where the next round starts (rotates, so that no key is always first).
    rotation: int = 0


class FairShares(Policy):
    """The fairness policy: a lane of candidates shared between keys, and an event's pick."""

    name = "fair"

    def __init__(
        self,
        store: JobStore,
        log: JobLogger,
        specs: Callable[[], list[HandlerSpec]],
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.log = log
        self._specs = specs
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._types: dict[str, _TypeState] = {}
        self._weights: dict[str, dict[str, float]] = {}
        self._weights_read = float("-inf")
        self._pool: ThreadPoolExecutor | None = None

    def fair_specs(self) -> list[HandlerSpec]:
        return [spec for spec in self._specs() if spec.fair_key is not None]

    # -- the policy's hooks -----------------------------------------------------------------------

    def excluded_types(self, now: datetime) -> set[str]:
        # The main lane (oldest first) leaves fair types to `lane`.
        return {spec.type for spec in self.fair_specs()}

    def lane(self, now: datetime, limit: int, shards: Sequence[int], skip: set[str]) -> list[Job]:
        out: list[Job] = []
        for spec in self.fair_specs():
            if spec.type not in skip:
                out += self._type_lane(spec, now, limit, shards)
        return out

    def substitute(self, job: Job, spec: HandlerSpec, now: datetime) -> list[Job]:
        key = fair_key_of(job, spec)
        if key is None or spec.fair_key is None:
            return []
        state = self._state(spec.type)
        keys = self._keys(spec.type, state)
        if key not in {k for _id, k, _v in keys}:
            # Its key has had no turn: run its own job, and let the other runners know the key.
            self.store.fair.register([(spec.type, spec.fair_key, key)])
            with self._lock:
                state.read_at = float("-inf")
            return []
        weights = self.weights_of(spec.type)
        names = [k for _id, k, _v in keys]
        drawn = self._rng.choices(names, weights=[weights.get(k, 1.0) for k in names])[0]
        if drawn == key:
            return []
        return self.store.due_for_key(
            spec.type, spec.fair_key, drawn, now, 3, start=self._rng.choice(ALL_SHARDS)
        )

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)

    # -- weights ---------------------------------------------------------------------------------

    def weights_of(self, job_type: str) -> dict[str, float]:
        """The weights set for a type's keys (a key not named has weight 1)."""
        with self._lock:
            stale = time.monotonic() - self._weights_read > WEIGHTS_TTL
        if stale:
            try:
                weights = self.store.fair.weights()
            except Exception:
                self.log.warning("could not read the fair-share weights", exc_info=True)
                weights = self._weights
            with self._lock:
                self._weights, self._weights_read = weights, time.monotonic()
        with self._lock:
            return dict(self._weights.get(job_type, {}))

    # -- the lane --------------------------------------------------------------------------------

    def _state(self, job_type: str) -> _TypeState:
        with self._lock:
            return self._types.setdefault(job_type, _TypeState())

    def _keys(self, job_type: str, state: _TypeState) -> list[tuple[str, str, datetime | None]]:
        """The type's keys with pending jobs (a window of MAX_KEYS of them), read at most every
        KEYS_TTL seconds."""
        with self._lock:
            if time.monotonic() - state.read_at < KEYS_TTL:
                return list(state.keys)
            cursor = state.cursor
        keys = self.store.fair.keys(job_type, MAX_KEYS, after=cursor)
        if cursor is not None and len(keys) < MAX_KEYS:
            # The end of the keys: the window wraps around to the first ones.
            seen = {doc_id for doc_id, _k, _v in keys}
            keys += [
                entry
                for entry in self.store.fair.keys(job_type, MAX_KEYS - len(keys))
                if entry[0] not in seen
            ]
        with self._lock:
            state.keys, state.read_at = keys, time.monotonic()
            state.cursor = keys[-1][0] if len(keys) >= MAX_KEYS else None
            return list(keys)

    def _type_lane(
        self, spec: HandlerSpec, now: datetime, limit: int, shards: Sequence[int]
    ) -> list[Job]:
        assert spec.fair_key is not None
        field_name = spec.fair_key
        state = self._state(spec.type)
        keys = self._keys(spec.type, state)
        weights = self.weights_of(spec.type)
        mono = time.monotonic()
        by_key: dict[str, list[Job]] = {}
        # The sweep: the type's oldest due jobs, whatever their key. It finds keys whose document
        # is missing (registered here), and it is the whole lane while no key is known.
        if not keys or mono - state.swept_at >= SWEEP_EVERY:
            state.swept_at = mono
            known = {k for _id, k, _v in keys}
            swept = self.store.due_of_type(
                spec.type, now, max(limit, 1), start=self._rng.choice(ALL_SHARDS)
            )
            swept = [job for job in swept if _in_share(job, shards)]
            unknown: set[str] = set()
            for job in swept:
                key = fair_key_of(job, spec) or "-"
                if key not in known:
                    by_key.setdefault(key, []).append(job)
                    unknown.add(key)
            if unknown:
                self.store.fair.register([(spec.type, field_name, key) for key in unknown])
                with self._lock:
                    state.read_at = float("-inf")  # read them with the others next time
        live = [
            (doc_id, key, version)
            for doc_id, key, version in keys
            if not _rests(state.resting.get(key), version, mono)
        ]
        if live:
            total = sum(weights.get(key, 1.0) for _id, key, _v in live)
            low, high = min(shards), max(shards)

            def read(entry: tuple[str, str, datetime | None]) -> tuple[str, list[Job]]:
                _doc_id, key, _version = entry
                share = max(1, math.ceil(limit * weights.get(key, 1.0) / total))
                return key, self.store.due_for_key(
                    spec.type,
                    field_name,
                    key,
                    now,
                    share,
                    shards=shards,
                    start=self._rng.randint(low, high),
                )

            for (doc_id, key, version), (_key, jobs) in zip(
                live, self._map(read, live), strict=True
            ):
                if jobs:
                    by_key.setdefault(key, []).extend(jobs)
                else:
                    self._rest(spec, state, doc_id, key, version, shards)
        return self._rounds(state, by_key, weights)

    def _rest(
        self,
        spec: HandlerSpec,
        state: _TypeState,
        doc_id: str,
        key: str,
        version: datetime | None,
        shards: Sequence[int],
    ) -> None:
        """A key with nothing due: rest it until its next job is due (at most REST_SECONDS), or
        retire its document when it has no pending job at all (read over every shard)."""
        assert spec.fair_key is not None
        until = time.monotonic() + REST_SECONDS
        if tuple(shards) == ALL_SHARDS:
            upcoming = self.store.next_for_key(spec.type, spec.fair_key, key)
            if upcoming is None and not self.store.key_has_live_jobs(spec.type, spec.fair_key, key):
                if self.store.fair.retire(doc_id, version):
                    event(
                        self.log,
                        "fair_key_retired",
                        f"{spec.type}: key {key!r} has no pending job left",
                        level=logging.DEBUG,
                    )
                with self._lock:
                    state.read_at = float("-inf")
                return
            due = upcoming.written_scheduled_for if upcoming is not None else None
            if due is not None:
                until = min(
                    until, time.monotonic() + max((due - self.store.now()).total_seconds(), 0)
                )
        with self._lock:
            state.resting[key] = (until, version)

    def _rounds(
        self, state: _TypeState, by_key: dict[str, list[Job]], weights: dict[str, float]
    ) -> list[Job]:
        """The candidates round by round: each key, from a rotating start, takes its weight's
        number of places a round (priority first, then age, within a key)."""
        if not by_key:
            return []
        keys = sorted(by_key)
        start = state.rotation % len(keys)
        state.rotation += 1
        keys = keys[start:] + keys[:start]
        queues = {
            key: sorted(by_key[key], key=lambda job: (-job.priority, _age(job))) for key in keys
        }
        credit = dict.fromkeys(keys, 0.0)
        out: list[Job] = []
        seen: set[str] = set()
        while any(queues.values()):
            for key in keys:
                queue = queues[key]
                if not queue:
                    continue
                credit[key] += weights.get(key, 1.0)
                while queue and credit[key] >= 1.0:
                    job = queue.pop(0)
                    credit[key] -= 1.0
                    if job.id not in seen:
                        seen.add(job.id)
                        out.append(job)
        return out

    def _map(
        self,
        fn: Callable[[tuple[str, str, datetime | None]], tuple[str, list[Job]]],
        items: list[tuple[str, str, datetime | None]],
    ) -> list[tuple[str, list[Job]]]:
        """The keys' reads, side by side (each is a round trip)."""
        if len(items) == 1:
            return [fn(items[0])]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(8, thread_name_prefix="jobs-fair-read")
            pool = self._pool
        return list(pool.map(fn, items))


def _rests(
    rest: tuple[float, datetime | None] | None, version: datetime | None, now: float
) -> bool:
    """Whether a key found with nothing due still rests: its time has not come and its document
    is as it was (an enqueue for it writes the document again)."""
    return rest is not None and rest[0] > now and rest[1] == version


def _in_share(job: Job, shards: Sequence[int]) -> bool:
    """Whether a job is in the shard lanes `shards` (an app's job with no shard: in the share that
    holds shard 0, as the scans over every document are)."""
    shard = job.written_shard
    return shard in shards if shard is not None else 0 in shards


def _age(job: Job) -> float:
    when = job.written_scheduled_for or job.created_at
    return when.timestamp() if when is not None else 0.0


__all__ = ["FairShares", "fair_key_of", "fair_value"]
