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
from jobs_lib.model.job import Job, Status
from jobs_lib.observability.logs import JobLogger, event
from jobs_lib.registry import HandlerSpec
from jobs_lib.store import ALL_SHARDS, JobStore
from jobs_lib.store.fair import FairKey

#: A type's keys are read again after this long (one read per key document).
KEYS_TTL = 1.0
#: The weights document is read again after this long.
WEIGHTS_TTL = 10.0
#: At most this many keys are read per type per read; more keys are read in turn, this many at a
#: time (so that a type with thousands of tenants costs a bounded read per poll).
MAX_KEYS = 16
#: The sweep of a type's oldest due jobs (keys whose document is missing) runs this often.
SWEEP_EVERY = 30.0
#: A key found with nothing due is not read again for this long, unless its next job is due sooner.
REST_SECONDS = 5.0
#: A key's due jobs are handed out from what was read for at most this long (others may take them).
CACHE_SECONDS = 5.0
#: A key whose last page was short is queried again after this long at the latest (its document
#: names its newest jobs; this finds any it did not).
QUERY_EVERY = 10.0


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
    keys: list[FairKey] = field(default_factory=list)
    read_at: float = float("-inf")
    #: The document id to read the next window of keys after (None: from the first).
    cursor: str | None = None
    swept_at: float = float("-inf")
    #: Keys with nothing due, by key: not read again until then (monotonic), unless their document
    #: changes meanwhile (a job was enqueued for them): (until, the version seen).
    resting: dict[str, tuple[float, datetime | None]] = field(default_factory=dict)
    #: Where the next round starts (rotates, so that no key is always first).
    rotation: int = 0
    #: Due jobs read per key and not yet handed out, with when they were read (monotonic).
    cache: dict[str, list[tuple[float, Job]]] = field(default_factory=dict)
    #: The version of each key's document whose ``recent`` ids were fetched.
    fetched: dict[str, datetime | None] = field(default_factory=dict)
    #: Per key: when it was last queried, and whether that page came back full (more is due).
    queried: dict[str, tuple[float, bool]] = field(default_factory=dict)
    #: Per key: the count of jobs noted (`FairKey.count`) when its document was last looked at.
    counted: dict[str, int] = field(default_factory=dict)
    #: The keys the last full read handed jobs of (a quick look leaves them to the next read).
    handed: set[str] = field(default_factory=set)


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

    def lane(
        self,
        now: datetime,
        limit: int,
        shards: Sequence[int],
        skip: set[str],
        *,
        fresh_only: bool = False,
    ) -> list[Job]:
        out: list[Job] = []
        for spec in self.fair_specs():
            if spec.type not in skip:
                out += self._type_lane(spec, now, limit, shards, fresh_only)
        return out

    def substitute(self, job: Job, spec: HandlerSpec, now: datetime) -> list[Job]:
        key = fair_key_of(job, spec)
        if key is None or spec.fair_key is None:
            return []
        state = self._state(spec.type)
        keys = self._keys(spec.type, state)
        if key not in {entry.key for entry in keys}:
            # Its key has had no turn: run its own job, and let the other runners know the key.
            self.store.fair.register([(spec.type, spec.fair_key, key, job.id)])
            with self._lock:
                state.read_at = float("-inf")
            return []
        weights = self.weights_of(spec.type)
        names = [entry.key for entry in keys]
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

    def _keys(self, job_type: str, state: _TypeState) -> list[FairKey]:
        """The type's keys with pending jobs (a window of MAX_KEYS of them), read at most every
        KEYS_TTL seconds."""
        with self._lock:
            if time.monotonic() - state.read_at < KEYS_TTL:
                return list(state.keys)
            cursor = state.cursor
        keys = self.store.fair.keys(job_type, MAX_KEYS, after=cursor)
        if cursor is not None and len(keys) < MAX_KEYS:
            # The end of the keys: the window wraps around to the first ones.
            seen = {entry.doc_id for entry in keys}
            keys += [
                entry
                for entry in self.store.fair.keys(job_type, MAX_KEYS - len(keys))
                if entry.doc_id not in seen
            ]
        with self._lock:
            state.keys, state.read_at = keys, time.monotonic()
            state.cursor = keys[-1].doc_id if len(keys) >= MAX_KEYS else None
            return list(keys)

    def _type_lane(
        self,
        spec: HandlerSpec,
        now: datetime,
        limit: int,
        shards: Sequence[int],
        fresh_only: bool = False,
    ) -> list[Job]:
        """A page of the type's due jobs, round by round between its keys.

        Each key's due jobs are kept between reads (`_TypeState.cache`, at most CACHE_SECONDS old)
        and handed out a page at a time. A key's document names its newest jobs, fetched by id
        when the document changes (a quiet tenant's new job costs a read of that document, not a
        query); a key is queried only when its cache runs short and its last page came back full
        (a backlog) or QUERY_EVERY has passed. On the emulator, where a query costs a pass over the
        whole collection, this keeps the lane's queries per job near the main lane's.

        With `fresh_only` (the worker's quick look, about once a second while it holds a page),
        only keys that had nothing in the last page are served: what their documents name, and a
        query for a key never queried or found to have more than its document names."""
        assert spec.fair_key is not None
        state = self._state(spec.type)
        keys = self._keys(spec.type, state)
        weights = self.weights_of(spec.type)
        mono = time.monotonic()
        # The keys were read just now: a job they name must not look not yet due to a clock read
        # before them (the caller's `now` comes before its other lanes' reads).
        now = max(now, self.store.now())
        with self._lock:
            for key, cached in list(state.cache.items()):
                state.cache[key] = [(at, job) for at, job in cached if mono - at < CACHE_SECONDS]
        if not fresh_only:
            self._sweep(spec, state, keys, now, limit, shards, mono)
        self._fetch_recent(spec, state, keys, now, shards, mono, limit)
        live = [
            entry for entry in keys if not _rests(state.resting.get(entry.key), entry.version, mono)
        ]
        if live:
            heaviest = max(weights.get(entry.key, 1.0) for entry in live)
            # A key is read a page at a time (the heaviest a whole page, the others in proportion),
            # and read again once what is left of it would not fill its share of the page.
            wanted = {
                entry.key: max(1, math.ceil(limit * weights.get(entry.key, 1.0) / heaviest))
                for entry in live
            }
            to_query = [
                entry
                for entry in live
                if len(state.cache.get(entry.key, [])) < wanted[entry.key]
                and _query_due(state.queried.get(entry.key), mono)
                and not (fresh_only and (entry.key in state.handed or entry.key in state.queried))
            ]
            low, high = min(shards), max(shards)

            def read(entry: FairKey) -> list[Job]:
                assert spec.fair_key is not None
                backlog = state.queried.get(entry.key, (0.0, False))[1]
                return self.store.due_for_key(
                    spec.type,
                    spec.fair_key,
                    entry.key,
                    now,
                    wanted[entry.key],
                    shards=shards,
                    # A backlog is read from a random shard on (runners sharing it read apart); a
                    # key with a few jobs from the first (one query finds them all).
                    start=self._rng.randint(low, high) if backlog else None,
                )

            for entry, jobs in zip(to_query, self._map(read, to_query), strict=True):
                with self._lock:
                    state.queried[entry.key] = (mono, len(jobs) >= wanted[entry.key])
                self._add(state, entry.key, jobs, mono)
                if not jobs and not state.cache.get(entry.key):
                    self._rest(spec, state, entry, shards)
        if fresh_only:
            return self._rounds(state, weights, limit, exclude=state.handed)
        out = self._rounds(state, weights, limit)
        state.handed = {fair_key_of(job, spec) or "-" for job in out}
        return out

    def _sweep(
        self,
        spec: HandlerSpec,
        state: _TypeState,
        keys: list[FairKey],
        now: datetime,
        limit: int,
        shards: Sequence[int],
        mono: float,
    ) -> None:
        """The type's oldest due jobs, whatever their key, every SWEEP_EVERY seconds (and at every
        read while no key is known): it finds keys whose document is missing, and registers
        them."""
        assert spec.fair_key is not None
        if keys and mono - state.swept_at < SWEEP_EVERY:
            return
        state.swept_at = mono
        known = {entry.key for entry in keys}
        swept = self.store.due_of_type(spec.type, now, max(limit, 1))
        unknown: dict[str, list[Job]] = {}
        for job in swept:
            key = fair_key_of(job, spec) or "-"
            if key not in known and _in_share(job, shards):
                unknown.setdefault(key, []).append(job)
        if unknown:
            self.store.fair.register([(spec.type, spec.fair_key, key, None) for key in unknown])
            for key, jobs in unknown.items():
                self._add(state, key, jobs, mono)
            with self._lock:
                state.read_at = float("-inf")  # read them with the others next time

    def _fetch_recent(
        self,
        spec: HandlerSpec,
        state: _TypeState,
        keys: list[FairKey],
        now: datetime,
        shards: Sequence[int],
        mono: float,
        limit: int,
    ) -> None:
        """The newest jobs the changed documents of quiet keys name, read by id (one batched read,
        at most a page per key): a key with a backlog is served by its queries instead."""
        wanted: dict[str, str] = {}
        for entry in keys:
            if state.fetched.get(entry.key, _NEVER) == entry.version:
                continue
            state.fetched[entry.key] = entry.version
            before = state.counted.get(entry.key)
            state.counted[entry.key] = entry.count
            if before is not None and entry.count - before > len(entry.recent):
                # More jobs were noted since the last look than the document names: query the key.
                state.queried.pop(entry.key, None)
            if state.queried.get(entry.key, (0.0, False))[1]:
                continue  # a backlog: its next query finds these too
            cached = {job.id for _at, job in state.cache.get(entry.key, [])}
            if len(cached) >= limit:
                continue
            for job_id in entry.recent[-limit:]:
                if job_id not in cached:
                    wanted[job_id] = entry.key
        if not wanted:
            return
        found = self.store.get_many(list(wanted), "fair_recent")
        for job_id, key in wanted.items():
            job = found.get(job_id)
            if (
                job is not None
                and job.status is Status.PENDING
                and _in_share(job, shards)
                and (due := job.written_scheduled_for) is not None
                and due <= now
            ):
                self._add(state, key, [job], mono)

    def _add(self, state: _TypeState, key: str, jobs: list[Job], mono: float) -> None:
        with self._lock:
            cached = state.cache.setdefault(key, [])
            have = {job.id for _at, job in cached}
            cached += [(mono, job) for job in jobs if job.id not in have]

    def _rest(
        self, spec: HandlerSpec, state: _TypeState, entry: FairKey, shards: Sequence[int]
    ) -> None:
        """A key with nothing due: rest it until its next job is due (at most REST_SECONDS), or
        retire its document when it has no pending, blocked or running job (read over every
        shard)."""
        assert spec.fair_key is not None
        key = entry.key
        until = time.monotonic() + REST_SECONDS
        if tuple(shards) == ALL_SHARDS:
            upcoming = self.store.next_for_key(spec.type, spec.fair_key, key)
            if upcoming is None and not self.store.key_has_live_jobs(spec.type, spec.fair_key, key):
                if self.store.fair.retire(entry.doc_id, entry.version):
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
            state.resting[key] = (until, entry.version)
            state.queried.pop(key, None)  # queried again once it wakes

    def _rounds(
        self,
        state: _TypeState,
        weights: dict[str, float],
        limit: int,
        exclude: set[str] | frozenset[str] = frozenset(),
    ) -> list[Job]:
        """About `limit` cached jobs (none of the keys `exclude`), taken out round by round: each
        key, from a rotating start, takes its weight's number of places a round (priority first
        within a key)."""
        with self._lock:
            keys = sorted(
                key for key, cached in state.cache.items() if cached and key not in exclude
            )
            if not keys:
                return []
            start = state.rotation % len(keys)
            state.rotation += 1
            keys = keys[start:] + keys[:start]
            for key in keys:
                # Priority first; then a random order of this runner's own, so that runners holding
                # the same few jobs of a key (a quiet tenant's, read whole by each) try them in
                # different orders rather than collide on each one.
                order = {item[1].id: self._rng.random() for item in state.cache[key]}
                state.cache[key].sort(key=lambda item: (-item[1].priority, order[item[1].id]))
            credit = dict.fromkeys(keys, 0.0)
            out: list[Job] = []
            while len(out) < limit and any(state.cache[key] for key in keys):
                for key in keys:
                    queue = state.cache[key]
                    if not queue:
                        continue
                    credit[key] += weights.get(key, 1.0)
                    while queue and credit[key] >= 1.0 and len(out) < limit:
                        out.append(queue.pop(0)[1])
                        credit[key] -= 1.0
            return out

    def _map(self, fn: Callable[[FairKey], list[Job]], items: list[FairKey]) -> list[list[Job]]:
        """The keys' reads, side by side (each is a round trip)."""
        if len(items) <= 1:
            return [fn(item) for item in items]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(8, thread_name_prefix="jobs-fair-read")
            pool = self._pool
        return list(pool.map(fn, items))


_NEVER = datetime.min


def _query_due(queried: tuple[float, bool] | None, now: float) -> bool:
    """Whether a key whose cache runs short is queried now: never queried, its last page came back
    full (a backlog), or QUERY_EVERY has passed (a job its document did not name)."""
    return queried is None or queried[1] or now - queried[0] >= QUERY_EVERY


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


__all__ = ["FairShares", "fair_key_of", "fair_value"]
