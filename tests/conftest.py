"""Test harness: one real Firestore emulator per session, an empty database per test.

The emulator is started directly (``java -cp cloud-firestore-emulator.jar``)
in its own process group on a free port with a ``demo-`` project id, and the
whole group is stopped at the end. When Java or the emulator is missing the
session fails with the commands that install them; it never skips.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from jobs_lib.app import load_handler_modules
from jobs_lib.client import JobsClient
from jobs_lib.config import Settings
from jobs_lib.deploy import firebase
from jobs_lib.devstack import emulator as emulator_mod
from jobs_lib.engine.runner import Engine
from jobs_lib.errors import EmulatorUnavailable
from jobs_lib.registry import HandlerRegistry, default_registry
from jobs_lib.store import JobStore
from jobs_lib.worker import Worker

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
PROJECT = "demo-jobs-test"


def start_emulator(**kwargs: Any) -> emulator_mod.Emulator:
    """Start an emulator or fail the test run with what to install."""
    try:
        return emulator_mod.start(project=PROJECT, **kwargs)
    except EmulatorUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def emulator() -> Iterator[emulator_mod.Emulator]:
    """The session's emulator; FIRESTORE_EMULATOR_HOST points at it."""
    emu = start_emulator()
    os.environ["FIRESTORE_EMULATOR_HOST"] = emu.address
    os.environ["GOOGLE_CLOUD_PROJECT"] = PROJECT
    yield emu
    emu.stop()


@pytest.fixture(scope="session")
def functions_venv() -> Path:
    """functions/venv as `jobs functions-venv --with-tests` makes it (python3.12, the SDK's
    pins)."""
    try:
        return firebase.functions_venv(ROOT / "functions", with_tests=True)
    except EmulatorUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def settings(emulator: emulator_mod.Emulator) -> Settings:
    """Settings for the session emulator, after emptying its database."""
    emulator.clear()
    return Settings(project=PROJECT)


@pytest.fixture
def store(settings: Settings) -> JobStore:
    """A job store on an empty database."""
    return JobStore(settings)


@pytest.fixture
def registry() -> HandlerRegistry:
    """A registry of its own for each test, holding the built-in handlers."""
    load_handler_modules("")
    fresh = HandlerRegistry()
    for name in default_registry.types():
        spec = default_registry.get(name)
        assert spec is not None
        fresh.register(spec)
    return fresh


@pytest.fixture
def client(store: JobStore, registry: HandlerRegistry) -> JobsClient:
    """The Python client on the test's store."""
    return JobsClient(store=store, registry=registry)


@pytest.fixture
def engine_factory(store: JobStore, registry: HandlerRegistry) -> Iterator[Callable[..., Engine]]:
    """Build engines (each a separate lease holder) that are closed after the test."""
    built: list[Engine] = []

    def make(**kwargs: Any) -> Engine:
        kwargs.setdefault("lease_seconds", 5.0)
        engine = Engine(JobStore(store.settings), registry, **kwargs)
        built.append(engine)
        return engine

    yield make
    for engine in built:
        engine.close()


@dataclass
class RunningWorker:
    """A worker running on a thread of the test process."""

    worker: Worker
    thread: threading.Thread

    def stop(self, timeout: float = 30.0) -> None:
        self.worker.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "worker did not stop"


@pytest.fixture
def worker_factory(engine_factory: Callable[..., Engine]) -> Iterator[Callable[..., RunningWorker]]:
    """Start in-process workers on threads; stopped after the test."""
    started: list[RunningWorker] = []

    def make(
        *,
        concurrency: int = 4,
        poll_interval: float = 0.05,
        grace: float = 5.0,
        **engine_kwargs: Any,
    ) -> RunningWorker:
        worker = Worker(
            engine_factory(**engine_kwargs),
            concurrency=concurrency,
            poll_interval=poll_interval,
            grace=grace,
        )
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        running = RunningWorker(worker, thread)
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    interval: float = 0.05,
    message: str = "condition",
) -> Any:
    """Poll until `predicate` returns something truthy; fail with `message` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def wait_finished(store: JobStore, job_ids: list[str], timeout: float = 60.0) -> dict[str, Any]:
    """Wait until every job is completed, failed or cancelled; returns them by id."""

    def check() -> dict[str, Any] | None:
        jobs = {job_id: store.get(job_id) for job_id in job_ids}
        done = all(
            j is not None and j.status is not None and j.status.finished for j in jobs.values()
        )
        return jobs if done else None

    return wait_for(check, timeout, 0.1, f"{len(job_ids)} jobs to finish")  # type: ignore[no-any-return]


@dataclass
class WorkerProcess:
    """A `jobs worker` subprocess, its JSON log on disk."""

    process: subprocess.Popen[bytes]
    log_path: Path
    _log: Any = field(repr=False, default=None)

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far."""
        entries = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                entries.append(json.loads(line))
        return entries

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signum)

    def wait(self, timeout: float = 60.0) -> int:
        return self.process.wait(timeout)


@pytest.fixture
def spawn_worker(
    emulator: emulator_mod.Emulator, tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `jobs worker` processes with the test handlers; all killed after the test."""
    started: list[WorkerProcess] = []

    def spawn(
        *args: str,
        handlers: str = "handlers_for_tests",
        env: dict[str, str] | None = None,
        emu: emulator_mod.Emulator | None = None,
    ) -> WorkerProcess:
        target = emu or emulator
        log_path = tmp_path / f"worker-{len(started)}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - closed at teardown
        full_env = {
            **os.environ,
            "FIRESTORE_EMULATOR_HOST": target.address,
            "GOOGLE_CLOUD_PROJECT": target.project,
            "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)]),
            "JOBS_HANDLERS": handlers,
            **(env or {}),
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "jobs_lib", "worker", *args],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        worker = WorkerProcess(process, log_path, log)
        started.append(worker)
        return worker

    yield spawn
    for worker in started:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGKILL)
            worker.process.wait(10)
        worker._log.close()


@pytest.fixture(autouse=True)
def _capture_info_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Tests assert on jobs_lib's INFO events (job_claimed, job_completed, ...)."""
    caplog.set_level(logging.INFO)


def serve_main(target: str, signature: str, source: str | None = None) -> Any:
    """A new instance of a function of functions/main.py, as functions-framework makes one: main.py
    loaded anew with the entry points it re-exports (`jobs_lib.deploy.entrypoints`), so that its
    jobs_lib is built from the environment as it is now."""
    import functions_framework

    sys.modules.pop("jobs_lib.deploy.entrypoints", None)
    return functions_framework.create_app(
        target=target,
        source=source or str(ROOT / "functions" / "main.py"),
        signature_type=signature,
    )
