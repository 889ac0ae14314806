"""Structured logs: one JSON object a line, the shape Cloud Logging reads.

Every line has ``severity``, ``message`` and ``time``; lines about a job add
``event`` (``job_claimed``, ``job_completed``, ``job_failed``, ...),
``jobId``, ``type``, ``attempt`` and, when it finished, ``durationMs``.
Handlers log through `JobContext.logger`, which tags their lines the same way.
Lines written inside a traced span (a job's attempt, see `jobs_lib.observability.telemetry`)
carry ``logging.googleapis.com/trace``, ``logging.googleapis.com/spanId`` and
``correlationId`` (the trace id), so Cloud Logging shows them with the trace.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any

#: The fields a record may carry beyond the message (set with ``extra=``).
_FIELDS = (
    "event",
    "jobId",
    "type",
    "attempt",
    "durationMs",
    "worker",
    "error",
    "errorType",
    "retryInSeconds",
    "status",
    "count",
    "schedule",
    "detail",
    "user",
    "action",
    "stats",
    "queueMs",
)
#: The fields that tie a line to its trace (set by `jobs_lib.observability.telemetry.log_fields`).
TRACE_FIELDS = (
    "logging.googleapis.com/trace",
    "logging.googleapis.com/spanId",
    "logging.googleapis.com/trace_sampled",
    "correlationId",
)

_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}


class JsonFormatter(logging.Formatter):
    """Formats a record as one Cloud Logging JSON line (`project` names the trace's project)."""

    def __init__(self, project: str | None = None) -> None:
        super().__init__()
        self.project = project

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelno, "DEFAULT"),
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "logger": record.name,
        }
        for name in _FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        trace_fields = {
            name: record.__dict__[name]
            for name in TRACE_FIELDS
            if record.__dict__.get(name) is not None
        }
        if not trace_fields and self.project:
            from jobs_lib.observability.telemetry import (
                log_fields,  # the current span, for lines logged by other code inside it
            )

            trace_fields = log_fields(None, self.project)
        entry.update(trace_fields)
        labels = {k: str(entry[k]) for k in ("jobId", "type", "worker") if k in entry}
        if labels:
            entry["logging.googleapis.com/labels"] = labels
        if record.exc_info:
            entry["stack_trace"] = "".join(traceback.format_exception(*record.exc_info))[-8000:]
        return json.dumps(entry, default=str)


def configure(
    level: int | str = logging.INFO, stream: Any = None, project: str | None = None
) -> None:
    """Send jobs_lib's logs (and the root logger's) to `stream` as JSON lines.

    With `project`, lines logged inside a traced span carry the trace fields."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(project))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_jobs_lib", False):
            root.removeHandler(old)
    handler._jobs_lib = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)


class JobLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger that tags each line with the job it is about."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs


def event(
    logger: logging.Logger | logging.LoggerAdapter,  # type: ignore[type-arg]
    name: str,
    message: str,
    *,
    level: int = logging.INFO,
    exc_info: Any = None,
    **fields: Any,
) -> None:
    """Log one structured event."""
    logger.log(level, message, extra={"event": name, **fields}, exc_info=exc_info)


def job_fields(job_id: str, job_type: str | None, attempt: int | None = None) -> Mapping[str, Any]:
    """The tags every line about one job carries."""
    fields: dict[str, Any] = {"jobId": job_id, "type": job_type}
    if attempt is not None:
        fields["attempt"] = attempt
    return fields


__all__ = ["TRACE_FIELDS", "JobLogger", "JsonFormatter", "configure", "event", "job_fields"]
