"""What a handler receives: the job, its validated input, progress, cancellation, a logger."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from jobs_lib.errors import JobCancelled, LeaseLost
from jobs_lib.job import Job
from jobs_lib.logs import JobLogger

if TYPE_CHECKING:
    from jobs_lib.store import JobStore

InputT = TypeVar("InputT")


class Handlers(Protocol):
    """The handler registry as a context sees it (`jobs_lib.registry.HandlerRegistry`)."""

    def get(self, job_type: str | None) -> Any: ...


class RunControl(Protocol):
    """What a context needs from the run behind it: `jobs_lib.runner.Execution` in a worker or
    function, `jobs_lib.testing`'s stand-in in a user's test."""

    @property
    def job(self) -> Job: ...
    @property
    def attempt(self) -> int: ...
    @property
    def deadline(self) -> datetime: ...
    @property
    def logger(self) -> JobLogger: ...
    @property
    def db(self) -> Any: ...
    @property
    def store(self) -> JobStore: ...
    @property
    def registry(self) -> Handlers: ...
    @property
    def cancel_requested(self) -> bool: ...
    @property
    def lease_lost(self) -> bool: ...
    @property
    def lost_reason(self) -> str: ...

    def report_progress(self, report: dict[str, Any]) -> None: ...


class JobContext(Generic[InputT]):
    """The running job, as its handler sees it.

    ``input`` is the job's ``metadata`` validated by the handler's pydantic
    model (or the raw map when the handler declares none). ``attempt`` counts
    from 1; a handler that may run twice can key its side effects on
    ``job_id`` to stay idempotent.
    """

    def __init__(self, execution: RunControl, input: InputT) -> None:
        self._execution = execution
        self.input: InputT = input
        self.logger: JobLogger = execution.logger
        self._parent_results: dict[str, Any] | None = None

    @property
    def job(self) -> Job:
        """The job document as it was claimed."""
        return self._execution.job

    @property
    def job_id(self) -> str:
        """The job's document id."""
        return self._execution.job.id

    @property
    def attempt(self) -> int:
        """This attempt's number, from 1."""
        return self._execution.attempt

    @property
    def metadata(self) -> dict[str, Any]:
        """The raw ``metadata`` map."""
        metadata = self.job.metadata
        return metadata if isinstance(metadata, dict) else {}

    @property
    def deadline(self) -> datetime:
        """When this attempt times out."""
        return self._execution.deadline

    @property
    def db(self) -> Any:
        """The Firestore client, for the handler's own reads and writes."""
        return self._execution.db

    @property
    def store(self) -> JobStore:
        """The job store this run records through (for jobs_lib's own maintenance handlers)."""
        return self._execution.store

    @property
    def registry(self) -> Handlers:
        """The handlers of the process running this job (jobs_lib's own handlers look up a type's
        options here, such as the webhook a handler declares, which no document holds)."""
        return self._execution.registry

    @property
    def parent_results(self) -> dict[str, Any]:
        """The results of the jobs this one waits for in its flow, by their names in the flow
        (read once, with one batched read, on first use; empty for a job outside a flow)."""
        if self._parent_results is None:
            given = getattr(self._execution, "parent_results", None)
            self._parent_results = dict(given) if given is not None else self._read_parent_results()
        return self._parent_results

    def _read_parent_results(self) -> dict[str, Any]:
        job = self.job
        if not job.depends_on:
            return {}
        found = self._execution.store.get_many(list(job.depends_on), "flows:parent_results")
        return {(parent.flow_name or parent_id): parent.result for parent_id in job.depends_on if (parent := found.get(parent_id)) is not None}

    @property
    def cancel_requested(self) -> bool:
        """True once the job's owner has asked to cancel it."""
        return self._execution.cancel_requested

    def check_cancelled(self) -> None:
        """Raise `JobCancelled` if cancellation was requested, `LeaseLost` if this run was superseded."""
        if self._execution.lease_lost:
            raise LeaseLost(f"job {self.job_id}: this run no longer holds the job ({self._execution.lost_reason})")
        if self._execution.cancel_requested:
            raise JobCancelled(f"job {self.job_id} was cancelled at its owner's request")

    def progress(
        self,
        percent: float | None = None,
        message: str | None = None,
        step: int | None = None,
        total_steps: int | None = None,
    ) -> None:
        """Report progress; written to the job's ``progress`` map, at most about once a second.

        Raises `JobCancelled` or `LeaseLost` when the run should stop, so a
        handler that reports progress stops at its next report.
        """
        if percent is not None and not 0 <= percent <= 100:
            raise ValueError(f"progress percent must be between 0 and 100, got {percent}")
        if step is not None and total_steps is not None and not 0 <= step <= total_steps:
            raise ValueError(f"progress step {step} is outside 0..{total_steps}")
        self.check_cancelled()
        report: dict[str, Any] = {}
        if percent is not None:
            report["percent"] = percent
        if message is not None:
            report["message"] = message
        if step is not None:
            report["currentStep"] = step
        if total_steps is not None:
            report["totalSteps"] = total_steps
        if report:
            self._execution.report_progress(report)


__all__ = ["Handlers", "JobContext", "RunControl"]
