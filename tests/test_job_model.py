"""Reading job documents defensively (no emulator needed)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from jobs_lib.model.clock import TimeParseError, parse_time, to_iso
from jobs_lib.model.job import Job, Status

SEED_000 = {
    "completedAt": "2025-04-27T15:07:23.171Z",
    "createdAt": "2025-04-27T05:39:36.941Z",
    "metadata": {},
    "result": 0,
    "scheduledFor": "2025-04-27T05:39:36.941Z",
    "startedAt": "2025-04-27T15:07:22.720Z",
    "status": "completed",
    "type": "process_notifications",
}


def test_seed_000_document_reads_with_string_timestamps() -> None:
    job = Job.from_document("07D2PIu9jJg0vz1mXO1z", SEED_000)
    assert job.problems == ()
    assert job.status is Status.COMPLETED
    assert job.type == "process_notifications"
    assert job.created_at == datetime(2025, 4, 27, 5, 39, 36, 941000, tzinfo=UTC)
    assert job.scheduled_for == job.created_at
    assert job.started_at == datetime(2025, 4, 27, 15, 7, 22, 720000, tzinfo=UTC)
    assert job.result == 0


def test_absent_status_means_pending_and_defaults_fill_in() -> None:
    job = Job.from_document("j", {"type": "t"})
    assert job.status is Status.PENDING
    assert job.metadata == {}
    assert job.priority == 0
    assert job.attempts == 0
    assert job.max_attempts is None
    assert job.scheduled_for is None
    assert job.is_due(datetime.now(UTC))


def test_unknown_fields_are_kept() -> None:
    job = Job.from_document("j", {"type": "t", "courseId": "c1", "tags": ["a"]})
    assert job.extra == {"courseId": "c1", "tags": ["a"]}


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (
            {"type": "t", "scheduledFor": "next tuesday"},
            "scheduledFor 'next tuesday' is not a timestamp",
        ),
        ({"type": "t", "createdAt": 12}, "createdAt has type int"),
        ({"type": "t", "metadata": "oops"}, "metadata must be a map"),
        ({"type": "t", "metadata": [1, 2]}, "metadata must be a map"),
        ({"metadata": {}}, "type is missing"),
        ({"type": 5}, "type must be a non-empty string"),
        ({"type": "t", "priority": "high"}, "priority must be a whole number"),
        ({"type": "t", "maxAttempts": 0}, "maxAttempts must be at least 1"),
        ({"type": "t", "status": "queued"}, "status 'queued' is not one of"),
    ],
)
def test_unreadable_fields_become_problems_not_exceptions(
    data: dict[str, object], fragment: str
) -> None:
    job = Job.from_document("j", data)
    assert any(fragment in p for p in job.problems), job.problems


def test_iso_strings_with_offsets_and_naive_values() -> None:
    assert parse_time("2025-04-27T07:39:36+02:00") == datetime(2025, 4, 27, 5, 39, 36, tzinfo=UTC)
    assert parse_time("2025-04-27T05:39:36") == datetime(2025, 4, 27, 5, 39, 36, tzinfo=UTC)
    assert parse_time(None) is None
    with pytest.raises(TimeParseError):
        parse_time("")


def test_to_iso_round_trips_at_millisecond_precision() -> None:
    moment = datetime(2025, 4, 27, 5, 39, 36, 941000, tzinfo=UTC)
    assert to_iso(moment) == "2025-04-27T05:39:36.941Z"
    assert parse_time(to_iso(moment)) == moment


def test_lease_expiry_and_state_helpers() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    running = Job.from_document(
        "j",
        {
            "type": "t",
            "status": "in_progress",
            "lease": {"holder": "h", "token": "x"},
            "leaseExpiresAt": "2029-12-31T23:59:00Z",
        },
    )
    assert running.lease is not None and running.lease.token == "x"
    assert running.lease_expired(now)
    assert running.can_cancel and not running.can_retry
    failed = Job.from_document("j", {"type": "t", "status": "failed"})
    assert failed.can_retry and not failed.can_cancel
