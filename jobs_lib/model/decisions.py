"""What happens after an attempt, as one pure function.

`decide` takes everything that bears on the outcome (how the handler ended,
the attempt number and limit, the handler's backoff, a cancel request, the
time) and returns the `jobs_lib.model.outcomes` value to record: completed, retry
at T, failed, or cancelled; or None when this run no longer owns the job and
must record nothing. The runner (`jobs_lib.engine.runner.Execution`) only carries
the decision out. No I/O, no clock, no randomness (the jitter draw is an
input), so a hypothesis property can cover the whole input space.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from jobs_lib.model.outcomes import Cancelled, Completed, Failed, Outcome, Retry
from jobs_lib.model.retry import Backoff


class Ending(enum.Enum):
    """How an attempt ended, as the runner saw it."""

    RETURNED = "returned"  # the handler returned a storable result
    UNSTORABLE = "unstorable"  # it returned something Firestore cannot hold
    INVALID_INPUT = "invalid_input"  # the metadata failed the handler's input model
    RAISED = "raised"  # it raised an ordinary exception: retry while attempts remain
    PERMANENT = "permanent"  # it raised PermanentError: fail now
    CANCELLED = "cancelled"  # it raised JobCancelled (it saw the owner's request)
    INTERRUPTED = (
        "interrupted"  # it was stopped: the lease was lost, or a cancel request reached it
    )
    TIMED_OUT = "timed_out"  # it ran past its timeout and was abandoned


@dataclass(frozen=True)
class AttemptEnd:
    """Everything `decide` needs about one attempt."""

    ending: Ending
    attempt: int
    max_attempts: int
    now: datetime
    expire_at: datetime
    backoff: Backoff = field(default_factory=Backoff)
    jitter: float = 0.0
    result: Any = None
    error: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    cancel_requested: bool = False
    lease_lost: bool = False
    timeout: float = 0.0
    #: What ran out of time ("the handler", or a durable step: "step 'upload'").
    timed_out: str = "the handler"


#: The error recorded when the runner had no message of its own: a failed job always says why.
_DEFAULT_ERRORS = {
    Ending.UNSTORABLE: "the handler's result cannot be stored in the job document",
    Ending.INVALID_INPUT: "the job's metadata is not valid input for its handler",
    Ending.RAISED: "the handler raised an exception",
    Ending.PERMANENT: "the handler raised PermanentError",
}
#: Retry waits are capped here (ten years): a larger backoff would overflow a timestamp.
MAX_WAIT = 10 * 365 * 86400.0


def decide(end: AttemptEnd) -> Outcome | None:
    """The outcome to record for an attempt that ended as `end` says (None: record nothing)."""
    details = {"attempt": end.attempt, **end.details}
    if not end.error.strip() and end.ending in _DEFAULT_ERRORS:
        end = replace(end, error=_DEFAULT_ERRORS[end.ending])
    if end.ending is Ending.RETURNED:
        return Completed(end.result, end.expire_at)
    if end.ending is Ending.UNSTORABLE:
        return Failed(end.error, {**details, "reason": "unstorable_result"}, end.expire_at)
    if end.ending is Ending.INVALID_INPUT:
        return Failed(end.error, {**details, "reason": "invalid_input"}, end.expire_at)
    if end.ending is Ending.PERMANENT:
        return Failed(end.error, {**details, "reason": "permanent"}, end.expire_at)
    if end.ending is Ending.CANCELLED:
        return Cancelled(expire_at=end.expire_at)
    if end.ending is Ending.INTERRUPTED:
        if end.cancel_requested and not end.lease_lost:
            return Cancelled(expire_at=end.expire_at)
        return None  # another run owns the job now: its writes, not ours
    if end.ending is Ending.TIMED_OUT:
        if end.cancel_requested:
            return Cancelled(
                f"cancelled at the owner's request; the handler did not stop by itself and was "
                f"abandoned at its timeout of {end.timeout:g}s",
                end.expire_at,
            )
        return _failed_attempt(
            end,
            f"{end.timed_out} did not finish within its timeout of {end.timeout:g}s",
            {**details, "reason": "timeout"},
        )
    return _failed_attempt(end, end.error, details)


def _failed_attempt(end: AttemptEnd, error: str, details: dict[str, Any]) -> Outcome:
    """Retry after the backoff while attempts remain, else fail for good."""
    limit = max(end.max_attempts, 1)
    if end.attempt >= limit:
        return Failed(
            f"{error} (attempt {end.attempt} of {limit}, no attempts left)",
            details,
            end.expire_at,
            exhausted=True,
        )
    delay = min(end.backoff.wait(end.attempt, end.jitter), MAX_WAIT)
    return Retry(error, details, end.now + timedelta(seconds=delay))


__all__ = ["AttemptEnd", "Ending", "decide"]
