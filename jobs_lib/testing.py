"""Test your handlers in your test's own process: `run_handler`.

    from jobs_lib.testing import run_handler

    def test_resize():
        run = run_handler("resize_image", {"path": "a.png", "width": 200})
        assert run.status == "completed" and run.result == {"path": "a.png@200"}
        assert run.progress[0]["message"] == "downloading"

The handler runs exactly as a worker runs it (its pydantic input model, its
`JobContext`, its retry policy decided by the same `jobs_lib.model.decisions.decide`),
but in the calling thread, with no claim, no lease and no writes to the job
document: what it would have recorded is returned instead. Durable handlers
run whole: ``ctx.step`` results are kept in memory (``run.steps``; pass
``steps=`` to start as a later attempt would, some already recorded),
``ctx.checkpoint`` cursors are collected, a ``ctx.sleep`` ends the slice and
the handler is replayed at once from the top as after its wake-up, and
``continue_every=N`` continues a continuable handler at every N-th checkpoint. A handler that
never touches ``ctx.db`` needs no Firestore at all (like procrastinate's
in-memory connector or dramatiq's stub broker); pass ``db=`` (an emulator
client) or ``app=`` for one that does.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from jobs_lib.context import JobContext
from jobs_lib.engine.durable import MAX_STEPS, Suspend, cursor_value, step_value
from jobs_lib.engine.runner import InvalidInput, describe_error, qualname, validated_input
from jobs_lib.errors import ConfigurationError, JobCancelled, LeaseLost, PermanentError
from jobs_lib.model.decisions import AttemptEnd, Ending, decide
from jobs_lib.model.job import Job
from jobs_lib.model.outcomes import Cancelled, Completed, Failed, Outcome, Retry
from jobs_lib.observability.logs import JobLogger, job_fields
from jobs_lib.registry import DEFAULT_RETENTION, HandlerRegistry, HandlerSpec, default_registry
from jobs_lib.store.results import storable_result

if TYPE_CHECKING:
    from jobs_lib.store import JobStore


@dataclass
class HandlerRun:
    """What one run of a handler did and what the runner would have recorded."""

    job: Job
    #: The value recorded as the job's `result` (None unless completed).
    result: Any = None
    #: Each `ctx.progress(...)` report, in order (``percent``, ``message``, ``currentStep``,
    #: ``totalSteps``).
    progress: list[dict[str, Any]] = field(default_factory=list)
    #: The handler's log lines: ``level``, ``message`` and the structured fields.
    logs: list[dict[str, Any]] = field(default_factory=list)
    #: The exception the handler raised, if any.
    error: BaseException | None = None
    #: What the runner would record: Completed, Retry (attempts remain), Failed or Cancelled.
    outcome: Outcome | None = None
    #: The durable steps' results by name (those given as `steps=` too), and the names of the
    #: steps that ran here (each at most once).
    steps: dict[str, Any] = field(default_factory=dict)
    steps_run: list[str] = field(default_factory=list)
    #: Each ``ctx.checkpoint`` cursor, in order.
    checkpoints: list[Any] = field(default_factory=list)
    #: Each durable sleep's length in seconds, in order (run_handler does not wait them out).
    sleeps: list[float] = field(default_factory=list)
    #: How many times the handler was continued (``continue_every``) or replayed after a sleep.
    continuations: int = 0

    @property
    def status(self) -> str:
        """The job's status after this attempt: completed, pending (a retry), failed or
        cancelled."""
        if isinstance(self.outcome, Completed):
            return "completed"
        if isinstance(self.outcome, Retry):
            return "pending"
        if isinstance(self.outcome, Failed):
            return "failed"
        if isinstance(self.outcome, Cancelled):
            return "cancelled"
        return "interrupted"

    @property
    def error_message(self) -> str | None:
        """The job's `error` as it would be recorded."""
        if isinstance(self.outcome, Failed | Retry):
            return self.outcome.error
        if isinstance(self.outcome, Cancelled):
            return self.outcome.reason
        return None


class _Capture(logging.Handler):
    def __init__(self, into: list[dict[str, Any]]) -> None:
        super().__init__(logging.DEBUG)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        skip = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
        extra = {k: v for k, v in vars(record).items() if k not in skip}
        self.into.append({"level": record.levelname, "message": record.getMessage(), **extra})


class _TestRun:
    """The `jobs_lib.context.RunControl` behind a test run: no lease, nothing written."""

    def __init__(
        self,
        job: Job,
        attempt: int,
        spec: HandlerSpec,
        logger: JobLogger,
        db: Any,
        store: JobStore | None,
        cancel_requested: bool,
        registry: HandlerRegistry | None = None,
    ) -> None:
        self.job = job
        self.attempt = attempt
        self.deadline = datetime.now(UTC) + timedelta(seconds=spec.timeout)
        self.logger = logger
        self._db = db
        self._store = store
        self.cancel_requested = cancel_requested
        self.lease_lost = False
        self.lost_reason = ""
        self.reports: list[dict[str, Any]] = []
        self.parent_results: dict[str, Any] | None = {}
        self.registry = registry if registry is not None else default_registry
        self.steps: dict[str, Any] = {}
        self.steps_run: list[str] = []
        self.cursor: Any = None
        self.checkpoints: list[Any] = []
        self.continue_every: int | None = None
        self.sleep_count = 0
        self.slept: set[int] = set()
        self.sleep_seconds: list[float] = []

    @property
    def db(self) -> Any:
        if self._db is None:
            raise ConfigurationError(
                "this handler run has no Firestore: pass db= (an emulator client) or app= to "
                "run_handler"
            )
        return self._db

    @property
    def store(self) -> JobStore:
        if self._store is None:
            raise ConfigurationError("this handler run has no job store: pass app= to run_handler")
        return self._store

    def report_progress(self, report: dict[str, Any]) -> None:
        self.reports.append(dict(report))

    # -- durable jobs: kept in memory across the replays of one run_handler call --------

    def now(self) -> datetime:
        return datetime.now(UTC)

    def saved_step(self, name: str) -> tuple[bool, Any]:
        if name in self.steps:
            return True, self.steps[name]
        return False, None

    def record_step(self, name: str, value: Any, ms: float) -> Any:
        if len(self.steps) >= MAX_STEPS:
            raise PermanentError(
                f"a job may record at most {MAX_STEPS} steps; step {name!r} is one more"
            )
        stored, _size = step_value(name, value)
        self.steps[name] = stored
        self.steps_run.append(name)
        self.cursor = None
        return stored

    def checkpoint(self, cursor: Any) -> None:
        self.cursor = cursor_value(cursor)
        self.checkpoints.append(self.cursor)
        if self.continue_every and len(self.checkpoints) % self.continue_every == 0:
            raise Suspend()

    def limit_step(self, name: str, seconds: float | None) -> None:
        """Steps run to their end here (a test's handler has no keeper to abandon it)."""

    def sleep_until(self, when: datetime) -> None:
        index = self.sleep_count
        self.sleep_count += 1
        if index in self.slept:
            return
        seconds = (when - self.now()).total_seconds()
        if seconds <= 0:
            return
        self.slept.add(index)
        self.sleep_seconds.append(seconds)
        raise Suspend(until=when, index=index)


def run_handler(
    job_type: str,
    metadata: dict[str, Any] | None = None,
    *,
    registry: HandlerRegistry | None = None,
    attempt: int = 1,
    job_id: str | None = None,
    fields: dict[str, Any] | None = None,
    cancel_requested: bool = False,
    db: Any = None,
    app: Any = None,
    parent_results: dict[str, Any] | None = None,
    steps: dict[str, Any] | None = None,
    cursor: Any = None,
    continue_every: int | None = None,
) -> HandlerRun:
    """Run the handler registered for `job_type` on a job with this `metadata`, here and now.

    `fields` adds other document fields (``orgId``, ``maxAttempts``, ...);
    `attempt` sets ``ctx.attempt`` (and whether a failure would be retried);
    `cancel_requested` makes ``ctx.progress()`` raise as an owner's cancel would.
    `app` (a `jobs_lib.app.App` on the emulator) gives the handler ``ctx.db``
    and ``ctx.store``; `db` alone gives ``ctx.db``. `parent_results` is what
    ``ctx.parent_results`` returns (the results of a flow job's parents, by name). `steps`
    (name -> result) are steps an earlier run recorded, `cursor` the checkpoint it left;
    `continue_every` continues a ``continuable`` handler at every N-th ``ctx.checkpoint``.
    """
    registry = (
        registry
        if registry is not None
        else (app.registry if app is not None else default_registry)
    )
    spec = registry.get(job_type)
    if spec is None:
        raise ConfigurationError(
            f"no handler is registered for job type {job_type!r} (registered: "
            f"{', '.join(registry.types()) or 'none'})"
        )
    job = Job.from_document(
        job_id or f"test-{uuid.uuid4().hex[:12]}",
        {
            "type": job_type,
            "status": "in_progress",
            "metadata": metadata or {},
            "attempts": attempt,
            **(fields or {}),
        },
    )
    lines: list[dict[str, Any]] = []
    base = logging.getLogger(f"jobs_lib.testing.{job.id}")
    capture = _Capture(lines)
    base.addHandler(capture)
    base.setLevel(logging.DEBUG)
    logger = JobLogger(
        base, {**job_fields(job.id, job_type, attempt), "worker": "jobs_lib.testing"}
    )
    control = _TestRun(
        job,
        attempt,
        spec,
        logger,
        db if db is not None else (app.db if app is not None else None),
        app.store if app is not None else None,
        cancel_requested,
        registry,
    )
    control.parent_results = (
        parent_results
        if parent_results is not None
        else ({} if not job.depends_on or app is None else None)
    )
    control.steps = dict(steps or {})
    control.cursor = cursor
    control.continue_every = continue_every if spec.continuable else None
    run = HandlerRun(job=job, logs=lines)
    try:
        for _ in range(MAX_REPLAYS):
            control.sleep_count = 0
            try:
                run.outcome = _attempt(spec, job, control, run)
                break
            except Suspend:
                run.continuations += (
                    1  # a continuation or a wake-up: the handler runs again from the top
                )
        else:
            raise RuntimeError(f"the handler was continued {MAX_REPLAYS} times without ending")
    finally:
        base.removeHandler(capture)
        run.progress = control.reports
        run.steps, run.steps_run, run.checkpoints, run.sleeps = (
            control.steps,
            control.steps_run,
            control.checkpoints,
            control.sleep_seconds,
        )
    return run


#: A run_handler call replays a handler (after sleeps and continuations) at most this often.
MAX_REPLAYS = 10_000


def _run_async(coroutine: Any) -> Any:
    """Run a coroutine to its end here, or on a thread of its own when this thread already runs an
    event loop (pytest-asyncio, Playwright's sync API): `asyncio.run` refuses a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _attempt(spec: HandlerSpec, job: Job, control: _TestRun, run: HandlerRun) -> Outcome | None:
    now = datetime.now(UTC)

    def end(ending: Ending, **facts: Any) -> Outcome | None:
        return decide(
            AttemptEnd(
                ending,
                control.attempt,
                job.max_attempts or spec.max_attempts,
                now,
                now + (spec.retention or DEFAULT_RETENTION),
                spec.backoff,
                0.0,
                cancel_requested=control.cancel_requested,
                timeout=spec.timeout,
                **facts,
            )
        )

    try:
        value = validated_input(spec, job)
    except InvalidInput as exc:
        return end(Ending.INVALID_INPUT, error=str(exc))
    context: JobContext[Any] = JobContext(control, value)
    try:
        result = _run_async(spec.fn(context)) if spec.is_async else spec.fn(context)
    except JobCancelled as exc:
        run.error = exc
        return end(Ending.CANCELLED)
    except LeaseLost as exc:
        run.error = exc
        return end(Ending.INTERRUPTED)
    except PermanentError as exc:
        run.error = exc
        return end(
            Ending.PERMANENT, error=describe_error(exc), details={"errorType": qualname(exc)}
        )
    except Exception as exc:
        run.error = exc
        return end(
            Ending.RAISED,
            error=describe_error(exc),
            details={"errorType": qualname(exc), "traceback": traceback.format_exc()[-4000:]},
        )
    problem, stored = storable_result(result, job.raw)
    if problem:
        return end(Ending.UNSTORABLE, error=problem)
    run.result = stored
    return end(Ending.RETURNED, result=stored)


__all__ = ["HandlerRun", "run_handler"]
