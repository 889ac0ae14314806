"""Cloud Functions entry points: thin adapters over jobs_lib.functions.

Deploy with `jobs deploy` (it prints the gcloud commands). Each function
parses its trigger, calls one library function and maps the outcome to a
response; this is the only place with a catch-all, so that no unexpected
error turns into endless redelivery (the tick picks up whatever was left).
`jobs` holds the instance's jobs_lib, built from the environment on the first
call, not at import.
"""

from __future__ import annotations

import logging
from typing import Any

import functions_framework

from jobs_lib.functions import Functions
from jobs_lib.logs import configure

configure()
log = logging.getLogger("functions")
jobs = Functions()


@functions_framework.cloud_event
def on_job_created(cloud_event: Any) -> None:
    """Firestore document.v1.created on backgroundJobs/{jobId}: run that job now."""
    try:
        jobs.on_job_created(cloud_event)
    except Exception:  # the tick recovers the job; a redelivery loop would not help
        log.exception("on_job_created failed for event %s", cloud_event["id"])


@functions_framework.http
def tick(request: Any) -> tuple[dict[str, Any], int]:
    """Cloud Scheduler target: run due, retried, orphaned and expired jobs within a budget."""
    try:
        return jobs.tick(request), 200
    except Exception as exc:
        log.exception("tick failed")
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}, 500


@functions_framework.http
def api(request: Any) -> Any:
    """The REST jobs API (/v1/jobs...): Firebase ID token auth, see jobs_lib.api."""
    try:
        return jobs.api(request)
    except Exception:  # the API answers every request itself; this is start-up failing
        log.exception("api failed to start")
        return {"error": {"code": 500, "status": "INTERNAL", "message": "internal error", "details": []}}, 500
