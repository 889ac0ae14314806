"""The seam for "may this job run now, and what happens after": one small protocol.

A policy is one module of ``jobs_lib/limits`` (pause, breakers, slots, rates, ...) whose class
derives from `Policy` and overrides only the hooks it needs; the engine asks every registered
policy (`jobs_lib.limits.registered`) at each point of a job's way and knows none of them by name:

- `gate`: before a claim, may this job start now? `Hold.skip` leaves it (read again later),
  `Hold.wait` keeps it as a candidate to claim again once room frees (`next_room`).
- `excluded_types`: types whose jobs discovery need not even read now.
- `takes` / `claim_jobs`: a policy that guards something in Firestore (a slot, a rate token, a
  breaker's probe) claims the jobs it takes itself, the guard and the job in one commit; the
  engine claims the rest with a plain conditional write. `held_back` tells a claim the policy
  refused (its limit) from one another claimer won.
- `lane`: candidates a policy reads itself, in the order they should be tried (fair shares read
  due jobs per key); `substitute`: the jobs a created-event should run in place of its own.
- `released` / `ended`: after a job stops: its slot is free again, its outcome counts.
- `refreshed`: the engine read the control document again (pauses, breakers); `close`: the
  engine stops.

Adding a policy: write its module here, add it to `registered`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from jobs_lib.model.job import Job
    from jobs_lib.model.outcomes import Outcome
    from jobs_lib.registry import HandlerSpec
    from jobs_lib.store import Claim


@dataclass(frozen=True)
class Hold:
    """Why a job may not start now."""

    reason: str
    #: True: claimable again once room frees (a limit); False: leave it for a later read.
    wait: bool = False

    @classmethod
    def skip(cls, reason: str) -> Hold:
        return cls(reason, wait=False)

    @classmethod
    def until_room(cls, reason: str) -> Hold:
        return cls(reason, wait=True)


class Policy:
    """One rule of what may run now, and what happens after. Every hook has a harmless default."""

    #: The policy's name: in logs, and as `Execution.claimed_by` when it claimed the job.
    name: ClassVar[str] = "policy"

    def gate(self, job: Job, spec: HandlerSpec, now: datetime) -> Hold | None:
        """Why `job` may not start now, or None when this policy lets it."""
        return None

    def excluded_types(self, now: datetime) -> set[str]:
        """Types whose due jobs discovery need not read now."""
        return set()

    def next_room(self) -> float | None:
        """When (``time.monotonic``) a job this policy holds back may have room again, or None."""
        return None

    def lane(
        self,
        now: datetime,
        limit: int,
        shards: Sequence[int],
        skip: set[str],
        *,
        fresh_only: bool = False,
    ) -> list[Job]:
        """Candidates this policy reads itself (about `limit`, in the shard lanes `shards`, none of
        the types in `skip`), in the order they should be tried; discovery adds them to its own.
        With `fresh_only` (a runner's quick look while it still holds candidates), only what is
        new since the last full call, and cheaply."""
        return []

    def substitute(self, job: Job, spec: HandlerSpec, now: datetime) -> list[Job]:
        """Jobs a created-event of `job` should try to run in its place, in order (empty: its
        own)."""
        return []

    def takes(self, job: Job, spec: HandlerSpec, now: datetime) -> bool:
        """Whether this policy claims `job` itself (with what it guards, in one commit)."""
        return False

    def claim_jobs(
        self, jobs: list[tuple[Job, HandlerSpec]], now: datetime
    ) -> dict[str, Claim | None]:
        """Claim the jobs this policy took: a claim (or None) per job id it tried. A job left out
        was not tried now (it stays a candidate for a later read)."""
        return {}

    def held_back(self, job: Job, spec: HandlerSpec) -> bool:
        """After `claim_jobs` gave `job` no claim: True when this policy's limit kept it, so it
        waits for room; False when another claimer won it."""
        return False

    def released(self, job: Job, spec: HandlerSpec | None, ended: bool) -> None:
        """One of our jobs stopped running (`ended`: its end was recorded)."""

    def ended(self, spec: HandlerSpec, outcome: Outcome, claimed_by: str | None) -> None:
        """An attempt's outcome was recorded (`claimed_by`: the policy that claimed it, if any)."""

    def refreshed(self) -> None:
        """The engine has a newer control document (paused types, breakers)."""

    def close(self) -> None:
        """The engine stops: let go of threads and pools."""
