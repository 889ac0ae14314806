"""`jobs init` on sample Firebase projects the tests make: what it writes, what it refuses, and that
the project's own rules allow and refuse exactly what they did before (the same requests, before
and after, on the Firestore emulator). The sample projects' emulator runs are in
tests/test_adopt_emulators.py."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore
from typer.testing import CliRunner

from jobs_lib.cli import app
from jobs_lib.deploy import adopt
from jobs_lib.devstack import emulator as emulator_mod

from .conftest import ROOT
from .test_rules import ALLOW, DENY, Rest, id_token, load_rules

ADOPT_PROJECT = "demo-adopt"

THEIR_RULES = """rules_version = '2';

// The app's own rules: profiles are private, posts are public to read.
service cloud.firestore {
  match /databases/{database}/documents {
    function signedIn() {
      return request.auth != null;
    }

    match /users/{uid} {
      allow read, write: if signedIn() && request.auth.uid == uid;
    }

    match /posts/{postId} {
      allow read: if true;
      allow create: if signedIn() && request.resource.data.author == request.auth.uid
        && request.resource.data.keys().hasOnly(['author', 'title', 'tags', 'createdAt']);
      allow update, delete: if signedIn() && resource.data.author == request.auth.uid;
    }

    // Written by the functions only.
    match /audit/{entry} {
      allow read, write: if false;
    }
  }
}
"""

THEIR_INDEXES = {
    "indexes": [
        {
            "collectionGroup": "posts",
            "queryScope": "COLLECTION",
            "fields": [
                {"fieldPath": "author", "order": "ASCENDING"},
                {"fieldPath": "createdAt", "order": "DESCENDING"},
            ],
        },
        {
            "collectionGroup": "posts",
            "queryScope": "COLLECTION",
            "fields": [
                {"fieldPath": "tags", "arrayConfig": "CONTAINS"},
                {"fieldPath": "createdAt", "order": "DESCENDING"},
            ],
        },
        {
            "collectionGroup": "users",
            "queryScope": "COLLECTION",
            "fields": [
                {"fieldPath": "team", "order": "ASCENDING"},
                {"fieldPath": "name", "order": "ASCENDING"},
            ],
        },
    ],
    "fieldOverrides": [{"collectionGroup": "posts", "fieldPath": "body", "indexes": []}],
}

TS_INDEX = """import { initializeApp } from "firebase-admin/app";
import { getFirestore, FieldValue } from "firebase-admin/firestore";
import { onDocumentCreated } from "firebase-functions/v2/firestore";

initializeApp();

// The app's own function: every new post gets an audit entry.
export const auditPost = onDocumentCreated("posts/{postId}", async (event) => {
  await getFirestore()
    .doc(`audit/${event.params.postId}`)
    .set({ post: event.params.postId, at: FieldValue.serverTimestamp() });
});
"""

TS_PACKAGE = {
    "name": "functions",
    "main": "lib/index.js",
    "engines": {"node": "20"},
    "scripts": {"build": "tsc"},
    "dependencies": {"firebase-admin": "^13.0.0", "firebase-functions": "^6.0.0"},
    "devDependencies": {"typescript": "^5.0.0"},
    "private": True,
}

TS_CONFIG = {
    "compilerOptions": {
        "module": "commonjs",
        "target": "es2021",
        "outDir": "lib",
        "strict": True,
        "esModuleInterop": True,
        "skipLibCheck": True,
    },
    "include": ["src"],
}


def sample_project(
    root: Path,
    *,
    typescript: bool = True,
    database: str | None = None,
    emulators: dict[str, Any] | None = None,
) -> Path:
    """A Firebase project as a team has it before jobs_lib: its web app's rules (users, posts),
    three indexes and a field override, a TypeScript codebase with its own onDocumentCreated on
    posts (or no functions at all), maybe a named database."""
    root.mkdir(parents=True, exist_ok=True)
    firestore_entry: dict[str, Any] = {
        "rules": "firestore.rules",
        "indexes": "firestore.indexes.json",
    }
    if database:
        firestore_entry = {"database": database, **firestore_entry}
    config: dict[str, Any] = {"firestore": firestore_entry, "hosting": {"public": "public"}}
    if typescript:
        config["functions"] = {
            "source": "functions",
            "predeploy": ['npm --prefix "$RESOURCE_DIR" run build'],
        }
        functions = root / "functions"
        (functions / "src").mkdir(parents=True)
        (functions / "src" / "index.ts").write_text(TS_INDEX)
        (functions / "package.json").write_text(json.dumps(TS_PACKAGE, indent=2) + "\n")
        (functions / "tsconfig.json").write_text(json.dumps(TS_CONFIG, indent=2) + "\n")
    # The team runs its emulators without the UI (it downloads itself; there is no network here).
    config["emulators"] = {"ui": {"enabled": False}} if emulators is None else emulators
    (root / "firebase.json").write_text(json.dumps(config, indent=2) + "\n")
    (root / "firestore.rules").write_text(THEIR_RULES)
    (root / "firestore.indexes.json").write_text(json.dumps(THEIR_INDEXES, indent=2) + "\n")
    (root / "public").mkdir()
    (root / "public" / "index.html").write_text("<!doctype html><title>the app</title>\n")
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` (a project's state, to compare before and after)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def init(*args: str) -> Any:
    result = CliRunner().invoke(app, ["init", *args])
    return result


# -- what it writes ------------------------------------------------------------------------------


def test_init_adds_a_codebase_merges_indexes_and_rules_and_a_second_run_changes_nothing(
    tmp_path: Path,
) -> None:
    root = sample_project(tmp_path / "app")
    before = snapshot(root)
    result = init(str(root))
    assert result.exit_code == 0, result.output
    assert "Left for you" in result.output and "firebase deploy" in result.output

    config = json.loads((root / "firebase.json").read_text())
    theirs, ours = config["functions"]
    assert theirs == {
        "source": "functions",
        "predeploy": ['npm --prefix "$RESOURCE_DIR" run build'],
    }
    assert (
        ours["codebase"] == "jobs" and ours["source"] == "jobs" and ours["runtime"] == "python312"
    )
    assert config["hosting"] == {"public": "public"}
    assert {"firestore", "functions", "auth"} <= set(config["emulators"])
    assert config["emulators"]["ui"] == {"enabled": False}
    main = (root / "jobs" / "main.py").read_text()
    assert "from jobs_lib.deploy.entrypoints import *" in main
    assert (root / "jobs" / ".env").read_text().splitlines()[-1] == "JOBS_HANDLERS=handlers"
    assert (root / "jobs" / "requirements.txt").read_text() == (
        ROOT / "functions" / "requirements.txt"
    ).read_text()
    # The TypeScript codebase is untouched.
    for name, data in before.items():
        if name.startswith(("functions/", "public/")):
            assert (root / name).read_bytes() == data

    indexes = json.loads((root / "firestore.indexes.json").read_text())
    jobs_indexes = json.loads((ROOT / "firestore.indexes.json").read_text())
    for index in THEIR_INDEXES["indexes"]:
        assert index in indexes["indexes"]
    for index in jobs_indexes["indexes"]:
        assert index in indexes["indexes"]
    assert len(indexes["indexes"]) == 3 + len(jobs_indexes["indexes"])
    assert THEIR_INDEXES["fieldOverrides"][0] in indexes["fieldOverrides"]
    assert len(indexes["fieldOverrides"]) == 1 + len(jobs_indexes["fieldOverrides"])

    rules = (root / "firestore.rules").read_text()
    assert rules.count(adopt.BEGIN) == 1 and rules.count(adopt.END) == 1
    # Their rules are all there, in order, before jobs_lib's block.
    head = rules[: rules.index(adopt.BEGIN)]
    assert THEIR_RULES.rstrip().removesuffix("}").rstrip() in head
    assert "match /backgroundJobs/{jobId}" in rules and "match /{document=**}" not in rules

    after = snapshot(root)
    again = init(str(root))
    assert again.exit_code == 0, again.output
    assert "nothing to change" in again.output
    assert snapshot(root) == after


def test_dry_run_prints_the_diff_and_writes_nothing(tmp_path: Path) -> None:
    root = sample_project(tmp_path / "app")
    before = snapshot(root)
    result = init(str(root), "--dry-run")
    assert result.exit_code == 0, result.output
    assert snapshot(root) == before
    assert "--- a/firebase.json\n+++ b/firebase.json" in result.output
    assert "--- /dev/null\n+++ b/jobs/main.py" in result.output
    assert f"+  {adopt.BEGIN}" in result.output
    assert '+      "codebase": "jobs",' in result.output


def test_a_later_init_rewrites_the_block_in_place_and_keeps_its_knobs(tmp_path: Path) -> None:
    root = sample_project(tmp_path / "app")
    assert init(str(root)).exit_code == 0
    rules_path = root / "firestore.rules"
    rules = rules_path.read_text()
    # The owner lists their client types (a knob) and adds a rule of their own after the block;
    # someone also edited jobs_lib's own part of the block.
    rules = rules.replace(
        "return ['process_notifications'];", "return ['process_notifications', 'hello'];"
    )
    rules = rules.replace("allow delete: if false;", "allow delete: if signedIn();", 1)
    rules = rules.replace(
        adopt.END + "\n",
        adopt.END + "\n\n  match /databases/{database}/documents/likes/{id} {\n"
        "    allow read: if true;\n  }\n",
    )
    rules_path.write_text(rules)
    result = init(str(root))
    assert result.exit_code == 0, result.output
    assert "rewrote the jobs_lib block (kept its knobs)" in result.output
    merged = rules_path.read_text()
    assert "return ['process_notifications', 'hello'];" in merged
    assert "allow delete: if signedIn();" not in merged
    assert "match /databases/{database}/documents/likes/{id}" in merged
    assert merged.count(adopt.BEGIN) == 1
    assert init(str(root)).output.count("nothing to change") == 1


def test_new_makes_a_project_like_this_repository(tmp_path: Path) -> None:
    target = tmp_path / "fresh"
    result = init("--new", str(target))
    assert result.exit_code == 0, result.output
    config = json.loads((target / "firebase.json").read_text())
    ours = json.loads((ROOT / "firebase.json").read_text())
    assert config["functions"] == [
        {**ours["functions"][0], "ignore": config["functions"][0]["ignore"]}
    ]
    assert config["firestore"] == {"rules": "firestore.rules", "indexes": "firestore.indexes.json"}
    indexes = json.loads((target / "firestore.indexes.json").read_text())
    assert indexes == json.loads((ROOT / "firestore.indexes.json").read_text())
    assert (target / "functions" / "main.py").read_text() == adopt.MAIN_PY
    assert init(str(target), "--source", "functions").output.count("nothing to change") == 1
    refused = init("--new", str(target))
    assert refused.exit_code == 2 and "is not empty" in refused.output


def test_a_named_database_and_no_functions(tmp_path: Path) -> None:
    root = sample_project(tmp_path / "app", typescript=False, database="appdb")
    result = init(str(root))
    assert result.exit_code == 0, result.output
    config = json.loads((root / "firebase.json").read_text())
    assert config["functions"] == [
        {
            "source": "jobs",
            "codebase": "jobs",
            "runtime": "python312",
            "ignore": adopt.IGNORE,
        }
    ]
    assert config["firestore"]["database"] == "appdb"
    env = (root / "jobs" / ".env").read_text()
    assert "JOBS_DATABASE=appdb" in env.splitlines()
    assert "--database=appdb" in result.output
    # Several databases: the owner says which.
    config["firestore"] = [
        {"database": "(default)", "rules": "firestore.rules"},
        {"database": "appdb", "rules": "firestore.rules"},
    ]
    (root / "firebase.json").write_text(json.dumps(config))
    refused = init(str(root))
    assert refused.exit_code == 2 and "--database" in refused.output


def test_a_conflicting_field_override_is_kept_and_reported(tmp_path: Path) -> None:
    root = sample_project(tmp_path / "app", typescript=False)
    indexes = json.loads((root / "firestore.indexes.json").read_text())
    mine = {
        "collectionGroup": "backgroundJobs",
        "fieldPath": "metadata",
        "indexes": [{"order": "ASCENDING", "queryScope": "COLLECTION"}],
    }
    indexes["fieldOverrides"].append(mine)
    (root / "firestore.indexes.json").write_text(json.dumps(indexes))
    result = init(str(root))
    assert result.exit_code == 0, result.output
    assert "conflict:" in result.output and "backgroundJobs.metadata" in result.output
    merged = json.loads((root / "firestore.indexes.json").read_text())
    ours = [o for o in merged["fieldOverrides"] if o["collectionGroup"] == "backgroundJobs"]
    assert [o for o in ours if o["fieldPath"] == "metadata"] == [mine]


# -- what it refuses, changing nothing -------------------------------------------------------------


def _refused(root: Path, expected: str, *args: str) -> None:
    before = snapshot(root)
    result = init(str(root), *args)
    assert result.exit_code == 2, result.output
    assert "refused, nothing was changed" in result.output
    assert re.search(expected, " ".join(result.output.split())), result.output
    assert snapshot(root) == before


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda r: (r / "firebase.json").write_text('{"firestore": {"rules": "x"},}'),
            r"firebase\.json cannot be parsed \(Expecting property name",
        ),
        (
            lambda r: (r / "firestore.indexes.json").write_text("{indexes: []}"),
            r"firestore\.indexes\.json cannot be parsed",
        ),
        (
            lambda r: (r / "firestore.rules").write_text(
                THEIR_RULES.replace("rules_version = '2';", "")
            ),
            r"is not rules_version = '2'",
        ),
        (
            lambda r: (r / "firestore.rules").write_text(THEIR_RULES[:-3]),
            r"a '\{' is never closed",
        ),
        (
            # The quick-start catch-all: every signed-in user may write every document.
            lambda r: (r / "firestore.rules").write_text(
                THEIR_RULES.replace(
                    "    // Written by the functions only.",
                    "    match /{document=**} {\n"
                    "      allow read, write: if request.auth != null;\n"
                    "    }\n\n    // Written by the functions only.",
                )
            ),
            r"firestore\.rules:2\d: `allow read, write: if request\.auth != null` in match "
            r"/databases/\{database\}/documents/\{document=\*\*\} grants access to jobs_lib's "
            r"collection backgroundJobs",
        ),
        (
            # A collection of theirs under one of jobs_lib's names.
            lambda r: (r / "firestore.rules").write_text(
                THEIR_RULES.replace(
                    "match /audit/{entry} {\n      allow read, write: if false;",
                    "match /scheduledJobs/{id} {\n      allow read: if signedIn();",
                )
            ),
            r"grants access to jobs_lib's collection scheduledJobs",
        ),
        (
            lambda r: (r / "jobs").mkdir() or (r / "jobs" / "main.py").write_text("print(1)\n"),
            r"jobs/main\.py exists and is not jobs_lib's",
        ),
        (
            lambda r: (r / "firebase.json").write_text(
                json.dumps({"functions": [{"source": "fns", "codebase": "jobs"}]})
            ),
            r"already has a functions codebase 'jobs' with source 'fns'",
        ),
    ],
    ids=[
        "firebase-json",
        "indexes-json",
        "rules-v1",
        "rules-braces",
        "catch-all",
        "their-collection",
        "their-folder",
        "codebase-name",
    ],
)
def test_init_refuses_and_changes_nothing(
    tmp_path: Path, change: Callable[[Path], Any], expected: str
) -> None:
    root = sample_project(tmp_path / "app")
    change(root)
    _refused(root, expected)


def test_a_deny_all_catch_all_of_theirs_is_fine(tmp_path: Path) -> None:
    root = sample_project(tmp_path / "app", typescript=False)
    rules = THEIR_RULES.replace(
        "    // Written by the functions only.",
        "    match /{document=**} {\n      allow read, write: if false;\n    }\n\n"
        "    // Written by the functions only.",
    )
    (root / "firestore.rules").write_text(rules)
    assert init(str(root)).exit_code == 0


def test_no_firebase_json_is_named(tmp_path: Path) -> None:
    result = init(str(tmp_path))
    assert result.exit_code == 2 and "no firebase.json" in result.output
    assert "jobs init --new DIR" in " ".join(result.output.split())


def test_the_side_collections_list_is_every_collection_the_store_names() -> None:
    named = set()
    for path in (ROOT / "jobs_lib").rglob("*.py"):
        named |= set(re.findall(r'collection}_([A-Za-z]+)"', path.read_text()))
    assert named == set(adopt.SIDE_COLLECTIONS)


# -- their rules, before and after -----------------------------------------------------------------


def _requests(base: str, db: firestore.Client) -> dict[str, int]:
    """The same requests, as the app's users make them: each outcome (200 or 403) by name."""
    for name in ("users/alice", "posts/p1", "audit/p1", "secrets/s1"):
        db.document(name).set({"author": "alice", "title": "t", "createdAt": 1})

    def rest(user: str | None) -> Rest:
        return Rest(base, None if user is None else id_token(user, ADOPT_PROJECT), ADOPT_PROJECT)

    alice, bob, anonymous = rest("alice"), rest("bob"), rest(None)
    post = {"author": "alice", "title": "hi", "tags": ["a"], "createdAt": 1}
    return {
        "alice reads her profile": alice.get("users/alice"),
        "bob reads alice's profile": bob.get("users/alice"),
        "anonymous reads alice's profile": anonymous.get("users/alice"),
        "alice writes her profile": alice.set("users/alice", {"name": "Alice"}),
        "bob writes alice's profile": bob.set("users/alice", {"name": "Bob"}),
        "anonymous reads a post": anonymous.get("posts/p1"),
        "anonymous lists posts": anonymous.query("posts"),
        "alice creates her post": alice.create("posts/p2", post),
        "bob creates a post as alice": bob.create("posts/p3", post),
        "alice creates a post with an extra field": alice.create("posts/p4", {**post, "x": 1}),
        "bob updates alice's post": bob.update("posts/p1", {"title": "bob"}),
        "alice updates her post": alice.update("posts/p1", {"title": "new"}),
        "alice deletes her post": alice.delete("posts/p2"),
        "alice reads the audit": alice.get("audit/p1"),
        "alice writes the audit": alice.set("audit/p9", {"post": "p9"}),
        "alice reads a collection no rule names": alice.get("secrets/s1"),
        "alice writes a collection no rule names": alice.set("secrets/s2", {"a": 1}),
        "bob writes a subcollection of a post": bob.set("posts/p1/likes/bob", {"a": 1}),
    }


def _clear(emulator: emulator_mod.Emulator) -> None:
    request = urllib.request.Request(
        f"{emulator.url}/emulator/v1/projects/{ADOPT_PROJECT}/databases/(default)/documents",
        method="DELETE",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


def test_their_rules_allow_and_refuse_what_they_did_before(
    emulator: emulator_mod.Emulator, tmp_path: Path
) -> None:
    root = sample_project(tmp_path / "app")
    db = firestore.Client(project=ADOPT_PROJECT)
    job = {
        "type": "process_notifications",
        "status": "pending",
        "metadata": {"targetUsers": ["alice"]},
        "createdBy": "alice",
    }
    outcomes = {}
    for phase in ("before", "after"):
        if phase == "after":
            assert init(str(root)).exit_code == 0
        load_rules(emulator, (root / "firestore.rules").read_text(), ADOPT_PROJECT)
        _clear(emulator)
        seen = _requests(emulator.url, db)
        alice = Rest(emulator.url, id_token("alice", ADOPT_PROJECT), ADOPT_PROJECT)
        seen["alice creates a job"] = alice.create("backgroundJobs/j1", job)
        seen["alice creates a job as bob"] = alice.create(
            "backgroundJobs/j2", {**job, "createdBy": "bob"}
        )
        seen["alice reads jobs_lib's slots"] = alice.get("backgroundJobs_slots/x")
        outcomes[phase] = seen
    before, after = outcomes["before"], outcomes["after"]
    assert before.pop("alice creates a job") == DENY and after.pop("alice creates a job") == ALLOW
    assert before == after
    # The matrix is not all one answer: it exercises both sides of their rules.
    assert {ALLOW, DENY} == set(before.values())
    assert after["alice creates a job as bob"] == DENY
    assert after["alice reads jobs_lib's slots"] == DENY


def test_the_emulator_compiles_every_rules_file_init_writes(
    emulator: emulator_mod.Emulator, tmp_path: Path
) -> None:
    """The merged files of the cases above compile (the emulator refuses a file that does not)."""
    fresh = tmp_path / "fresh"
    assert init("--new", str(fresh)).exit_code == 0
    adopted = sample_project(tmp_path / "app")
    assert init(str(adopted)).exit_code == 0
    for text in (
        (fresh / "firestore.rules").read_text(),
        (adopted / "firestore.rules").read_text(),
    ):
        load_rules(emulator, text, ADOPT_PROJECT)
    with pytest.raises(urllib.error.HTTPError):
        load_rules(emulator, text.replace("allow get, list:", "allow get list:"), ADOPT_PROJECT)


def test_the_codebase_env_reaches_the_declarations_as_the_cli_discovers_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """firebase-tools discovers the declarations without the codebase's .env: main.py reads it
    from the folder discovery runs in, filling only what the environment lacks."""
    from jobs_lib.config import codebase_env

    (tmp_path / ".env").write_text(
        "# settings\nJOBS_DATABASE=appdb\nexport JOBS_REGION='europe-west1'\n"
        'JOBS_TICK_SCHEDULE="*/5 * * * *"\nJOBS_COLLECTION=fromfile\nnot a line\n'
    )
    for key in ("JOBS_DATABASE", "JOBS_REGION", "JOBS_TICK_SCHEDULE"):
        monkeypatch.setenv(key, "")  # so that the test's end restores what was there (nothing)
        monkeypatch.delenv(key)
    monkeypatch.setenv("JOBS_COLLECTION", "fromenv")
    monkeypatch.chdir(tmp_path)
    found = codebase_env()
    assert found == {
        "JOBS_DATABASE": "appdb",
        "JOBS_REGION": "europe-west1",
        "JOBS_TICK_SCHEDULE": "*/5 * * * *",
    }
    from jobs_lib.config import Settings
    from jobs_lib.deploy.firebase import declarations

    declared = declarations(Settings.from_env())
    assert declared.created["database"] == "appdb" and declared.created["region"] == "europe-west1"
    assert declared.created["document"] == "fromenv/{jobId}"
    assert declared.tick["schedule"] == "*/5 * * * *"
