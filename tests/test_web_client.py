"""The web client (clients/web, the npm package jobs-lib-web) against the real emulators.

The package's own tests (clients/web/test/client.test.ts, `node --test`) run here on the real
Firebase JS SDK, against the session's Firestore emulator with the project's own firestore.rules
and firebase-tools' Auth emulator, while a jobs_lib worker runs real handlers. Beside them: the
TypeScript declarations `jobs types` writes from the handlers' pydantic models (tsc accepts a right
metadata shape and refuses a wrong one; the committed file matches the models), `npm pack`, and the
example web app in a headless Chromium.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobs_lib import JobContext, PermanentError
from jobs_lib.api.webtypes import typescript
from jobs_lib.app import load_handler_modules
from jobs_lib.devstack import auth_emulator as auth_mod
from jobs_lib.devstack.webapp import ExampleServer, config_for
from jobs_lib.errors import EmulatorUnavailable
from jobs_lib.registry import HandlerRegistry, default_registry

from .conftest import PROJECT, ROOT
from .test_console import browser  # noqa: F401 - the session's headless Chromium
from .test_rules import load_rules

WEB = ROOT / "clients" / "web"
GENERATED = WEB / "test" / "generated" / "jobs.ts"
USERS = {"alice": {"orgId": "acme"}, "bob": {"orgId": "acme"}}


def run(
    command: list[str], *, cwd: Path = WEB, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def web_build() -> Path:
    """clients/web installed (npm ci, once per lock file) and built: dist/ and build-test/."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.fail(
            "the web client's tests need Node.js 20 and npm (apt-get install -y nodejs npm)",
            pytrace=False,
        )
    lock = (WEB / "package-lock.json").read_bytes()
    stamp = WEB / "node_modules" / ".jobs-lib-installed"
    if not stamp.exists() or stamp.read_bytes() != lock:
        installed = run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], timeout=900)
        assert installed.returncode == 0, (
            f"npm ci in clients/web failed:\n{installed.stdout}\n{installed.stderr}"
        )
        stamp.write_bytes(lock)
    for script in ("build", "build:test", "build:example"):
        built = run([npm, "run", "--silent", script])
        assert built.returncode == 0, f"npm run {script} failed:\n{built.stdout}\n{built.stderr}"
    return WEB


@pytest.fixture(scope="module")
def auth(emulator: Any) -> Iterator[auth_mod.AuthEmulator]:
    """firebase-tools' Auth emulator with the test users (email NAME@example.test, password
    NAME-password)."""
    try:
        running = auth_mod.start(PROJECT)
    except EmulatorUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    for uid, claims in USERS.items():
        running.create_user(uid, f"{uid}@example.test", f"{uid}-password", claims)
    yield running
    running.stop()


def web_registry(registry: HandlerRegistry) -> HandlerRegistry:
    """The built-in handlers, `process_notifications` doing what the package's tests ask of it."""
    import time as clock

    registry.unregister("process_notifications")

    @registry.handler(
        "process_notifications",
        input="jobs_lib.builtin.notification_input:NotificationInput",
        max_attempts=1,
        timeout=120,
    )
    def process_notifications(ctx: JobContext[Any]) -> Any:
        kind = ctx.input.notificationType
        if kind == "fail":
            raise PermanentError("card declined")
        if kind == "progress":
            for step in range(4):
                ctx.progress(25 * step, f"step {step + 1} of 4", step=step, total_steps=4)
                clock.sleep(0.6)
            return {"steps": 4}
        if (
            kind == "course_reminder"
        ):  # the example app's: notify a few users a second, reporting as it goes
            users = ctx.input.targetUsers
            for n in range(len(users)):
                ctx.progress(round(100 * n / len(users), 1), f"notified {n} of {len(users)}")
                clock.sleep(0.4)
            return len(users)
        if kind == "slow":
            for n in range(300):
                ctx.progress(round(n / 3, 1), "working slowly")
                clock.sleep(0.2)
        return len(ctx.input.targetUsers)

    return registry


def test_the_package_works_against_the_emulators_and_the_projects_rules(
    web_build: Path,
    auth: auth_mod.AuthEmulator,
    emulator: Any,
    settings: Any,
    registry: HandlerRegistry,
    worker_factory: Any,
) -> None:
    load_rules(emulator, (ROOT / "firestore.rules").read_text())
    web_registry(registry)
    worker_factory(concurrency=4)
    result = run(
        ["node", "--test", "--test-concurrency=1", "--test-reporter=spec", "build-test/test/"],
        env={
            "FIRESTORE_EMULATOR_HOST": emulator.address,
            "FIREBASE_AUTH_EMULATOR_HOST": auth.host,
            "JOBS_PROJECT": PROJECT,
        },
        timeout=300,
    )
    output = result.stdout + result.stderr
    (Path(os.environ.get("TMPDIR", "/tmp")) / "jobs-lib-web-test.log").write_text(output)
    assert result.returncode == 0, output[-6000:]
    summary = dict(
        line.split()[1:3]
        for line in output.splitlines()
        if line.startswith("\N{INFORMATION SOURCE} ") and len(line.split()) == 3
    )
    assert int(summary["pass"]) >= 14 and summary["fail"] == "0", output[-3000:]


def generated_types() -> str:
    load_handler_modules("tests.web_handlers")
    registry = HandlerRegistry()
    for name in default_registry.types():
        spec = default_registry.get(name)
        assert spec is not None
        if spec.fn.__module__.startswith(("jobs_lib.builtin", "tests.web_handlers")):
            registry.register(spec)
    return typescript(registry)


def test_the_committed_types_match_the_handlers_models(web_build: Path) -> None:
    fresh = generated_types()
    assert (
        "export interface ResizeImageInput" in fresh
        and "jobs.webhook" not in fresh
        and "jobs.cleanup" not in fresh
    )
    assert GENERATED.read_text() == fresh, (
        f"{GENERATED.relative_to(ROOT)} is out of date: run `jobs types --handlers "
        f"tests.web_handlers --out {GENERATED.relative_to(ROOT)}`"
    )


#: Metadata shapes tsc must accept or refuse against the generated types: (call, tsc's error or
#: None).
TYPECHECK_CASES = {
    "right": (
        'enqueueJob(db, "resize_image", { path: "a.png", width: 200, format: "webp" })',
        None,
    ),
    "a-wrong-field-type": (
        'enqueueJob(db, "resize_image", { path: "a.png", width: "wide" })',
        "Type 'string' is not assignable to type 'number'",
    ),
    "a-missing-field": (
        'enqueueJob(db, "resize_image", { path: "a.png" })',
        "Property 'width' is missing",
    ),
    "a-field-the-model-forbids": (
        'enqueueJob(db, "resize_image", { path: "a.png", width: 2, colour: "red" })',
        "'colour' does not exist in type 'ResizeImageInput'",
    ),
    "a-value-outside-a-literal": (
        'enqueueJob(db, "resize_image", { path: "a.png", width: 2, format: "gif" })',
        "Type '\"gif\"' is not assignable",
    ),
    "a-type-no-handler-has": (
        'enqueueJob(db, "resize_imag", { path: "a.png", width: 2 })',
        "Argument of type '\"resize_imag\"' is not assignable",
    ),
    "the-builtin-notifications": (
        'enqueueJob(db, "process_notifications", { targetUsers: "everyone" })',
        "Type 'string' is not assignable to type 'string[]'",
    ),
}


@pytest.fixture(scope="module")
def tsc_errors(web_build: Path) -> dict[str, str]:
    """tsc over a file per case (one run for them all): each case's error lines, by case name."""
    files = {name: WEB / "test" / f"typecheck-{name}.ts" for name in TYPECHECK_CASES}
    for name, (call, _error) in TYPECHECK_CASES.items():
        files[name].write_text(
            f'import type {{ Firestore }} from "firebase/firestore";\nimport {{ enqueueJob }} '
            f'from "jobs-lib-web";\nimport "./generated/jobs.js";\n\nexport async function '
            f"check(db: Firestore): Promise<string> {{\n  return {call};\n}}\n"
        )
    try:
        result = run(
            [
                "npx",
                "--no-install",
                "tsc",
                "--noEmit",
                "--pretty",
                "false",
                "-p",
                "tsconfig.test.json",
            ],
            timeout=300,
        )
    finally:
        for path in files.values():
            path.unlink()
    errors: dict[str, list[str]] = {name: [] for name in TYPECHECK_CASES}
    current: list[str] | None = None
    for line in result.stdout.splitlines():
        if not line.startswith(
            " "
        ):  # a new message: "file(line,col): error ..."; its details are indented below it
            current = next(
                (
                    errors[name]
                    for name in TYPECHECK_CASES
                    if line.startswith(f"test/typecheck-{name}.ts(")
                ),
                None,
            )
        if current is not None:
            current.append(line)
    return {name: "\n".join(lines) for name, lines in errors.items()}


@pytest.mark.parametrize("name", list(TYPECHECK_CASES))
def test_tsc_checks_metadata_against_the_python_model(
    tsc_errors: dict[str, str], name: str
) -> None:
    error = TYPECHECK_CASES[name][1]
    if error is None:
        assert tsc_errors[name] == ""
    else:
        assert error in tsc_errors[name], tsc_errors[name] or "tsc accepted it"


def test_npm_pack_makes_an_installable_tarball_versioned_with_the_python_package(
    web_build: Path, tmp_path: Path
) -> None:
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    manifest = json.loads((WEB / "package.json").read_text())
    assert (
        manifest["version"] == version
        and manifest["peerDependencies"] == {"firebase": ">=10.0.0 <13.0.0"}
        and "dependencies" not in manifest
    )
    packed = run(["npm", "pack", "--json", "--pack-destination", str(tmp_path)])
    assert packed.returncode == 0, packed.stderr
    [info] = json.loads(packed.stdout)
    assert sorted(f["path"] for f in info["files"]) == [
        "README.md",
        "dist/index.d.ts",
        "dist/index.js",
        "package.json",
    ]
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text(
        json.dumps({"name": "an-app", "private": True, "type": "module"})
    )
    installed = run(
        [
            "npm",
            "install",
            "--no-audit",
            "--no-fund",
            "--offline",
            "--loglevel=error",
            str(tmp_path / info["filename"]),
            str(WEB / "node_modules" / "firebase"),
        ],
        cwd=app,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr
    used = run(
        [
            "node",
            "-e",
            'import("jobs-lib-web").then(m => console.log(Object.keys(m).filter(k => typeof m[k] '
            '=== "function" && /Job|Jobs/.test(k)).sort().join(",")))',
        ],
        cwd=app,
    )
    assert used.returncode == 0, used.stderr
    assert set(used.stdout.strip().split(",")) >= {
        "cancelJob",
        "enqueueJob",
        "listJobs",
        "waitForJob",
        "watchJob",
    }


def test_the_example_app_signs_in_enqueues_and_shows_the_job_live(
    web_build: Path,
    auth: auth_mod.AuthEmulator,
    emulator: Any,
    registry: HandlerRegistry,
    worker_factory: Any,
    browser: Any,  # noqa: F811 - a fixture
) -> None:
    load_rules(emulator, (ROOT / "firestore.rules").read_text())
    web_registry(registry)
    worker_factory(concurrency=2)
    server = ExampleServer(
        config_for(
            PROJECT,
            emulator.address,
            auth.host,
            email="alice@example.test",
            password="alice-password",
        )
    ).start()
    context = browser.new_context(viewport={"width": 900, "height": 720})
    page = context.new_page()
    try:
        page.goto(server.url)
        page.click("#signin-form button[type=submit]")
        page.wait_for_selector("#app:not([hidden])")
        assert page.inner_text("#who") == "alice@example.test"
        page.evaluate("window.__noReload = true")  # survives only if the page never reloads
        page.fill("#count", "6")
        page.click("#enqueue")
        seen = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = page.evaluate(
                "({ value: document.getElementById('bar').value, status: "
                "document.getElementById('status').dataset.status })"
            )
            seen.append((state["value"], state["status"]))
            if state["status"] == "completed":
                break
            time.sleep(0.1)
        values = [v for v, _status in seen]
        assert seen[-1] == (100, "completed"), seen[-5:]
        assert any(0 < v < 100 for v in values) and len(set(values)) >= 3, values
        assert values == sorted(values)  # the bar only moves forward
        assert page.inner_text("#result") == "Done: 6 users notified."
        page.screenshot(path=str(ROOT / "docs" / "web-example.png"))
        # Send again and cancel it while it runs.
        page.click("#enqueue")
        page.wait_for_selector("#status[data-status='in_progress']", timeout=20_000)
        page.click("#cancel")
        page.wait_for_selector("#status[data-status='cancelled']", timeout=20_000)
        assert page.evaluate("window.__noReload") is True
    finally:
        context.close()
        server.stop()
