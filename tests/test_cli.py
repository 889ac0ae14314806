"""The `jobs` command line against the emulator."""

from __future__ import annotations

import json
from typing import Any

from typer.testing import CliRunner

from jobs_lib import JobsClient, Status
from jobs_lib.cli import app
from jobs_lib.registry import HandlerRegistry
from jobs_lib.store import JobStore

runner = CliRunner()


def invoke(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    return result


def test_enqueue_get_cancel_retry_round_trip(store: JobStore) -> None:
    created = invoke(
        "enqueue",
        "process_notifications",
        "--metadata",
        '{"targetUsers": ["a"]}',
        "--priority",
        "2",
        "--key",
        "k1",
    )
    assert created.exit_code == 0, created.output
    job = json.loads(created.output)
    assert (
        job["status"] == "pending"
        and job["priority"] == 2
        and job["metadata"] == {"targetUsers": ["a"]}
    )
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
    rows = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in stats.output.splitlines()
        if line.count("│") == 3
    }
    assert rows["pending"] == "1" and rows["cancelled"] == "1" and rows["completed"] == "0"


def test_worker_burst_runs_what_is_due_and_exits(client: JobsClient, store: JobStore) -> None:
    ids = [client.enqueue("process_notifications", {"targetUsers": [f"u{i}"]}).id for i in range(3)]
    result = invoke("worker", "--burst", "--concurrency", "2")
    assert result.exit_code == 0, result.output
    assert all(store.get(i).status is Status.COMPLETED for i in ids)  # type: ignore[union-attr]


def test_deploy_prints_a_command_for_every_function_in_main_py() -> None:
    import ast
    import shlex

    from .conftest import ROOT

    result = invoke(
        "deploy",
        "--project",
        "acme-prod",
        "--region",
        "europe-west1",
        "--trigger-location",
        "eur3",
        "--handlers",
        "jobs_lib.builtin",
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line and not line.startswith("#")]
    deployed = {}
    for line in lines:
        words = shlex.split(line)
        if words[:3] == ["gcloud", "functions", "deploy"]:
            options = dict(w.removeprefix("--").split("=", 1) for w in words[4:] if "=" in w)
            deployed[options["entry-point"]] = (words[3], options, words)
    tree = ast.parse((ROOT / "jobs_lib" / "deploy" / "entrypoints.py").read_text())
    entry_points = {
        n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.decorator_list
    }
    assert set(deployed) == entry_points == {"on_job_created", "tick", "api"}
    _, created, created_words = deployed["on_job_created"]
    assert (
        created["trigger-location"] == "eur3"
        and created["region"] == "europe-west1"
        and created["project"] == "acme-prod"
    )
    filters = [w.split("=", 1)[1] for w in created_words if w.startswith("--trigger-event-filters")]
    assert (
        "type=google.cloud.firestore.document.v1.created" in filters
        and "document=backgroundJobs/{jobId}" in filters
    )
    assert (
        "--no-allow-unauthenticated" in deployed["tick"][2]
        and "--allow-unauthenticated" in deployed["api"][2]
    )
    assert "JOBS_HANDLERS=jobs_lib.builtin" in deployed["tick"][1]["set-env-vars"]
    assert any(line.startswith("gcloud scheduler jobs create http jobs-tick") for line in lines)
    assert lines[0] == "jobs functions-package functions"


def test_a_flow_from_a_json_file_is_created_shown_and_cancelled(
    client: JobsClient, store: JobStore, tmp_path: Any
) -> None:
    path = tmp_path / "flow.json"
    path.write_text(
        json.dumps(
            {
                "flowId": "nightly-2026-12-02",
                "onParentFailure": "wait",
                "jobs": [
                    {
                        "name": "extract",
                        "type": "process_notifications",
                        "metadata": {"targetUsers": ["a"]},
                    },
                    {
                        "name": "load",
                        "type": "process_notifications",
                        "dependsOn": ["extract"],
                        "priority": 3,
                    },
                ],
            }
        )
    )
    created = invoke("flow", "create", str(path), "--collection", store.settings.collection)
    assert created.exit_code == 0, created.output
    assert (
        "flow nightly-2026-12-02" in created.output
        and "blocked" in created.output
        and "extract" in created.output
    )
    jobs = {job.flow_name: job for job in client.flow_jobs("nightly-2026-12-02")}
    assert (jobs["extract"].status, jobs["load"].status, jobs["load"].priority) == (
        Status.PENDING,
        Status.BLOCKED,
        3,
    )
    assert (
        jobs["load"].depends_on == (jobs["extract"].id,)
        and jobs["load"].raw["onParentFailure"] == "wait"
    )
    assert invoke("flow", "show", "nightly-2026-12-02").exit_code == 0
    cancelled = invoke("flow", "cancel", "nightly-2026-12-02")
    assert cancelled.exit_code == 0 and "cancelled" in cancelled.output
    assert {job.status for job in client.flow_jobs("nightly-2026-12-02")} == {Status.CANCELLED}

    path.write_text(
        json.dumps({"jobs": [{"name": "a", "type": "process_notifications", "dependsOn": ["a"]}]})
    )
    refused = invoke("flow", "create", str(path))
    assert refused.exit_code == 1 and "depends on itself" in refused.output
    path.write_text(json.dumps({"jobs": [{"name": "a", "kind": "x"}]}))
    assert "jobs[0]: a job is an object" in invoke("flow", "create", str(path)).output
    missing = invoke("flow", "show", "nope")
    assert missing.exit_code == 1 and "no flow with id 'nope'" in missing.output


def test_stats_show_a_fair_types_keys(
    client: JobsClient, store: JobStore, registry: HandlerRegistry
) -> None:
    registry.handler("fair_cli", fair_key="orgId")(lambda ctx: None)
    client.enqueue_many([{"type": "fair_cli", "org_id": "acme"} for _ in range(3)])
    client.enqueue("fair_cli", org_id="globex")
    client.set_fair_weight("fair_cli", "globex", 2)
    stats = invoke("stats")
    assert stats.exit_code == 0, stats.output
    # (the table's title may wrap on a narrow terminal)
    assert "fair_cli:fairshares(2keyswithjobs)" in "".join(stats.output.split())
    rows = [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in stats.output.splitlines()
        if line.count("│") == 5
    ]
    assert rows == [["acme", "3", "0", "1"], ["globex", "1", "0", "2"]]
