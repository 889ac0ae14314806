"""The operators' console in a real headless Chromium (Debian's package, driven by Playwright).

The console is served as `jobs console` and `jobs dev` serve it (the REST API and ``/console/`` in
one WSGI app) on the session's emulator; a worker runs in the test process. People sign in as the
ready-made dev users with emulator tokens; the API checks every action as it would in production.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from jobs_lib import App, JobsClient, Settings, Status
from jobs_lib.console import DEV_USERS
from jobs_lib.console.server import ConsoleServer
from jobs_lib.registry import HandlerRegistry
from jobs_lib.store import JobStore

from .conftest import ROOT, wait_finished

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # the fixture says what to install
    sync_playwright = None
SCREENSHOTS = ROOT / "docs"
AUTH_EMULATOR = "127.0.0.1:9099"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for these tests (Debian's `chromium`; Playwright downloads nothing)."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail(
            "the console tests need a Chromium: apt-get install -y chromium (scripts/bootstrap "
            "does)",
            pytrace=False,
        )
    if sync_playwright is None:
        pytest.fail(
            "the console tests need Playwright for Python: pip install playwright (the dev extra "
            "has it; no browser download is needed)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


class Console:
    """A console server on the test's emulator, restartable on the same port."""

    def __init__(self, app: App, port: int = 0) -> None:
        self.app = app
        self.server = ConsoleServer(app.api(), port=port).start()
        self.port = self.server.port

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        self.server.stop()

    def restart(self) -> None:
        self.server = ConsoleServer(self.app.api(), port=self.port).start()


@pytest.fixture
def console(
    settings: Settings, registry: HandlerRegistry, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Console]:
    monkeypatch.setenv(
        "FIREBASE_AUTH_EMULATOR_HOST", AUTH_EMULATOR
    )  # firebase-admin accepts emulator tokens
    app = App(
        settings.with_(console_auth="emulator-tokens", auth_emulator_host=AUTH_EMULATOR),
        registry=registry,
    )
    served = Console(app)
    yield served
    served.stop()
    app.close()


@pytest.fixture
def dialogs() -> list[str]:
    """Messages of any alert or confirm the page opened (hostile content must open none)."""
    return []


@pytest.fixture
def page(browser: Any, dialogs: list[str]) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    yield page
    context.close()


def sign_in(page: Any, console: Console, who: str, where: str = "#/overview") -> None:
    page.goto(console.url + where)
    label = next(u["label"] for u in DEV_USERS if u["uid"] == who)
    page.get_by_role("button", name=f"Sign in as {label}").click()
    page.wait_for_selector("#who:has-text('" + who + "')")


def test_an_operator_sees_a_failed_job_retries_it_and_watches_it_complete(
    page: Any,
    console: Console,
    client: JobsClient,
    store: JobStore,
    registry: HandlerRegistry,
    worker_factory: Callable[..., Any],
) -> None:
    worker_factory()
    job = client.enqueue("resize_fixed_later", {"path": "a.png"})
    assert (
        wait_finished(store, [job.id])[job.id].status is Status.FAILED
    )  # no handler yet: fails with why
    sign_in(page, console, "dev-operator", "#/jobs?status=failed")
    page.wait_for_selector(f"tr[data-job='{job.id}']")
    page.click(f"tr[data-job='{job.id}'] a")
    page.wait_for_selector("#error")
    assert "no handler is registered for job type 'resize_fixed_later'" in page.inner_text("#error")
    page.evaluate("window.__noReload = true")  # survives only if the page is never reloaded

    @registry.handler("resize_fixed_later")  # the fix is deployed
    def _resize(ctx: Any) -> dict[str, str]:
        return {"resized": ctx.metadata["path"]}

    page.click("button[data-action='retry']")
    page.wait_for_selector("#job .status[data-status='completed']", timeout=20_000)
    assert page.evaluate("window.__noReload") is True
    assert json.loads(page.inner_text("#result")) == {"resized": "a.png"}
    assert store.get(job.id).status is Status.COMPLETED  # type: ignore[union-attr]
    assert page.locator("button[data-action='retry']").count() == 0  # nothing left to retry


def test_a_durable_jobs_steps_slices_and_sleeps_are_shown(
    page: Any,
    console: Console,
    client: JobsClient,
    store: JobStore,
    registry: HandlerRegistry,
    worker_factory: Callable[..., Any],
) -> None:
    @registry.handler("durable_console", continuable=True)
    def durable(ctx: Any) -> int:
        ctx.step("fetch", lambda: list(range(10)))
        ctx.sleep(0.3)
        ctx.step(
            "store", lambda: "x" * 70_000
        )  # over the inline size: kept in a document of its own
        return 1

    worker_factory()
    job = client.enqueue("durable_console")
    assert wait_finished(store, [job.id])[job.id].status is Status.COMPLETED
    sign_in(page, console, "dev-viewer", f"#/jobs/{job.id}")
    page.wait_for_selector("#durable tr[data-step='store']")
    cells = [
        page.inner_text(f"#durable tr[data-step='{name}'] td:last-child")
        for name in ("fetch", "store")
    ]
    assert cells == ["in the job", "own document"]
    assert page.inner_text("#continuations") == "0" and page.inner_text("#sleeps").count("Z") == 1


def test_the_overview_shows_per_type_figures_and_pauses_a_type(
    page: Any,
    console: Console,
    client: JobsClient,
    store: JobStore,
    worker_factory: Callable[..., Any],
) -> None:
    worker_factory()
    done = [client.enqueue("process_notifications", {"targetUsers": ["u1"]}).id for _ in range(3)]
    bad = client.enqueue("process_notifications", {"targetUsers": "x"}).id
    wait_finished(store, [*done, bad])
    client.enqueue(
        "process_notifications",
        {"targetUsers": ["later"]},
        scheduled_for=store.now().replace(year=store.now().year + 1),
    )
    sign_in(page, console, "dev-operator")
    row = "tr[data-type='process_notifications']"
    page.wait_for_selector(f"{row} [data-figure='completedHour']:has-text('3')", timeout=10_000)
    assert page.inner_text(f"{row} [data-figure='failedHour']") == "1"
    assert page.inner_text(f"{row} [data-figure='delayed']") == "1"
    page.click(f"{row} button[data-action='pause']")
    page.wait_for_selector(f"{row} .paused", timeout=10_000)
    assert "process_notifications" in client.paused()
    page.click(f"{row} button[data-action='resume']")
    page.wait_for_selector(f"{row} button[data-action='pause']", timeout=10_000)
    assert client.paused() == set()
    # An open circuit breaker (jobs_lib.limits.breakers) shows in the type's state, its last error
    # on hover.
    now = store.now()
    store.limits.open_breaker(
        "process_notifications",
        now + timedelta(minutes=5),
        now,
        5,
        "ConnectionError: the push service is down",
    )
    page.wait_for_selector(
        f"{row} [data-figure='state']:has-text('breaker open until')", timeout=15_000
    )
    assert (
        page.get_attribute(f"{row} [data-figure='state'] span", "title")
        == "ConnectionError: the push service is down"
    )


def test_the_overview_shows_a_fair_types_largest_keys(
    page: Any, console: Console, client: JobsClient, registry: HandlerRegistry
) -> None:
    @registry.handler("fair_report", fair_key="orgId")
    def fair_report(ctx: Any) -> None:
        """Never run here: no worker."""

    client.enqueue_many([{"type": "fair_report", "org_id": "acme"} for _ in range(7)])
    client.enqueue_many([{"type": "fair_report", "org_id": "globex"} for _ in range(2)])
    client.set_fair_weight("fair_report", "globex", 3)
    sign_in(page, console, "dev-operator")
    row = "tr[data-fair-type='fair_report']"
    page.wait_for_selector(f"{row} li[data-key='acme']", timeout=15_000)
    keys = page.locator(f"{row} li").all_inner_texts()
    assert keys == ["acme: 7 due, 0 running", "globex: 2 due, 0 running, weight 3"]
    assert "fair shares by orgId (2 keys with jobs)" in page.inner_text(row)


def test_a_viewer_sees_no_action_buttons_and_a_forged_action_is_refused(
    page: Any,
    console: Console,
    client: JobsClient,
    store: JobStore,
    worker_factory: Callable[..., Any],
) -> None:
    worker_factory()
    job = client.enqueue("never_registered_type", {})
    wait_finished(store, [job.id])
    sign_in(page, console, "dev-viewer", f"#/jobs/{job.id}")
    page.wait_for_selector("#error")
    assert page.locator("#job-actions button").count() == 0
    page.goto(console.url + "#/overview")
    page.wait_for_selector("tr[data-type='process_notifications']")
    assert page.locator("button[data-action='pause']").count() == 0
    page.goto(console.url + "#/jobs?status=failed")
    page.wait_for_selector(f"tr[data-job='{job.id}']")
    assert page.locator("#retry-all").count() == 0
    # The page hides the buttons; the API refuses the action anyway.
    status, body = page.evaluate(
        """async (id) => {
            const headers = {Authorization: `Bearer ${sessionStorage.getItem("jobs.token")}`};
            const r = await fetch(`/v1/jobs/${id}/retry`, {method: "POST", headers});
            return [r.status, await r.json()];
        }""",
        job.id,
    )
    assert status == 403 and "jobs.retry" in body["error"]["message"]
    status, _body = page.evaluate(
        """async () => {
            const headers = {Authorization: `Bearer ${sessionStorage.getItem("jobs.token")}`};
            const url = '/v1/queues/process_notifications/pause';
            const r = await fetch(url, {method: 'POST', headers});
            return [r.status, await r.json()];
        }"""
    )
    assert status == 403
    assert store.get(job.id).status is Status.FAILED  # type: ignore[union-attr]


def test_an_org_admin_sees_only_their_organisations_jobs(
    page: Any, console: Console, client: JobsClient
) -> None:
    acme = [
        client.enqueue("noop_like", {}, org_id="acme", created_by=f"member-{i}").id
        for i in range(3)
    ]
    globex = [
        client.enqueue("noop_like", {}, org_id="globex", created_by="other").id for _ in range(2)
    ]
    sign_in(page, console, "acme-admin", "#/jobs")
    page.wait_for_selector(f"tr[data-job='{acme[0]}']")
    shown = set(page.eval_on_selector_all("tr[data-job]", "rows => rows.map(r => r.dataset.job)"))
    assert shown == set(acme) and not shown & set(globex)
    status, _ = page.evaluate(
        """async (id) => {
            const headers = {Authorization: `Bearer ${sessionStorage.getItem("jobs.token")}`};
            const r = await fetch(`/v1/jobs/${id}`, {headers});
            return [r.status, await r.text()];
        }""",
        globex[0],
    )
    assert status == 404  # another org's job does not exist for them


XSS = "<img src=x onerror=\"window.__xss='img'\"><script>window.__xss='script'</script>"


def test_hostile_content_is_shown_as_text_and_never_runs(
    page: Any,
    dialogs: list[str],
    console: Console,
    client: JobsClient,
    store: JobStore,
    worker_factory: Callable[..., Any],
) -> None:
    worker_factory()
    meta = client.enqueue(
        "never_registered_type",
        {"note": XSS, "nested": {"html": "<b onmouseover=alert(1)>bold</b>"}},
    )
    hostile_type = client.enqueue(f"evil{XSS}", {})
    wait_finished(store, [meta.id, hostile_type.id])
    response = page.request.get(console.url)
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    sign_in(page, console, "dev-operator", f"#/jobs/{meta.id}")
    page.wait_for_selector("#metadata")
    assert (
        json.loads(page.inner_text("#metadata"))["note"] == XSS
    )  # the markup, shown as the text it is
    page.goto(console.url + f"#/jobs/{hostile_type.id}")
    page.wait_for_selector("#error")
    assert "job type 'evil<img src=x onerror=" in page.inner_text(
        "#error"
    ) and f"evil{XSS}" in page.inner_text("#job")
    page.goto(console.url + "#/jobs?status=failed")
    page.wait_for_selector(f"tr[data-job='{hostile_type.id}']")
    assert page.evaluate("window.__xss") is None
    assert (
        page.locator("#main img, #main script, #main b").count() == 0
    )  # no element came from the data
    assert dialogs == []


def test_the_console_says_it_is_offline_and_recovers(
    page: Any, console: Console, client: JobsClient, store: JobStore
) -> None:
    job = client.enqueue("never_registered_type", {})
    sign_in(page, console, "dev-operator", f"#/jobs/{job.id}")
    page.wait_for_selector("#job .status[data-status='pending']")
    console.stop()
    page.wait_for_selector("#offline:not([hidden])", timeout=10_000)
    store.ref(job.id).update({"status": "completed", "result": "done while offline"})
    console.restart()
    page.wait_for_selector("#offline[hidden]", state="attached", timeout=15_000)
    page.wait_for_selector("#job .status[data-status='completed']", timeout=10_000)
    assert "done while offline" in page.inner_text("#result")


def test_an_expired_or_refused_token_leads_back_to_sign_in(page: Any, console: Console) -> None:
    sign_in(page, console, "dev-operator")
    # A token past its expiry, as a tab left open overnight would hold.
    page.evaluate("""() => {
        const b64 = (v) => btoa(JSON.stringify(v))
            .replace(/=+$/, '').replace(/\\+/g, '-').replace(/\\//g, '_');
        const now = Math.floor(Date.now() / 1000);
        const claims = {sub: 'dev-operator', exp: now - 60, iat: now - 3700};
        const header = {alg: 'none', typ: 'JWT'};
        sessionStorage.setItem('jobs.token', b64(header) + '.' + b64(claims) + '.');
    }""")
    page.reload()
    page.wait_for_selector("#signin-message")
    assert "expired" in page.inner_text("#signin-message")
    # A token the API refuses (here: for another project) also ends at the sign-in page, with why.
    page.evaluate("""() => {
        const b64 = (v) => btoa(JSON.stringify(v))
            .replace(/=+$/, '').replace(/\\+/g, '-').replace(/\\//g, '_');
        const now = Math.floor(Date.now() / 1000);
        const claims = {
            iss: 'https://securetoken.google.com/demo-other', aud: 'demo-other', sub: 'x',
            user_id: 'x', iat: now - 5, auth_time: now - 5, exp: now + 3600,
        };
        const header = {alg: 'none', typ: 'JWT'};
        sessionStorage.setItem('jobs.token', b64(header) + '.' + b64(claims) + '.');
    }""")
    page.reload()
    page.wait_for_selector("#signin-message")
    assert "sign in again" in page.inner_text("#signin-message")
    assert page.locator("#nav[hidden]").count() == 1


def test_schedules_are_listed_with_next_runs_and_can_be_fired_disabled_and_enabled(
    page: Any, console: Console, client: JobsClient, store: JobStore
) -> None:
    schedule = console.app.schedules.create(
        "process_notifications",
        "0 3 * * *",
        metadata={"targetUsers": ["nightly"]},
        created_by="someone",
    )
    sign_in(page, console, "dev-operator", "#/schedules")
    row = f"tr[data-schedule='{schedule.id}']"
    page.wait_for_selector(row)
    assert "0 3 * * *" in page.inner_text(row)
    page.click(f"{row} button[data-action='fire']")
    page.wait_for_selector("#notice.ok:has-text('fired')")
    fired = console.app.schedules.get(schedule.id).last_job_id
    assert fired is not None and store.get(fired).type == "process_notifications"  # type: ignore[union-attr]
    page.click(f"{row} button[data-action='disable']")
    page.wait_for_selector(f"{row} button[data-action='enable']", timeout=10_000)
    assert console.app.schedules.get(schedule.id).enabled is False
    page.click(f"{row} button[data-action='enable']")
    page.wait_for_selector(f"{row} button[data-action='disable']", timeout=10_000)
    assert console.app.schedules.get(schedule.id).enabled is True


def test_bulk_retry_confirms_how_many_and_retries_them(
    page: Any,
    console: Console,
    client: JobsClient,
    store: JobStore,
    worker_factory: Callable[..., Any],
    registry: HandlerRegistry,
) -> None:
    worker_factory()
    failed = [client.enqueue("bulk_fixable", {"n": i}).id for i in range(3)]
    other = client.enqueue("other_broken", {}).id
    wait_finished(store, [*failed, other])
    registry.handler("bulk_fixable")(lambda ctx: ctx.metadata["n"])
    sign_in(page, console, "dev-operator", "#/jobs?status=failed&type=bulk_fixable")
    page.click("#retry-all")
    page.wait_for_selector("#confirm")
    assert "Retry 3 failed jobs of type bulk_fixable?" in page.inner_text("#confirm")
    page.click("#confirm-retry")
    page.wait_for_selector("#notice.ok:has-text('Retried 3')")
    jobs = wait_finished(store, failed, timeout=30)
    assert sorted(j.result for j in jobs.values()) == [0, 1, 2]
    assert store.get(other).status is Status.FAILED  # type: ignore[union-attr]  # outside the filter: untouched


def test_screenshots_of_the_overview_and_of_a_job_with_live_progress(
    page: Any,
    console: Console,
    client: JobsClient,
    store: JobStore,
    registry: HandlerRegistry,
    worker_factory: Callable[..., Any],
) -> None:
    @registry.handler("export_report", timeout=60)
    def export_report(ctx: Any) -> dict[str, int]:
        for step in range(1, 21):
            ctx.progress(step * 5, f"writing rows of part {step}", step=step, total_steps=20)
            time.sleep(0.25)
        return {"rows": 2000}

    running = worker_factory(concurrency=8)
    for i in range(12):
        client.enqueue("process_notifications", {"targetUsers": [f"u{i}"]})
    client.enqueue("process_notifications", {"targetUsers": "not-a-list"})
    client.enqueue(
        "process_notifications",
        {"targetUsers": ["later"]},
        scheduled_for=store.now().replace(year=store.now().year + 1),
    )
    export = client.enqueue(
        "export_report", {"report": "quotes", "format": "csv"}, org_id="acme", created_by="alice"
    )
    sign_in(page, console, "dev-operator", f"#/jobs/{export.id}")
    page.wait_for_selector("#job .status[data-status='in_progress']", timeout=20_000)
    first = page.get_attribute(".progress > div", "data-percent")
    page.wait_for_function(
        "(before) => { const d = document.querySelector('.progress > div'); return d && "
        "d.dataset.percent !== before && Number(d.dataset.percent) >= 30; }",
        arg=first,
        timeout=20_000,
    )
    assert "writing rows of part" in page.inner_text(
        "#progress-text"
    )  # the bar moved without a reload
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "console-job.png"), full_page=True)
    page.wait_for_selector("#job .status[data-status='completed']", timeout=30_000)
    # The worker writes its minute counts every 15 s; now, for the chart.
    running.worker.engine.throughput.flush()
    page.goto(console.url + "#/overview")
    page.wait_for_selector("tr[data-type='export_report']")
    page.wait_for_selector("#chart svg")
    page.screenshot(path=str(SCREENSHOTS / "console-overview.png"), full_page=True)
    assert Path(SCREENSHOTS / "console-overview.png").stat().st_size > 10_000


# -- the Firebase JS SDK's own sign-in, against firebase-tools' Auth emulator ---------------------


@pytest.fixture(scope="module")
def auth_emulator() -> Iterator[Any]:
    """firebase-tools' Auth emulator with the dev users in it (scripts/bootstrap installs
    firebase-tools)."""
    from jobs_lib.console import create_dev_users
    from jobs_lib.devstack import auth_emulator as auth_mod
    from jobs_lib.errors import EmulatorUnavailable

    from .conftest import PROJECT

    try:
        emulator = auth_mod.start(PROJECT)
    except EmulatorUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    create_dev_users(emulator)
    yield emulator
    emulator.stop()


def test_operators_sign_in_with_the_firebase_js_sdk_on_the_auth_emulator(
    page: Any,
    auth_emulator: Any,
    settings: Settings,
    registry: HandlerRegistry,
    monkeypatch: pytest.MonkeyPatch,
    client: JobsClient,
) -> None:
    monkeypatch.setenv(
        "FIREBASE_AUTH_EMULATOR_HOST", auth_emulator.host
    )  # firebase-admin verifies the emulator's tokens
    app = App(
        settings.with_(
            console_auth="firebase",
            firebase_api_key="demo-api-key",
            auth_emulator_host=auth_emulator.host,
        ),
        registry=registry,
    )
    served = Console(app)
    try:
        assert (
            f"http://{auth_emulator.host}"
            in page.request.get(served.url).headers["content-security-policy"]
        )
        page.goto(served.url)
        page.wait_for_selector("#signin input[type=email]")
        page.get_by_role(
            "button", name="Sign in as dev viewer"
        ).click()  # fills the form; the SDK signs in
        page.wait_for_selector("#who:has-text('dev-viewer (viewer)')", timeout=20_000)
        page.wait_for_selector(
            "tr[data-type='process_notifications']"
        )  # the API took the emulator's ID token, claims and all
        assert page.locator("button[data-action='pause']").count() == 0
        page.click("#signout")
        page.wait_for_selector("#signin input[type=email]")
        page.fill("#signin input[type=email]", "dev-operator@example.com")
        page.fill("#signin input[type=password]", "wrong password")
        page.click("#signin button[type=submit]")
        page.wait_for_selector("#signin-message")
        assert "Sign-in failed" in page.inner_text("#signin-message")
        page.get_by_role("button", name="Sign in as dev operator").click()
        page.wait_for_selector("#who:has-text('dev-operator (operator)')", timeout=20_000)
        page.wait_for_selector("tr[data-type='process_notifications'] button[data-action='pause']")
        job = client.enqueue("process_notifications", {"targetUsers": ["sdk"]})
        page.goto(served.url + f"#/jobs/{job.id}")
        page.wait_for_selector("#job .status[data-status='pending']")
        page.click("button[data-action='cancel']")
        page.wait_for_selector("#job .status[data-status='cancelled']", timeout=10_000)
    finally:
        served.stop()
        app.close()
