"""`jobs_lib.model.decisions.decide`: the whole after-an-attempt rule, checked over its input
space."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from jobs_lib.model.decisions import AttemptEnd, Ending, decide
from jobs_lib.model.outcomes import Cancelled, Completed, Failed, Retry
from jobs_lib.model.retry import Backoff

NOW = datetime(2026, 12, 1, tzinfo=UTC)

backoffs = st.one_of(
    st.builds(Backoff.fixed, st.floats(0, 86400)),
    st.builds(
        Backoff.exponential,
        st.floats(0, 3600),
        st.floats(1, 10),
        st.floats(0, 86400),
        st.booleans(),
    ),
)
ends = st.builds(
    AttemptEnd,
    ending=st.sampled_from(Ending),
    attempt=st.integers(1, 10_000),
    max_attempts=st.integers(1, 10_000),
    now=st.just(NOW),
    expire_at=st.just(NOW + timedelta(days=30)),
    backoff=backoffs,
    jitter=st.floats(0, 1, exclude_max=True),
    result=st.one_of(st.none(), st.integers(), st.text(max_size=5)),
    error=st.text(max_size=20),
    details=st.dictionaries(
        st.sampled_from(["errorType", "traceback", "reason"]), st.text(max_size=5), max_size=2
    ),
    cancel_requested=st.booleans(),
    lease_lost=st.booleans(),
    timeout=st.floats(0.001, 3600),
)


@settings(max_examples=2000, deadline=None)
@given(ends)
def test_every_attempt_end_gets_exactly_the_outcome_the_rules_give(end: AttemptEnd) -> None:
    outcome = decide(end)
    # Only a returned result completes a job, and with that result.
    assert isinstance(outcome, Completed) == (end.ending is Ending.RETURNED)
    if isinstance(outcome, Completed):
        assert outcome.result == end.result and outcome.expire_at == end.expire_at
    # Nothing is recorded exactly when another run owns the job (interrupted, no cancel to honour).
    assert (outcome is None) == (
        end.ending is Ending.INTERRUPTED and not (end.cancel_requested and not end.lease_lost)
    )
    # A retry only while attempts remain, only for ordinary failures and timeouts, never early,
    # never past the cap.
    if isinstance(outcome, Retry):
        assert end.attempt < end.max_attempts
        assert end.ending is Ending.RAISED or (
            end.ending is Ending.TIMED_OUT and not end.cancel_requested
        )
        wait = (outcome.run_at - end.now).total_seconds()
        cap = end.backoff.delay if end.backoff.kind == "fixed" else end.backoff.max_delay
        assert 0 <= wait <= cap + 1e-6
        assert outcome.details["attempt"] == end.attempt
    # Failing for good: poison, permanent errors, and ordinary failures with no attempts left.
    if isinstance(outcome, Failed):
        assert (
            outcome.details["attempt"] == end.attempt
            and outcome.expire_at == end.expire_at
            and outcome.error
        )
        if end.ending in (Ending.RAISED, Ending.TIMED_OUT):
            assert end.attempt >= end.max_attempts and "no attempts left" in outcome.error
        else:
            assert end.ending in (Ending.UNSTORABLE, Ending.INVALID_INPUT, Ending.PERMANENT)
    # A cancel request the handler saw, or one it ignored until its timeout, ends the job cancelled.
    if end.ending is Ending.CANCELLED or (end.ending is Ending.TIMED_OUT and end.cancel_requested):
        assert isinstance(outcome, Cancelled)
    if isinstance(outcome, Cancelled):
        assert end.ending in (Ending.CANCELLED, Ending.TIMED_OUT, Ending.INTERRUPTED)


def test_the_messages_a_person_reads() -> None:
    base = {"now": NOW, "expire_at": NOW, "backoff": Backoff.fixed(10)}
    assert decide(AttemptEnd(Ending.RAISED, 3, 3, error="ValueError: bad", **base)) == Failed(
        "ValueError: bad (attempt 3 of 3, no attempts left)", {"attempt": 3}, NOW, exhausted=True
    )  # type: ignore[arg-type]
    assert decide(AttemptEnd(Ending.RAISED, 1, 3, error="ValueError: bad", **base)) == Retry(
        "ValueError: bad", {"attempt": 1}, NOW + timedelta(seconds=10)
    )  # type: ignore[arg-type]
    timed_out = decide(AttemptEnd(Ending.TIMED_OUT, 1, 1, timeout=5, **base))  # type: ignore[arg-type]
    assert (
        isinstance(timed_out, Failed)
        and timed_out.error
        == "the handler did not finish within its timeout of 5s (attempt 1 of 1, no attempts left)"
    )
    assert timed_out.details == {"attempt": 1, "reason": "timeout"}
    ignored = decide(AttemptEnd(Ending.TIMED_OUT, 1, 3, timeout=5, cancel_requested=True, **base))  # type: ignore[arg-type]
    assert isinstance(ignored, Cancelled) and "abandoned at its timeout of 5s" in ignored.reason
    assert (
        decide(AttemptEnd(Ending.INTERRUPTED, 1, 3, cancel_requested=True, lease_lost=True, **base))
        is None
    )  # type: ignore[arg-type]


@given(st.integers(1, 10**6), st.floats(0, 1, exclude_max=True))
def test_backoff_waits_are_pure_and_bounded(attempt: int, jitter: float) -> None:
    backoff = Backoff.exponential(delay=5, max_delay=600)
    wait = backoff.wait(attempt, jitter)
    assert wait == backoff.wait(attempt, jitter) and 0 <= wait <= 600
    assert Backoff.exponential(delay=5, max_delay=600, jitter=False).wait(attempt, jitter) == min(
        5 * 2 ** min(attempt - 1, 1000), 600
    )
