"""`jobs_lib.testing.run_handler`: users test their handlers in their own process.

The first tests are the README's example: a handler module of the user's own
and the tests they would write for it, with no Firestore at all. The last one
runs a handler that writes through ``ctx.db`` against the emulator.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from jobs_lib import App, ConfigurationError, HandlerRegistry, JobContext, PermanentError, Settings
from jobs_lib.model.outcomes import Retry
from jobs_lib.model.retry import Backoff
from jobs_lib.testing import run_handler

# -- the user's handlers (what would be myapp/jobs.py) ------------------------------------------

registry = HandlerRegistry()


class ResizeInput(BaseModel):
    path: str
    width: int


@registry.handler("resize_image", input=ResizeInput, max_attempts=3, backoff=Backoff.fixed(30))
def resize_image(ctx: JobContext[ResizeInput]) -> dict[str, Any]:
    ctx.progress(10, "downloading", step=1, total_steps=2)
    if ctx.input.width <= 0:
        raise PermanentError(f"width must be positive, got {ctx.input.width}")
    if ctx.input.path.startswith("flaky:") and ctx.attempt == 1:
        raise ConnectionError("storage timed out")
    ctx.logger.info("resized %s", ctx.input.path, extra={"detail": ctx.input.width})
    ctx.progress(100, "done", step=2, total_steps=2)
    return {"path": f"{ctx.input.path}@{ctx.input.width}"}


@registry.handler("long_export")
async def long_export(ctx: JobContext[dict[str, Any]]) -> int:
    for done in range(3):
        ctx.progress(
            done * 50, f"part {done}"
        )  # raises JobCancelled once the owner asked to cancel
    return 3


@registry.handler("record_visit")
def record_visit(ctx: JobContext[dict[str, Any]]) -> str:
    ctx.db.collection("visits").document(ctx.job_id).set({"user": ctx.metadata["user"]})
    return "recorded"


# -- the user's tests ---------------------------------------------------------------------------


def test_a_handler_runs_and_reports_progress_and_logs() -> None:
    run = run_handler("resize_image", {"path": "a.png", "width": 200}, registry=registry)
    assert run.status == "completed" and run.result == {"path": "a.png@200"} and run.error is None
    assert [p["message"] for p in run.progress] == ["downloading", "done"]
    assert run.progress[0] == {
        "percent": 10,
        "message": "downloading",
        "currentStep": 1,
        "totalSteps": 2,
    }
    [line] = [entry for entry in run.logs if entry["message"] == "resized a.png"]
    assert (
        line["level"] == "INFO"
        and line["detail"] == 200
        and line["jobId"] == run.job.id
        and line["attempt"] == 1
    )


def test_a_failure_is_retried_per_the_handlers_policy_and_a_later_attempt_succeeds() -> None:
    before = datetime.now(UTC)
    first = run_handler("resize_image", {"path": "flaky:b.png", "width": 5}, registry=registry)
    after = datetime.now(UTC)
    assert first.status == "pending" and isinstance(first.error, ConnectionError)
    assert (
        isinstance(first.outcome, Retry)
        and first.error_message == "ConnectionError: storage timed out"
    )
    assert (
        before + timedelta(seconds=30) <= first.outcome.run_at <= after + timedelta(seconds=30)
    )  # Backoff.fixed(30)
    second = run_handler(
        "resize_image", {"path": "flaky:b.png", "width": 5}, registry=registry, attempt=2
    )
    assert second.status == "completed" and second.result == {"path": "flaky:b.png@5"}
    last = run_handler(
        "resize_image",
        {"path": "flaky:b.png", "width": 5},
        registry=registry,
        fields={"maxAttempts": 1},
    )
    assert (
        last.status == "failed"
        and last.error_message
        == "ConnectionError: storage timed out (attempt 1 of 1, no attempts left)"
    )


def test_permanent_errors_and_invalid_input_fail_at_once() -> None:
    permanent = run_handler("resize_image", {"path": "a.png", "width": 0}, registry=registry)
    assert (
        permanent.status == "failed"
        and permanent.error_message == "PermanentError: width must be positive, got 0"
    )
    invalid = run_handler("resize_image", {"path": "a.png"}, registry=registry)
    assert invalid.status == "failed" and invalid.error is None
    assert (
        invalid.error_message
        == "metadata is not valid input for resize_image: metadata.width: Field required"
    )


def test_a_cancel_request_stops_an_async_handler_at_its_next_progress_report() -> None:
    assert run_handler("long_export", registry=registry).result == 3
    cancelled = run_handler("long_export", registry=registry, cancel_requested=True)
    assert cancelled.status == "cancelled" and cancelled.progress == []


def test_a_handler_that_needs_firestore_says_what_to_pass() -> None:
    run = run_handler("record_visit", {"user": "u1"}, registry=registry)
    assert run.status == "pending" and isinstance(run.error, ConfigurationError)
    assert "pass db= (an emulator client) or app= to run_handler" in str(run.error)
    with pytest.raises(ConfigurationError, match="no handler is registered for job type 'nope'"):
        run_handler("nope", registry=registry)


def test_a_handler_writing_through_ctx_db_runs_against_the_emulator(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    app = App(settings, registry=registry)
    run = run_handler("record_visit", {"user": "u1"}, app=app, job_id="visit-1")
    assert run.status == "completed" and run.result == "recorded"
    assert app.db.collection("visits").document("visit-1").get().to_dict() == {"user": "u1"}
    assert (
        app.store.get("visit-1") is None
    )  # no job document was written: the run is the handler's alone
