"""Circuit breakers: a type whose attempts keep failing pauses itself, then tries one job.

``@handler(..., breaker=5, breaker_cooldown=60)``: when a runner (a worker or a
function instance) sees 5 failed attempts of the type in a row, it opens the
type's breaker, one merged write to the control document every runner already
reads for the paused types (``breakers.<type>: {openUntil, openedAt, failures,
lastError}``), so an open breaker costs no extra reads. While it is open,
runners leave the type's jobs pending, as if paused. Once ``openUntil`` has
passed the breaker is half-open: one job (the probe) may start, taken with a
token document created in the same commit as its claim (as a rate limit's), so
only one runner gets it. The probe's success closes the breaker; its failure
opens it again for another cool-down. A probe that never reports (its runner
died) is given up after its timeout and two leases, and the next one starts.

The streak is each runner's own, so successes cost nothing: no shared counter
is written while the type is healthy. Failed attempts that are the job's own
fault (input the handler's model refuses, results Firestore cannot store) do
not count.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from jobs_lib.limits.policy import Hold, Policy
from jobs_lib.model.job import Job
from jobs_lib.model.outcomes import Completed, Failed, Outcome, Retry
from jobs_lib.observability.logs import JobLogger, event, job_fields
from jobs_lib.registry import HandlerSpec
from jobs_lib.store import Claim, JobStore
from jobs_lib.store.rate_tokens import TokenTaken

#: Failure reasons that say nothing about the handler's dependencies.
_NOT_COUNTED = frozenset({"invalid_input", "unstorable_result", "invalid_job"})
PROBE_TOKEN_TTL = timedelta(days=1)
#: How long a runner trusts its own opening of a breaker over a control document that does not show
#: it.
LOCAL_MEMORY = 10.0
#: Another runner holds the probe: leave the type alone this long before looking again.
PROBE_WAIT = 5.0


def probe_token(job_type: str, opened_at: datetime) -> str:
    """The token document the one probe of a breaker's opening creates."""
    return (
        "probe~"
        + "".join(c if c not in "/~" else "_" for c in job_type)[:200]
        + f"~{int(opened_at.timestamp() * 1000)}"
    )


class Breakers(Policy):
    """The circuit-breaker policy (``breaker=``): one runner's streaks, and the breakers' state as
    last read."""

    name = "breaker"

    def __init__(
        self,
        store: JobStore,
        holder: str,
        lease_seconds: float,
        log: JobLogger,
        state: Callable[[], dict[str, dict[str, Any]]],
        specs: Callable[[str], HandlerSpec | None],
    ) -> None:
        self.specs = specs  # the handler spec of a type (the registry's)
        self.store = store
        self.holder = holder
        self.lease_seconds = lease_seconds
        self.log = log
        self._state = state  # the breakers from the control document (the engine refreshes it)
        self._streaks: dict[str, int] = {}
        self._lock = threading.Lock()
        #: Types whose probe another runner holds: left alone until this monotonic time.
        self._probe_elsewhere: dict[str, float] = {}
        #: Breakers this runner opened since the control document was last read: (entry, when
        #: written).
        self._opened_here: dict[str, tuple[dict[str, Any], float]] = {}

    # -- the policy's hooks (jobs_lib.limits.policy) --------------------------------------------

    def gate(self, job: Job, spec: HandlerSpec, now: datetime) -> Hold | None:
        if spec.breaker is not None and self.state(spec, now) == "open":
            return Hold.skip("its circuit breaker is open")
        return None

    def excluded_types(self, now: datetime) -> set[str]:
        return self.open_types(now, self.specs)

    def takes(self, job: Job, spec: HandlerSpec, now: datetime) -> bool:
        return spec.breaker is not None and self.state(spec, now) == "half-open"

    def claim_jobs(
        self, jobs: list[tuple[Job, HandlerSpec]], now: datetime
    ) -> dict[str, Claim | None]:
        """At most one probe per half-open type per call: the others are not tried now."""
        claims: dict[str, Claim | None] = {}
        probed: set[str] = set()
        for job, spec in jobs:
            if spec.type not in probed:
                probed.add(spec.type)
                claims[job.id] = self.claim_probe(job, spec, now)
        return claims

    def ended(self, spec: HandlerSpec, outcome: Outcome, claimed_by: str | None) -> None:
        if spec.breaker is not None:
            self.after(spec, outcome, probe=claimed_by == self.name)

    def refreshed(self) -> None:
        """The engine has a newer control document: forget the openings of ours it shows (or that
        are older than `LOCAL_MEMORY` seconds, in case another runner's probe closed it since)."""
        state = self._state()
        with self._lock:
            for job_type, (entry, written) in list(self._opened_here.items()):
                shown = _time((state.get(job_type) or {}).get("openedAt"))
                if (
                    shown is not None and shown >= entry["openedAt"]
                ) or time.monotonic() - written > LOCAL_MEMORY:
                    del self._opened_here[job_type]

    def _entry(self, job_type: str) -> dict[str, Any] | None:
        with self._lock:
            local = self._opened_here.get(job_type)
        return local[0] if local is not None else self._state().get(job_type)

    def state(self, spec: HandlerSpec, now: datetime) -> str:
        """``closed``, ``open`` (leave its jobs alone) or ``half-open`` (one probe may start)."""
        if spec.breaker is None:
            return "closed"
        entry = self._entry(spec.type)
        if entry is None:
            return "closed"
        until = _time(entry.get("openUntil"))
        with self._lock:
            probing_elsewhere = self._probe_elsewhere.get(spec.type, 0.0) > time.monotonic()
        if until is None or now < until or probing_elsewhere:
            return "open"
        return "half-open"

    def open_types(self, now: datetime, specs: Callable[[str], HandlerSpec | None]) -> set[str]:
        """Types whose breaker is open now (discovery need not read their jobs)."""
        return {
            t
            for t in self._state()
            if (spec := specs(t)) is not None and self.state(spec, now) == "open"
        }

    def claim_probe(self, job: Job, spec: HandlerSpec, now: datetime) -> Claim | None:
        """Claim `job` as the half-open breaker's one probe; None when another runner has the
        probe."""
        entry = self._entry(spec.type) or {}
        opened_at = _time(entry.get("openedAt")) or now
        until = _time(entry.get("openUntil")) or now
        if now > until + timedelta(seconds=spec.timeout + 2 * self.lease_seconds):
            # The probe never reported (its runner died): open a new round, with a new probe.
            self._open(
                spec,
                now,
                until=now,
                failures=int(entry.get("failures") or 0),
                error="the probe did not report",
            )
            opened_at = now
        try:
            claim = self.store.claim_with_token(
                job,
                probe_token(spec.type, opened_at),
                now + PROBE_TOKEN_TTL,
                self.holder,
                self.lease_seconds,
            )
        except TokenTaken:
            with self._lock:
                self._probe_elsewhere[spec.type] = time.monotonic() + PROBE_WAIT
            return None
        if claim is not None:
            event(
                self.log,
                "breaker_probe",
                f"{spec.type}: job {job.id} is the probe of its half-open circuit breaker",
                **job_fields(job.id, job.type),
            )
        return claim

    def after(self, spec: HandlerSpec, outcome: Outcome, probe: bool) -> None:
        """An attempt of `spec`'s type ended with `outcome` (recorded): keep the streak, open or
        close."""
        if spec.breaker is None:
            return
        failed = isinstance(outcome, Retry) or (
            isinstance(outcome, Failed) and outcome.details.get("reason") not in _NOT_COUNTED
        )
        if isinstance(outcome, Completed):
            with self._lock:
                self._streaks[spec.type] = 0
            if probe:
                self.store.limits.close_breaker(spec.type)
                with self._lock:
                    self._opened_here.pop(spec.type, None)
                event(
                    self.log,
                    "breaker_closed",
                    f"{spec.type}: the probe succeeded; the circuit breaker is closed and the "
                    f"type runs again",
                    type=spec.type,
                )
            return
        if not failed:
            return
        error = outcome.error if isinstance(outcome, Failed | Retry) else None
        now = self.store.now()
        with self._lock:
            streak = self._streaks.get(spec.type, 0) + 1
            self._streaks[spec.type] = streak
            opening = probe or (
                streak >= spec.breaker
                and spec.type not in self._opened_here
                and self._state().get(spec.type) is None
            )
            if opening:  # decided under the lock: two failures ending together open it once
                until = now + timedelta(seconds=spec.breaker_cooldown)
                self._opened_here[spec.type] = (
                    {"openUntil": until, "openedAt": now, "failures": streak, "lastError": error},
                    time.monotonic(),
                )
                self._streaks[spec.type] = 0
        if opening:
            self._write_open(spec, now, until, streak, error)

    def _open(
        self, spec: HandlerSpec, now: datetime, *, until: datetime, failures: int, error: str | None
    ) -> None:
        with self._lock:
            self._opened_here[spec.type] = (
                {"openUntil": until, "openedAt": now, "failures": failures, "lastError": error},
                time.monotonic(),
            )
            self._streaks[spec.type] = 0
        self._write_open(spec, now, until, failures, error)

    def _write_open(
        self, spec: HandlerSpec, now: datetime, until: datetime, failures: int, error: str | None
    ) -> None:
        self.store.limits.open_breaker(spec.type, until, now, failures, error)
        event(
            self.log,
            "breaker_opened",
            f"{spec.type}: {failures} failed attempts in a row; its circuit breaker is open "
            f"until {until.isoformat()}",
            level=logging.WARNING,
            type=spec.type,
            error=error,
        )


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None


__all__ = ["Breakers", "probe_token"]
