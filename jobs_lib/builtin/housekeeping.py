"""`jobs.cleanup`: delete finished jobs whose ``expireAt`` has passed, in bounded batches.

Finished jobs get ``expireAt`` (30 days by default, per handler with
``retention=``). In production a Firestore TTL policy on ``expireAt``
(declared in firestore.indexes.json) deletes them; this handler does the same
where no TTL policy runs, such as the emulator. `jobs_lib.app.App` declares
its system schedule from ``JOBS_CLEANUP_CRON`` (`Settings.cleanup_cron`;
``off`` declares none).
"""

from __future__ import annotations

from typing import Any

from jobs_lib.context import JobContext
from jobs_lib.registry import handler

CLEANUP_TYPE = "jobs.cleanup"
#: Deleted per query; a run stops after MAX_BATCHES so it never runs long.
BATCH = 400
MAX_BATCHES = 10


@handler(CLEANUP_TYPE, max_attempts=3, timeout=120)
def cleanup(ctx: JobContext[Any]) -> int:
    """Delete up to BATCH * MAX_BATCHES expired finished jobs; returns how many were deleted."""
    deleted = 0
    for _ in range(MAX_BATCHES):
        found = [
            (i, docs)
            for i, docs in ctx.store.expired_finished_jobs(ctx.store.now(), BATCH)
            if i != ctx.job_id
        ]
        if not found:
            break
        # A durable job's large step results live in documents of their own: gone with their job,
        # never after.
        ctx.store.delete_step_documents([i for i, docs in found if docs])
        deleted += ctx.store.delete_all([i for i, _docs in found])
        ctx.check_cancelled()
    ctx.logger.info("deleted %d expired jobs", deleted, extra={"count": deleted})
    return deleted


__all__ = ["BATCH", "CLEANUP_TYPE", "MAX_BATCHES", "cleanup"]
