"""What a handler receives: the job, its validated input, progress, cancellation, a logger."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from jobs_lib.engine.durable import check_step_name
from jobs_lib.errors import JobCancelled, LeaseLost
from jobs_lib.model.job import Job
from jobs_lib.observability.logs import JobLogger

if TYPE_CHECKING:
    from jobs_lib.store import JobStore

InputT = TypeVar("InputT")
T = TypeVar("T")


class Handlers(Protocol):
    """The handler registry as a context sees it (`jobs_lib.registry.HandlerRegistry`)."""

    def get(self, job_type: str | None) -> Any: ...


class RunControl(Protocol):
    """What a context needs from the run behind it: `jobs_lib.engine.runner.Execution` in a worker
    or function, `jobs_lib.testing`'s stand-in in a user's test."""

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
    def now(self) -> datetime: ...
    def saved_step(self, name: str) -> tuple[bool, Any]: ...
    def record_step(self, name: str, value: Any, ms: float) -> Any: ...
    @property
    def cursor(self) -> Any: ...
    def checkpoint(self, cursor: Any) -> None: ...
    def sleep_until(self, when: datetime) -> None: ...
    def limit_step(self, name: str, seconds: float | None) -> None: ...


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
        return {
            (parent.flow_name or parent_id): parent.result
            for parent_id in job.depends_on
            if (parent := found.get(parent_id)) is not None
        }

    @property
    def cancel_requested(self) -> bool:
        """True once the job's owner has asked to cancel it."""
        return self._execution.cancel_requested

    def check_cancelled(self) -> None:
        """Raise `JobCancelled` if cancellation was requested, `LeaseLost` if this run was
        superseded."""
        if self._execution.lease_lost:
            raise LeaseLost(
                f"job {self.job_id}: this run no longer holds the job "
                f"({self._execution.lost_reason})"
            )
        if self._execution.cancel_requested:
            raise JobCancelled(f"job {self.job_id} was cancelled at its owner's request")

    # -- durable jobs (jobs_lib.engine.durable) -------------------------------------------------

    def step(
        self,
        name: str,
        fn: Callable[..., T],
        /,
        *args: Any,
        step_timeout: float | None = None,
        **kwargs: Any,
    ) -> T:
        """Run ``fn(*args, **kwargs)`` once for this job and return its result.

        The result is recorded in Firestore (fenced by this run's claim) before the handler goes
        on; on a later attempt, continuation or wake-up the step returns the recorded result
        without running `fn` again. Results come back as stored: JSON-like values (a pydantic
        model as its dump, a tuple as a list). A step that raises records nothing and runs again
        on the next attempt. Names are 1 to 128 letters, digits, ``_`` or ``-``, unique in the job.
        With `step_timeout` (seconds), a step still running then fails the attempt as a timeout
        ("step 'name' did not finish within its timeout"), retried by the handler's policy.
        """
        check_step_name(name)
        found, value = self._execution.saved_step(name)
        if found:
            return value  # type: ignore[no-any-return]
        self.check_cancelled()
        _check_timeout(step_timeout)
        started = time.monotonic()
        if step_timeout is not None:
            self._execution.limit_step(name, step_timeout)
        try:
            result = fn(*args, **kwargs)
        finally:
            if step_timeout is not None:
                self._execution.limit_step(name, None)
        if inspect.isawaitable(result):
            raise TypeError(
                f"step {name!r}: {fn!r} returned an awaitable; use `await ctx.astep(...)` for "
                f"async functions"
            )
        return self._execution.record_step(name, result, (time.monotonic() - started) * 1000)  # type: ignore[no-any-return]

    async def astep(
        self,
        name: str,
        fn: Callable[..., Any],
        /,
        *args: Any,
        step_timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """`step` for async handlers: `fn` may be a coroutine function (or a plain one); reading and
        recording run off the event loop. `step_timeout` cancels a coroutine still running then."""
        check_step_name(name)
        found, value = await asyncio.to_thread(self._execution.saved_step, name)
        if found:
            return value
        self.check_cancelled()
        _check_timeout(step_timeout)
        started = time.monotonic()
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            try:
                result = await asyncio.wait_for(result, step_timeout)
            except TimeoutError:
                raise TimeoutError(
                    f"step {name!r} did not finish within its timeout of {step_timeout:g}s"
                ) from None
        return await asyncio.to_thread(
            self._execution.record_step, name, result, (time.monotonic() - started) * 1000
        )

    @property
    def cursor(self) -> Any:
        """The last checkpoint saved (by this run, or by the run this one continues); None at
        first."""
        return self._execution.cursor

    def checkpoint(self, cursor: Any) -> None:
        """Save a position inside a long step (rows done, the last id handled): JSON-like, small.

        It is written with the next progress write (at most once a second) and always when the
        invocation ends. In a ``continuable=True`` handler this is also where the job stops when
        its invocation nears its end: the runner hands it back as a continuation and the next
        invocation goes on, reading ``ctx.cursor``. Raises `JobCancelled` or `LeaseLost` as
        `progress` does. Finishing a step clears the cursor.
        """
        self.check_cancelled()
        self._execution.checkpoint(cursor)

    def sleep(self, seconds: float) -> None:
        """Sleep durably: end this invocation and resume the handler after `seconds`, holding no
        concurrency slot, lease or instance meanwhile, the attempt not counted. The handler runs
        again from the top: its steps return their results, and this sleep returns at once. Sleeps
        are told apart by their order, so a handler must sleep in the same order on every run."""
        if seconds < 0:
            raise ValueError(f"a sleep must not be negative, got {seconds}")
        self.sleep_until(self._execution.now() + timedelta(seconds=seconds))

    def sleep_until(self, when: datetime) -> None:
        """`sleep` until a time (an aware datetime); a time already past returns at once."""
        if when.tzinfo is None:
            raise ValueError("sleep_until needs an aware datetime (with a timezone)")
        self.check_cancelled()
        self._execution.sleep_until(when)

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


def _check_timeout(seconds: float | None) -> None:
    if seconds is not None and not seconds > 0:
        raise ValueError(f"a step's timeout must be a positive number of seconds, got {seconds!r}")


__all__ = ["Handlers", "JobContext", "RunControl"]
