"""`jobs.continue`: the wake-up document that brings a continued job its next created-event.

A continuable job that ends a slice on the functions (`jobs_lib.engine.durable`) is
pending again, and no created-event comes for a document that is only
updated. The runner then creates a small ``jobs.continue`` document naming the
job: its created-event (`jobs_lib.functions.Functions.on_job_created`) deletes
it and runs the job's next slice at once. Should that event be lost, the
document is an ordinary job that a tick or a worker completes (doing nothing:
the continued job is pending and due, in its lane), and it expires in an hour.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from jobs_lib.context import JobContext
from jobs_lib.registry import handler

CONTINUE_TYPE = "jobs.continue"
#: A wake-up document is deleted this long after it was made, run or not.
WAKE_RETENTION = timedelta(hours=1)


@handler(CONTINUE_TYPE, max_attempts=1, timeout=30, retention=WAKE_RETENTION)
def wake(ctx: JobContext[Any]) -> dict[str, Any]:
    """Nothing to do: the job it names is pending and due, where every runner finds it."""
    return {"jobId": ctx.metadata.get("jobId")}


__all__ = ["CONTINUE_TYPE", "WAKE_RETENTION", "wake"]
