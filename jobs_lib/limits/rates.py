"""Claiming a job whose handler has a rate limit: a token of the current window and the job, in one
commit.

``@handler(..., rate="50/s")`` allows 50 starts per one-second window (per
``rate_key`` value) across every worker and function instance: each start
creates one of the window's 50 token documents (`jobs_lib.store.rate_tokens`) in
the commit that claims the job. A claimer picks a random token it has not
seen taken; a refused create means another claimer has it, so it tries
another. Once it has seen every token of the window taken, or `MAX_TRIES`
refusals in a row, it leaves the type alone until the window ends (the
worker's discovery then does not even read its jobs), so a full window costs
a few refused commits per claimer, not a read per job. A job over the limit
stays pending and starts in a later window, as soon as a token is free.
"""

from __future__ import annotations

import logging
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from jobs_lib.limits.policy import Hold, Policy
from jobs_lib.limits.slots import Saturation, limit_key
from jobs_lib.model.job import Job
from jobs_lib.observability.logs import JobLogger, event, job_fields
from jobs_lib.registry import HandlerSpec, parse_rate
from jobs_lib.store import Claim, JobStore
from jobs_lib.store.rate_tokens import TokenTaken, token_id

#: Rate-limited claims are one commit each (a token and the job together) and independent of one
#: another: this many at once, so that one process can start a hundred a second.
RATE_CLAIMERS = 8
#: Refused token creates in a row after which a claimer counts the window as full.
MAX_TRIES = 6
#: Tokens outlive their window by this long before the TTL policy deletes them.
TOKEN_TTL = timedelta(hours=1)


class RateClaimer(Policy):
    """The rate policy (``rate=``): claims rate-limited jobs for one engine, each with a token of
    the current window, and remembers which windows are full."""

    name = "rate"

    def __init__(self, store: JobStore, holder: str, lease_seconds: float, log: JobLogger) -> None:
        self.store = store
        self.holder = holder
        self.lease_seconds = lease_seconds
        self.log = log
        #: (type, key, window) -> the token indexes seen taken (ours and others').
        self._taken: dict[tuple[str, str, int], set[int]] = {}
        #: Which types (and keys) have used up their window, until it ends.
        self._full = Saturation()
        self._lock = threading.Lock()
        self._rng = random.Random()
        self._claimers: ThreadPoolExecutor | None = None

    # -- the policy's hooks (jobs_lib.limits.policy) --------------------------------------------

    def gate(self, job: Job, spec: HandlerSpec, now: datetime) -> Hold | None:
        if spec.rate is not None and self.saturated(job, spec):
            return Hold.until_room("its type has used its rate for now")
        return None

    def excluded_types(self, now: datetime) -> set[str]:
        return self.full_types()

    def takes(self, job: Job, spec: HandlerSpec, now: datetime) -> bool:
        return spec.rate is not None

    def claim_jobs(
        self, jobs: list[tuple[Job, HandlerSpec]], now: datetime
    ) -> dict[str, Claim | None]:
        if len(jobs) == 1:
            job, spec = jobs[0]
            return {job.id: self.claim(job, spec)}
        with self._lock:
            if self._claimers is None:
                self._claimers = ThreadPoolExecutor(
                    RATE_CLAIMERS, thread_name_prefix="jobs-rate-claim"
                )
            pool = self._claimers
        return dict(
            zip(
                (job.id for job, _s in jobs),
                pool.map(lambda pair: self.claim(*pair), jobs),
                strict=True,
            )
        )

    def held_back(self, job: Job, spec: HandlerSpec) -> bool:
        return self.saturated(job, spec)

    def close(self) -> None:
        with self._lock:
            pool, self._claimers = self._claimers, None
        if pool is not None:
            pool.shutdown(wait=False)

    # -- claiming ---------------------------------------------------------------------------------

    @staticmethod
    def key(job: Job, spec: HandlerSpec) -> str:
        """The limit's key for a job: its ``rate_key`` field's value, or ``*`` for one limit per
        type."""
        return limit_key(job, spec.rate_key)

    def saturated(self, job: Job, spec: HandlerSpec) -> bool:
        """True while this job's type (and key) has used up its current window."""
        return self._full.holds(spec.type, self.key(job, spec))

    def full_types(self) -> set[str]:
        """Types whose whole window is used up (no per-key limit): discovery need not read their
        jobs."""
        return self._full.whole_types()

    def next_room(self) -> float | None:
        """When (monotonic) the first used-up window ends, or None."""
        return self._full.next_end()

    def claim(self, job: Job, spec: HandlerSpec) -> Claim | None:
        """Take a token of the current window and the job together; None when the window is used up
        or another claimer took the job."""
        assert spec.rate is not None
        starts, period = parse_rate(spec.rate, spec.type)
        key = self.key(job, spec)
        for _attempt in range(MAX_TRIES):
            if self.saturated(job, spec):
                break
            now = self.store.now().timestamp()
            window = int(now // period)
            with self._lock:
                for old in [k for k in self._taken if k[2] < window]:
                    del self._taken[old]
                taken = self._taken.setdefault((spec.type, key, window), set())
                index = self._pick(starts, taken)
                if index is not None:
                    taken.add(
                        index
                    )  # ours while we try it: a claim on another thread picks another
            if index is None:
                self._window_full(spec, key, now, period)
                break
            expires = datetime.fromtimestamp((window + 1) * period, UTC) + TOKEN_TTL
            try:
                claim = self.store.claim_with_token(
                    job,
                    token_id(spec.type, key, window, index),
                    expires,
                    self.holder,
                    self.lease_seconds,
                )
            except TokenTaken:
                continue  # another claimer has it (it stays marked taken)
            if claim is None:
                with self._lock:
                    taken.discard(
                        index
                    )  # the job changed (another claimer has it); the token stays free
            return claim
        else:
            self._window_full(spec, key, self.store.now().timestamp(), period)  # refused every time
        where = f" for {spec.rate_key}={key}" if spec.rate_key else ""
        event(
            self.log,
            "job_waiting",
            f"job {job.id} waits: {spec.type} has used its rate of {spec.rate}{where} for now",
            level=logging.DEBUG,
            **job_fields(job.id, job.type),
        )
        return None

    def _window_full(self, spec: HandlerSpec, key: str, now: float, period: float) -> None:
        """Leave this type (and key) alone until its current window ends."""
        self._full.mark(spec.type, key, (int(now // period) + 1) * period - now)

    def _pick(self, starts: int, taken: set[int]) -> int | None:
        """A random token index not seen taken, or None when all are."""
        if len(taken) >= starts:
            return None
        if len(taken) < starts // 2:
            while True:  # rejection sampling: cheap while most tokens are free
                index = self._rng.randrange(starts)
                if index not in taken:
                    return index
        return self._rng.choice([i for i in range(starts) if i not in taken])


__all__ = ["MAX_TRIES", "RateClaimer"]
