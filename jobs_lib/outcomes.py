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
class CancelRequest:
    """Ask a running job to stop (it ends cancelled at its next check)."""


@dataclass(frozen=True)
class Retried:
    """A failed or cancelled job sent back to pending by hand, its attempts reset."""


#: How a claimed job can end (one of these per attempt).
Outcome = Completed | Failed | Retry | Cancelled | Released
#: What an operator's read-decide-write may change.
Change = Cancelled | CancelRequest | Retried


@dataclass(frozen=True)
class Update:
    """One write to a claimed job: an outcome, progress, a renewed lease, or several at once."""

    outcome: Outcome | None = None
    progress: dict[str, Any] | None = None
    lease_expires_at: datetime | None = None

    def merged(self, later: Update) -> Update:
        """This update with a later one on top (the recorder coalesces writes to one job)."""
        progress = {**(self.progress or {}), **(later.progress or {})} if (self.progress or later.progress) else None
        return Update(
            outcome=later.outcome or self.outcome,
            progress=progress,
            lease_expires_at=later.lease_expires_at or self.lease_expires_at,
        )


__all__ = ["CancelRequest", "Cancelled", "Change", "Completed", "Failed", "Outcome", "Released", "Retried", "Retry", "Update"]
