"""`process_notifications` (seeds/000): one notification document per target user.

Input (the job's ``metadata``): ``targetUsers`` (user ids), ``notificationType``,
and optional ``title``, ``body`` and ``data``. Each user gets
``users/{uid}/notifications/{jobId}``: the job id is the document id, so
running the job again rewrites the same documents and never duplicates one.
The result is the number of users notified.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from google.cloud import firestore

from jobs_lib.context import JobContext
from jobs_lib.registry import handler

if TYPE_CHECKING:
    from jobs_lib.builtin.notification_input import NotificationInput

#: Writes per batch commit (Firestore allows 500).
CHUNK = 400


@handler("process_notifications", input="jobs_lib.builtin.notification_input:NotificationInput", max_attempts=5, timeout=300)
def process_notifications(ctx: JobContext[NotificationInput]) -> int:
    """Write a notification for each target user; return how many users were notified."""
    spec = ctx.input
    users = spec.targetUsers
    total_steps = max((len(users) + CHUNK - 1) // CHUNK, 1)
    ctx.progress(0, f"notifying {len(users)} users", step=0, total_steps=total_steps)
    for step, start in enumerate(range(0, len(users), CHUNK), 1):
        batch = ctx.db.batch()
        for uid in users[start : start + CHUNK]:
            ref = ctx.db.collection("users").document(uid).collection("notifications").document(ctx.job_id)
            batch.set(
                ref,
                {
                    "type": spec.notificationType,
                    "title": spec.title,
                    "body": spec.body,
                    "data": spec.data,
                    "jobId": ctx.job_id,
                    "read": False,
                    "createdAt": firestore.SERVER_TIMESTAMP,
                },
            )
        batch.commit()
        done = min(start + CHUNK, len(users))
        ctx.progress(round(100 * done / len(users), 1), f"notified {done} of {len(users)} users", step=step, total_steps=total_steps)
    ctx.logger.info("notified %d users", len(users), extra={"count": len(users)})
    return len(users)
