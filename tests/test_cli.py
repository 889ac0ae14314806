"""The `jobs` command line against the emulator."""

from __future__ import annotations

import json
from typing import Any

from typer.testing import CliRunner

from jobs_lib import JobsClient, Status
from jobs_lib.cli import app
from jobs_lib.store import JobStore

runner = CliRunner()


def invoke(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    return result


def test_enqueue_get_cancel_retry_round_trip(store: JobStore) -> None:
    created = invoke("enqueue", "process_notifications", "--metadata", '{"targetUsers": ["a"]}', "--priority", "2", "--key", "k1")
    assert created.exit_code == 0, created.output
    job = json.loads(created.output)
    assert job["status"] == "pending" and job["priority"] == 2 and job["metadata"] == {"targetUsers": ["a"]}
    again = json.loads(invoke("enqueue", "process_notifications", "--key", "k1").output)
    assert again["id"] == job["id"]

    shown = invoke("get", job["id"])
    assert shown.exit_code == 0 and json.loads(shown.output)["id"] == job["id"]

    cancelled = json.loads(invoke("cancel", job["id"]).output)
    assert cancelled["status"] == "cancelled"
    retried = json.loads(invoke("retry", job["id"]).output)
    assert retried["status"] == "pending" and retried["attempts"] == 0


def test_errors_exit_non_zero_with_a_message(store: JobStore) -> None:
    missing = invoke("get", "nope")
    assert missing.exit_code == 1 and "no job with id 'nope'" in missing.output
    bad = invoke("enqueue", "t", "--metadata", "{not json")
    assert bad.exit_code != 0 and "not JSON" in bad.output


def test_list_and_stats(client: JobsClient, store: JobStore) -> None:
    client.enqueue("process_notifications", {})
    done = client.enqueue("other", {})
    client.cancel(done.id)
    listed = invoke("list", "--status", "cancelled")
    assert listed.exit_code == 0 and done.id in listed.output
    stats = invoke("stats")
    assert stats.exit_code == 0
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in stats.output.splitlines() if line.count("│") == 3}
    assert rows["pending"] == "1" and rows["cancelled"] == "1" and rows["completed"] == "0"


def test_worker_burst_runs_what_is_due_and_exits(client: JobsClient, store: JobStore) -> None:
    ids = [client.enqueue("process_notifications", {"targetUsers": [f"u{i}"]}).id for i in range(3)]
    result = invoke("worker", "--burst", "--concurrency", "2")
    assert result.exit_code == 0, result.output
    assert all(store.get(i).status is Status.COMPLETED for i in ids)  # type: ignore[union-attr]
