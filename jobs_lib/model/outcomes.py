"""What a run (or an operator) decided about a job, as typed values the store writes.

The runner never assembles document fields: it hands the store one of these,
and `jobs_lib.store.jobs` alone knows which fields each becomes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Completed:
    """The handler returned: the job succeeded with `result`."""

    result: Any
    expire_at: datetime | None = None


@dataclass(frozen=True)
class Failed:
    """The job failed for good."""

    error: str
    details: dict[str, Any] = field(default_factory=dict)
    expire_at: datetime | None = None
    #: It failed because its last attempt failed (a dead letter), not because it could never run.
    exhausted: bool = False


@dataclass(frozen=True)
class Retry:
    """The attempt failed and attempts remain: pending again, due at `run_at`."""

    error: str
    details: dict[str, Any]
    run_at: datetime


@dataclass(frozen=True)
class Cancelled:
    """The job ended cancelled (at its owner's request, before or while it ran)."""

    reason: str = "cancelled at the owner's request"
    expire_at: datetime | None = None


@dataclass(frozen=True)
class Released:
    """A worker shutting down hands the job back: pending at `run_at`, the attempt not counted."""

    attempts: int
    run_at: datetime


@dataclass(frozen=True)
class Continued:
    """A continuable handler reached the end of its slice (the invocation's time, or a worker's
    shutdown) at a checkpoint: pending again at once, its cursor saved, the attempt not counted."""

    attempts: int
    run_at: datetime
    #: The handler's last checkpoint (``ctx.checkpoint``), read back as ``ctx.cursor``.
    cursor: Any
    #: The job's continuations so far, this one included.
    continuations: int
    #: The lengths of its latest slices in milliseconds, the one that just ended last.
    slices: tuple[int, ...]
    #: Time the job has run over all its slices, in milliseconds (its timeout counts this).
    active_ms: int


@dataclass(frozen=True)
class Slept:
    """The handler called ``ctx.sleep``: pending again at `until`, holding no slot or lease while it
    waits, the attempt not counted; its `index`-th sleep is recorded so that the replay passes
    it."""

    attempts: int
    until: datetime
    index: int
    active_ms: int


@dataclass(frozen=True)
class CancelRequest:
    """Ask a running job to stop (it ends cancelled at its next check)."""


@dataclass(frozen=True)
class Retried:
    """A failed or cancelled job sent back to pending by hand, its attempts reset."""


#: How a claimed job can end (one of these per attempt).
Outcome = Completed | Failed | Retry | Cancelled | Released | Continued | Slept
#: What an operator's read-decide-write may change.
Change = Cancelled | CancelRequest | Retried


@dataclass(frozen=True)
class Update:
    """One write to a claimed job: an outcome, progress, a renewed lease, or several at once."""

    outcome: Outcome | None = None
    progress: dict[str, Any] | None = None
    lease_expires_at: datetime | None = None
    #: Durable steps whose results this write records, by name (jobs_lib.engine.durable).
    steps: dict[str, dict[str, Any]] | None = None
    #: A checkpoint to save (``ctx.checkpoint``) when `has_cursor` (None then clears the saved one).
    cursor: Any = None
    has_cursor: bool = False

    def merged(self, later: Update) -> Update:
        """This update with a later one on top (the recorder coalesces writes to one job)."""
        progress = (
            {**(self.progress or {}), **(later.progress or {})}
            if (self.progress or later.progress)
            else None
        )
        steps = (
            {**(self.steps or {}), **(later.steps or {})} if (self.steps or later.steps) else None
        )
        return Update(
            outcome=later.outcome or self.outcome,
            progress=progress,
            lease_expires_at=later.lease_expires_at or self.lease_expires_at,
            steps=steps,
            cursor=later.cursor if later.has_cursor else self.cursor,
            has_cursor=later.has_cursor or self.has_cursor,
        )


__all__ = [
    "CancelRequest",
    "Cancelled",
    "Change",
    "Completed",
    "Continued",
    "Failed",
    "Outcome",
    "Released",
    "Retried",
    "Retry",
    "Slept",
    "Update",
]
