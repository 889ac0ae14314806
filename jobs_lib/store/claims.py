"""The typed values that cross the store's boundary around a claim."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from jobs_lib.model.job import Job
from jobs_lib.model.outcomes import Update


@dataclass
class Claim:
    """A job this process holds: the token that fences its writes, and the version to write on."""

    job: Job
    token: str
    holder: str
    version: datetime
    attempt: int
    lease_expires_at: datetime
    cancel_requested: bool = False
    lost: bool = False

    @property
    def job_id(self) -> str:
        """The job's document id."""
        return self.job.id


class WriteStatus(enum.Enum):
    """What became of a fenced write."""

    OK = "ok"
    LOST = "lost"  # the lease is no longer ours: the write was refused
    INVALID = "invalid"  # Firestore refused the content (too large, bad value)
    ERROR = "error"  # Firestore could not be reached in time


@dataclass
class WriteOutcome:
    """The result of one fenced write."""

    status: WriteStatus
    version: datetime | None = None
    cancel_requested: bool = False
    detail: str = ""


@dataclass
class FencedWrite:
    """An update to a claimed job, written if the claim still holds."""

    claim: Claim
    update: Update
    #: Filled in by `JobStore.commit`.
    outcome: WriteOutcome | None = field(default=None)


__all__ = ["Claim", "FencedWrite", "WriteOutcome", "WriteStatus"]
