"""`jobs.cleanup`: delete finished jobs whose ``expireAt`` has passed, in bounded batches.

Finished jobs get ``expireAt`` (30 days by default, per handler with
``retention=``). In production a Firestore TTL policy on ``expireAt``
(declared in firestore.indexes.json) deletes them; this system schedule does
the same where no TTL policy runs, such as the emulator. Set
``JOBS_CLEANUP_CRON`` to change when it runs, or to ``off`` to not declare it.
"""

from __future__ import annotations

import os
from typing import Any

from jobs_lib.context import JobContext
from jobs_lib.registry import default_registry, handler

#: Deleted per query; a run stops after MAX_BATCHES so it never runs long.
BATCH = 400
MAX_BATCHES = 10


@handler("jobs.cleanup", max_attempts=3, timeout=120)
def cleanup(ctx: JobContext[Any]) -> int:
    """Delete up to BATCH * MAX_BATCHES expired finished jobs; returns how many were deleted."""
    deleted = 0
    for _ in range(MAX_BATCHES):
        ids = [i for i in ctx.store.expired_finished(ctx.store.now(), BATCH) if i != ctx.job_id]
        if not ids:
            break
        deleted += ctx.store.delete_all(ids)
        ctx.check_cancelled()
    ctx.logger.info("deleted %d expired jobs", deleted, extra={"count": deleted})
    return deleted


_CRON = os.environ.get("JOBS_CLEANUP_CRON", "*/15 * * * *")
if _CRON.lower() != "off":
    default_registry.add_schedule("jobs.cleanup", "jobs.cleanup", _CRON)
