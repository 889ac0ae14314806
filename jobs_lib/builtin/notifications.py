"""`process_notifications` (the original app's job type): one notification document per target user.

Input (the job's ``metadata``): ``targetUsers`` (user ids), ``notificationType``,
and optional ``title``, ``body`` and ``data``. Each user gets
``users/{uid}/notifications/{jobId}``, created (never overwritten): a run of the
job again finds its own documents (their ``jobId`` is this job's) and counts
them as written, and a document of that id that is not this job's (the app's
own, or a job whose id a client chose to collide with it) is left as it was and
logged. The result is the number of users notified.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from jobs_lib.context import JobContext
from jobs_lib.errors import StoreRefused
from jobs_lib.observability.logs import event
from jobs_lib.registry import handler
from jobs_lib.store import SERVER_TIME

if TYPE_CHECKING:
    from jobs_lib.builtin.notification_input import NotificationInput

#: Creates per BatchWrite RPC (Firestore allows 500).
CHUNK = 400


@handler(
    "process_notifications",
    input="jobs_lib.builtin.notification_input:NotificationInput",
    max_attempts=5,
    timeout=300,
)
def process_notifications(ctx: JobContext[NotificationInput]) -> int:
    """Write a notification for each target user; return how many users were notified."""
    spec = ctx.input
    users = spec.targetUsers
    total_steps = max((len(users) + CHUNK - 1) // CHUNK, 1)
    ctx.progress(0, f"notifying {len(users)} users", step=0, total_steps=total_steps)
    notified = 0
    for step, start in enumerate(range(0, len(users), CHUNK), 1):
        chunk = users[start : start + CHUNK]
        paths = [f"users/{uid}/notifications/{ctx.job_id}" for uid in chunk]
        document = {
            "type": spec.notificationType,
            "title": spec.title,
            "body": spec.body,
            "data": spec.data,
            "jobId": ctx.job_id,
            "read": False,
            "createdAt": SERVER_TIME,
        }
        results = ctx.store.create_documents([(path, document) for path in paths], "notifications")
        refused = [
            (path, result.code)
            for path, result in zip(paths, results, strict=True)
            if not (result.ok or result.exists)
        ]
        if refused:
            raise StoreRefused(
                f"{len(refused)} notification(s) were not written (first: {refused[0][0]}, code "
                f"{refused[0][1]})"
            )
        taken = [path for path, result in zip(paths, results, strict=True) if result.exists]
        held = ctx.store.documents(taken, "notifications:existing") if taken else {}
        foreign = [path for path in taken if held.get(path, {}).get("jobId") != ctx.job_id]
        notified += len(chunk) - len(foreign)
        if foreign:
            event(
                ctx.logger,
                "notification_skipped",
                f"{len(foreign)} notification document(s) with this job's id were not written by "
                f"it and were left as they were (first: {foreign[0]})",
                level=logging.WARNING,
                count=len(foreign),
            )
        done = min(start + CHUNK, len(users))
        ctx.progress(
            round(100 * done / len(users), 1),
            f"notified {done} of {len(users)} users",
            step=step,
            total_steps=total_steps,
        )
    ctx.logger.info("notified %d users", notified, extra={"count": notified})
    return notified
