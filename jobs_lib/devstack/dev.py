"""`jobs dev`: the whole stack on this machine, with the emulator's real trigger delivery.

    emulator ──POST created-event──> dispatcher ──same request──> functions-framework
                                                                  (on_job_created)
    ticker ───Cloud Scheduler POST─────────────────────────────> functions-framework (tick)

The emulator delivers events one at a time, waits for each answer and drops
any that fails or takes too long (measured; see docs/deployment/functions.md). So the dispatcher,
standing in for Eventarc, answers at once and hands each event to the
function on a pool of threads, as separate instances would run in the cloud,
retrying a few times when the function host is down. Each function runs in
its own functions-framework process, started exactly as in production. The
ticker calls the tick with Cloud Scheduler's headers on a fixed interval.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobs_lib.config import Settings, child_environment, environment_value, exported
from jobs_lib.devstack import emulator as emulator_mod
from jobs_lib.devstack.emulator import Emulator, free_port, stop_process_group

log = logging.getLogger("jobs_lib.dev")

ROOT = Path(__file__).resolve().parents[2]
TRIGGER_NAME = "onJobCreated"
#: What Cloud Scheduler sends with each call (plus an OIDC token, checked by Cloud Run, not by the
#: code).
SCHEDULER_HEADERS = {
    "User-Agent": "Google-Cloud-Scheduler",
    "X-CloudScheduler": "true",
    "X-CloudScheduler-JobName": "jobs-tick",
    "Content-Type": "application/octet-stream",
}


@dataclass
class FunctionHost:
    """One functions-framework process serving one function."""

    target: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    _log: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """Where the function answers."""
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        """Stop the process and everything it started."""
        stop_process_group(self.process)
        if self._log is not None:
            self._log.close()
            self._log = None


class Dispatcher:
    """The Eventarc stand-in: answers the emulator at once, delivers to the function
    concurrently."""

    def __init__(
        self,
        deliver_to: dict[str, str],
        *,
        threads: int = 32,
        retries: int = 3,
        duplicate: bool = False,
    ) -> None:
        self.deliver_to = deliver_to
        self.retries = retries
        #: Deliver every event twice, at once: Eventarc is at-least-once (the chaos suite uses
        #: this).
        self.duplicate = duplicate
        self.delivered = 0
        self.dropped = 0
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="dispatch")
        dispatcher = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower().startswith("ce-") or k.lower() == "content-type"
                }
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                trigger = self.path.rstrip("/").rsplit("/", 1)[-1]
                for _ in range(2 if dispatcher.duplicate else 1):
                    dispatcher._pool.submit(dispatcher._deliver, trigger, headers, body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="dispatcher", daemon=True
        )

    @property
    def address(self) -> str:
        """host:port, for the emulator's --functions_emulator."""
        host, port = self.server.server_address[:2]
        return f"{host.decode() if isinstance(host, bytes) else host}:{port}"

    def start(self) -> None:
        self._thread.start()

    def _deliver(self, trigger: str, headers: dict[str, str], body: bytes) -> None:
        url = self.deliver_to.get(trigger)
        if url is None:
            log.warning("no function for trigger %s", trigger)
            return
        delay = 0.5
        for attempt in range(self.retries + 1):
            try:
                request = urllib.request.Request(url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=600) as response:
                    response.read()
                self.delivered += 1
                return
            except (urllib.error.URLError, OSError) as exc:
                if attempt == self.retries:
                    self.dropped += 1
                    log.warning(
                        "dropped event %s after %d attempts: %s",
                        headers.get("ce-id"),
                        attempt + 1,
                        exc,
                    )
                    return
                time.sleep(delay)
                delay *= 2

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)


class DevStack:
    """The emulator, the functions and the scheduler stand-in, started and stopped together."""

    def __init__(
        self,
        *,
        project: str = "demo-jobs",
        handlers: str | None = None,
        tick_interval: float | None = 60.0,
        functions_dir: Path | None = None,
        rules: Path | None = None,
        log_dir: Path | None = None,
        threads: int = 32,
        env: dict[str, str] | None = None,
        duplicate_events: bool = False,
        console_port: int | None = None,
        auth_emulator: bool = True,
        example: bool = False,
    ) -> None:
        """With `console_port` (0: any free port) the operators' console is served beside the stack,
        signing people in as ready-made dev users with emulator tokens. With `example` as well (and
        the Auth emulator running), the example web app (`jobs_lib.devstack.webapp`) is served
        too."""
        self.project = project
        #: Where the jobs live (JOBS_DATABASE, JOBS_COLLECTION): the trigger is registered on them.
        self.settings = Settings.from_env(project=project)
        self.duplicate_events = duplicate_events
        self.handlers = handlers if handlers is not None else ",".join(Settings.from_env().handlers)
        self.tick_interval = tick_interval
        self.functions_dir = functions_dir or ROOT / "functions"
        self.rules = rules if rules is not None else ROOT / "firestore.rules"
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="jobs-dev-"))
        self.threads = threads
        self.extra_env = env or {}
        self.emulator: Emulator | None = None
        self.emulator_address = ""
        self.hosts: dict[str, FunctionHost] = {}
        self.dispatcher: Dispatcher | None = None
        self.ticks: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._exported = contextlib.ExitStack()
        self.console_port = console_port
        #: Start firebase-tools' Auth emulator for the console when it is installed.
        self.auth_emulator_wanted = auth_emulator
        self.auth: Any = None
        self.console: Any = None
        self.console_app: Any = None
        self.example_wanted = example
        self.example: Any = None
        #: Why the example app is not served (when it was wanted), for the demo to say.
        self.example_missing: str | None = None

    # -- the pieces ---------------------------------------------------------------------

    def function_env(self) -> dict[str, str]:
        """The environment each function process gets (what Cloud Functions would set)."""
        return child_environment(
            {
                "FIRESTORE_EMULATOR_HOST": self.emulator_address,
                "GOOGLE_CLOUD_PROJECT": self.project,
                "JOBS_HANDLERS": self.handlers,
                "THREADS": str(self.threads),
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join(
                    p for p in (str(ROOT), environment_value("PYTHONPATH") or "") if p
                ),
                **self.extra_env,
            }
        )

    def start_host(self, target: str, signature: str, *, python: str | None = None) -> FunctionHost:
        """Start (or restart) the functions-framework process for one function (as Cloud Run does:
        ``FUNCTION_TARGET`` names it), with this Python or another (functions/venv's)."""
        old = self.hosts.get(target)
        port = old.port if old else free_port()
        if old:
            old.stop()
        log_path = self.log_dir / f"{target}.log"
        handle = open(log_path, "ab")  # noqa: SIM115 - closed in FunctionHost.stop
        command = [
            python or sys.executable,
            "-m",
            "functions_framework",
            f"--target={target}",
            f"--source={self.functions_dir / 'main.py'}",
            f"--signature-type={signature}",
            "--host=127.0.0.1",
            f"--port={port}",
        ]
        env = {
            **self.function_env(),
            "FUNCTION_TARGET": target,
            "FUNCTION_SIGNATURE_TYPE": signature,
        }
        process = subprocess.Popen(
            command,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        host = FunctionHost(target, port, process, log_path, handle)
        self.hosts[target] = host
        return host

    def wait_for_hosts(self, timeout: float = 60.0, targets: tuple[str, ...] | None = None) -> None:
        """Wait until every function host (or those of `targets`) answers."""
        deadline = time.monotonic() + timeout
        for host in (h for h in self.hosts.values() if targets is None or h.target in targets):
            while True:
                if host.process.poll() is not None:
                    raise RuntimeError(
                        f"function {host.target} "
                        f"exited:\n{host.log_path.read_text(errors='replace')[-3000:]}"
                    )
                try:
                    urllib.request.urlopen(
                        urllib.request.Request(host.url, method="GET"), timeout=2
                    ).close()
                    break
                except urllib.error.HTTPError:
                    break  # it answered
                except (urllib.error.URLError, OSError):
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"function {host.target} did not start within {timeout:g}s"
                        ) from None
                    time.sleep(0.1)

    def register_trigger(self) -> None:
        """Register the created-trigger on backgroundJobs/{jobId} with the emulator."""
        assert self.emulator is not None
        body = json.dumps(
            {
                "eventType": "google.cloud.firestore.document.v1.created",
                "database": self.settings.database,
                "namespace": "(default)",
                "document": {
                    "value": self.settings.collection + "/{jobId}",
                    "matchType": "PATH_PATTERN",
                },
            }
        ).encode()
        url = (
            f"{self.emulator.url}/emulator/v1/projects/{self.project}/eventarcTrigger"
            f"?eventarcTriggerId={TRIGGER_NAME}"
        )
        request = urllib.request.Request(
            url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def tick_now(self, timeout: float = 600.0) -> dict[str, Any]:
        """Call the tick function the way Cloud Scheduler does; returns its JSON answer."""
        headers = {
            **SCHEDULER_HEADERS,
            "X-CloudScheduler-ScheduleTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        request = urllib.request.Request(
            self.hosts["tick"].url, data=b"{}", headers=headers, method="POST"
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer: dict[str, Any] = json.loads(response.read())
        self.ticks.append(answer)
        return answer

    def _tick_loop(self) -> None:
        assert self.tick_interval is not None
        while not self._stop.wait(self.tick_interval):
            try:
                self.tick_now()
            except (urllib.error.URLError, OSError, ValueError) as exc:
                log.warning("tick failed: %s", exc)

    # -- the whole --------------------------------------------------------------------------

    def start(self) -> DevStack:
        """Start everything; returns self once the trigger is registered and the functions
        answer."""
        port = free_port()
        self.emulator_address = f"127.0.0.1:{port}"
        try:
            # The functions start while the emulator does; they connect on first use.
            self.start_host("on_job_created", "cloudevent")
            self.start_host("tick", "http")
            self.dispatcher = Dispatcher(
                {TRIGGER_NAME: self.hosts["on_job_created"].url},
                threads=self.threads,
                duplicate=self.duplicate_events,
            )
            self.dispatcher.start()
            rules = str(self.rules) if self.rules and Path(self.rules).exists() else None
            self.emulator = emulator_mod.start(
                project=self.project,
                port=port,
                rules=rules,
                functions_emulator=self.dispatcher.address,
            )
            # This process's clients use the emulator too.
            self._exported.enter_context(
                exported(
                    FIRESTORE_EMULATOR_HOST=self.emulator.address, GOOGLE_CLOUD_PROJECT=self.project
                )
            )
            self.wait_for_hosts()
            self.register_trigger()
            self.start_console_and_ticker()
        except BaseException:
            self.stop()
            raise
        return self

    def start_console_and_ticker(self) -> None:
        """The console (when a port was asked for) and the Cloud Scheduler stand-in (when an
        interval was)."""
        if self.console_port is not None:
            self.start_console()
            if self.example_wanted:
                self.start_example()
        if self.tick_interval:
            self._ticker = threading.Thread(target=self._tick_loop, name="ticker", daemon=True)
            self._ticker.start()

    def start_console(self) -> None:
        """Serve the console and the REST API from this process, on the stack's emulator.

        With firebase-tools installed, its Auth emulator runs beside the stack with the dev users
        in it, and the console signs in through the Firebase JS SDK; otherwise with emulator tokens.
        """
        from jobs_lib.app import App
        from jobs_lib.console import create_dev_users
        from jobs_lib.console.server import ConsoleServer
        from jobs_lib.devstack import auth_emulator

        handlers = tuple(m for m in self.handlers.split(",") if m)
        if auth_emulator.find_firebase() is not None and self.auth_emulator_wanted:
            self.auth = auth_emulator.start(self.project)
            create_dev_users(self.auth)
            settings = self.settings.with_(
                handlers=handlers,
                console_auth="firebase",
                firebase_api_key="demo-api-key",
                auth_emulator_host=self.auth.host,
            )
        else:
            # No Auth emulator runs: firebase-admin accepts unsigned emulator tokens.
            auth_host = "127.0.0.1:9099"
            settings = self.settings.with_(
                handlers=handlers, console_auth="emulator-tokens", auth_emulator_host=auth_host
            )
        assert settings.auth_emulator_host is not None
        self._exported.enter_context(
            exported(FIREBASE_AUTH_EMULATOR_HOST=settings.auth_emulator_host)
        )
        self.console_app = App(settings)
        self.console = ConsoleServer(self.console_app.api(), port=self.console_port or 0).start()

    def start_example(self) -> None:
        """Serve the example web app, with a user `alice` (org acme) in the Auth emulator to sign in
        as."""
        from jobs_lib.devstack import webapp

        if self.auth is None or self.emulator is None:
            self.example_missing = (
                "it signs in on the Auth emulator, which needs "
                "firebase-tools (scripts/bootstrap installs it)"
            )
            return
        if not webapp.available():
            self.example_missing = (
                f"it is not built: npm ci && npm run build:example in "
                f"{webapp.EXAMPLE.parent} (scripts/bootstrap does)"
            )
            return
        self.auth.create_user("alice", "alice@example.test", "alice-password", {"orgId": "acme"})
        config = webapp.config_for(
            self.project,
            self.emulator.address,
            self.auth.host,
            email="alice@example.test",
            password="alice-password",
        )
        self.example = webapp.ExampleServer(config).start()

    def stop(self) -> None:
        """Stop every process this stack started."""
        self._stop.set()
        if self.example is not None:
            self.example.stop()
            self.example = None
        if self.console is not None:
            self.console.stop()
            self.console = None
        if self.console_app is not None:
            self.console_app.close()
            self.console_app = None
        if self.auth is not None:
            self.auth.stop()
            self.auth = None
        for host in self.hosts.values():
            host.stop()
        if self.dispatcher is not None:
            self.dispatcher.stop()
        if self.emulator is not None:
            self.emulator.stop()
        self._exported.close()

    def __enter__(self) -> DevStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["SCHEDULER_HEADERS", "DevStack", "Dispatcher", "FunctionHost"]
