"""`jobs init` on sample projects, then the Firebase CLI's own emulators on the result: both
codebases load (the team's TypeScript one and jobs_lib's Python one), a job a signed-in client
writes completes, the team's function still runs; and a project with a named database and no
functions.

The TypeScript codebase is compiled here with its own `tsc`; its dependencies (firebase-functions,
firebase-admin, typescript, pinned in tests/data/sample-ts) are installed once by
scripts/bootstrap. Python's virtualenv is this repository's functions/venv (the runtime's Python,
functions/requirements.txt, this checkout), linked as the codebase's `venv`."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore

from jobs_lib.devstack.firebase_dev import FirebaseStack
from jobs_lib.errors import EmulatorUnavailable

from .conftest import ROOT, wait_for
from .test_adopt import init, sample_project
from .test_firebase_cli import firebase_cli
from .test_rules import ALLOW, SERVER_TIME, Rest, id_token

SAMPLE_TS = ROOT / "tests" / "data" / "sample-ts" / "node_modules"
PROJECT = "demo-adopt-e2e"


def _start(root: Path, venv: Path, log_dir: Path, functions: tuple[str, ...]) -> FirebaseStack:
    (root / "jobs" / "venv").symlink_to(venv)
    log_dir.mkdir()
    stack = FirebaseStack(
        project=PROJECT,
        config=root / "firebase.json",
        functions_dir=root / "jobs",
        venv=venv,
        only="firestore,functions",
        functions=functions,
        handlers="handlers",
        tick_interval=None,
        firebase_cli=firebase_cli(),
        log_dir=log_dir,
    )
    try:
        stack.start()
    except EmulatorUnavailable as exc:
        stack.stop()
        pytest.fail(str(exc), pytrace=False)
    return stack


@pytest.fixture
def started(functions_venv: Path, tmp_path: Path) -> Iterator[list[FirebaseStack]]:
    stacks: list[FirebaseStack] = []
    yield stacks
    for stack in stacks:
        stack.stop()


def _final(db: firestore.Client, path: str, timeout: float = 90.0) -> dict[str, Any]:
    doc: dict[str, Any] = wait_for(
        lambda: (
            (d := db.document(path).get().to_dict())
            and d.get("status") in ("completed", "failed", "cancelled")
            and d
        ),
        timeout=timeout,
        message=f"{path} finishes",
    )
    return doc


def _job(uid: str) -> dict[str, Any]:
    return {
        "type": "process_notifications",
        "status": "pending",
        "metadata": {"targetUsers": [uid], "title": "hello"},
        "createdBy": uid,
        "createdAt": SERVER_TIME,
    }


def test_both_codebases_load_and_a_clients_job_completes(
    functions_venv: Path,
    tmp_path: Path,
    started: list[FirebaseStack],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not (SAMPLE_TS / "firebase-functions").is_dir():
        pytest.fail(
            "the sample TypeScript codebase's dependencies are missing: run scripts/bootstrap "
            "(npm ci in tests/data/sample-ts; needs Node.js 20 and npm)",
            pytrace=False,
        )
    root = sample_project(tmp_path / "app")
    (root / "functions" / "node_modules").symlink_to(SAMPLE_TS)
    build = subprocess.run(
        [str(SAMPLE_TS / ".bin" / "tsc"), "-p", "."],
        cwd=root / "functions",
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    result = init(str(root))
    assert result.exit_code == 0, result.output

    stack = _start(root, functions_venv, tmp_path / "logs", ("auditPost",))
    started.append(stack)
    log = stack.log_tail(200_000)
    assert "functions[us-central1-auditPost]: firestore function initialized" in log
    assert "functions[us-central1-jobs_created]: firestore function initialized" in log

    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", stack.emulator_address)
    db = firestore.Client(project=PROJECT)
    base = f"http://{stack.emulator_address}"
    alice = Rest(base, id_token("alice", PROJECT), PROJECT)
    # Through the merged rules, as the app's web client writes: a job of jobs_lib's, a post of
    # the team's (their own function audits it).
    assert alice.create("backgroundJobs/welcome-alice", _job("alice")) == ALLOW
    assert (
        alice.create("posts/p1", {"author": "alice", "title": "hi", "tags": [], "createdAt": 1})
        == ALLOW
    )
    job = _final(db, "backgroundJobs/welcome-alice")
    assert job["status"] == "completed", job
    assert job["result"] == 1
    assert db.document("users/alice/notifications/welcome-alice").get().exists
    audit = wait_for(
        lambda: db.document("audit/p1").get().to_dict(), timeout=60, message="auditPost ran"
    )
    assert audit["post"] == "p1"
    # The job's owner reads it; another user cannot; the team's rules still hold.
    assert alice.get("backgroundJobs/welcome-alice") == ALLOW
    bob = Rest(base, id_token("bob", PROJECT), PROJECT)
    assert bob.get("backgroundJobs/welcome-alice") == 403
    assert bob.get("users/alice") == 403 and alice.get("audit/p1") == 403


def test_a_named_database_and_no_functions_of_their_own(
    functions_venv: Path,
    tmp_path: Path,
    started: list[FirebaseStack],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = sample_project(tmp_path / "app", typescript=False, database="appdb")
    result = init(str(root))
    assert result.exit_code == 0, result.output
    stack = _start(root, functions_venv, tmp_path / "logs", ())
    started.append(stack)

    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", stack.emulator_address)
    db = firestore.Client(project=PROJECT, database="appdb")
    alice = Rest(f"http://{stack.emulator_address}", id_token("alice", PROJECT), PROJECT, "appdb")
    assert alice.create("backgroundJobs/in-appdb", _job("alice")) == ALLOW
    job = _final(db, "backgroundJobs/in-appdb")
    assert job["status"] == "completed" and job["result"] == 1, job
    # Nothing went to the default database.
    default = firestore.Client(project=PROJECT)
    assert not default.document("backgroundJobs/in-appdb").get().exists
