"""The emulator harness: clear errors when the emulator cannot start; the JSON log format."""

from __future__ import annotations

import io
import json
import logging

import pytest

from jobs_lib.devstack import emulator
from jobs_lib.errors import EmulatorUnavailable
from jobs_lib.observability.logs import JobLogger, JsonFormatter, configure, event


def test_missing_emulator_jar_names_the_install_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIRESTORE_EMULATOR_JAR", "/nonexistent/cloud-firestore-emulator.jar")
    with pytest.raises(EmulatorUnavailable) as caught:
        emulator.start(project="demo-x")
    message = str(caught.value)
    assert "emulator jar not found" in message
    assert "gcloud components install cloud-firestore-emulator" in message
    assert "google-cloud-cli-firestore-emulator" in message


def test_missing_java_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAVA", "/nonexistent/java")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(EmulatorUnavailable, match="Java not found"):
        emulator.start(project="demo-x")


def test_only_demo_projects() -> None:
    with pytest.raises(EmulatorUnavailable, match="demo-"):
        emulator.start(project="my-real-project")


def test_log_lines_are_cloud_logging_json() -> None:
    stream = io.StringIO()
    configure(logging.INFO, stream)
    try:
        logger = JobLogger(
            logging.getLogger("jobs_lib.test"), {"jobId": "j1", "type": "t", "attempt": 2}
        )
        event(
            logger,
            "job_failed",
            "job j1 failed",
            level=logging.ERROR,
            error="boom",
            durationMs=12.5,
        )
        logger.info("from the handler")
    finally:
        logging.getLogger().handlers = [
            h for h in logging.getLogger().handlers if not getattr(h, "_jobs_lib", False)
        ]
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["severity"] == "ERROR" and first["message"] == "job j1 failed"
    assert (
        first["event"],
        first["jobId"],
        first["type"],
        first["attempt"],
        first["error"],
        first["durationMs"],
    ) == ("job_failed", "j1", "t", 2, "boom", 12.5)
    assert first["logging.googleapis.com/labels"] == {"jobId": "j1", "type": "t"}
    assert first["time"].endswith("Z")
    assert second["severity"] == "INFO" and second["jobId"] == "j1" and "event" not in second


def test_formatter_includes_stack_traces() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "oops", None, exc_info=__import__("sys").exc_info()
        )
    line = json.loads(JsonFormatter().format(record))
    assert "ValueError: bad" in line["stack_trace"]
