"""Handlers that worker subprocesses in the tests load (`--handlers handlers_for_tests`)."""

from __future__ import annotations

import os
import time
from typing import Any

from google.cloud import firestore

from jobs_lib import JobContext, handler


@handler("noop", max_attempts=3)
def noop(ctx: JobContext[Any]) -> None:
    """Do nothing."""


@handler("sleep", max_attempts=3, timeout=120)
def sleep(ctx: JobContext[Any]) -> dict[str, Any]:
    """Sleep ``metadata.seconds``, reporting progress, then count the run in ``runs/{jobId}``."""
    seconds = float(ctx.metadata.get("seconds", 1))
    marker = ctx.db.collection("runs").document(ctx.job_id)
    marker.set({"started": firestore.Increment(1), "pid": os.getpid()}, merge=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(min(0.2, max(end - time.monotonic(), 0)))
        ctx.progress(min(100.0, round(100 * (1 - (end - time.monotonic()) / seconds), 1)), "sleeping")
    marker.set({"finished": firestore.Increment(1)}, merge=True)
    return {"pid": os.getpid(), "slept": seconds}
