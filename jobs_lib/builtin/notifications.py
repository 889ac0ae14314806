"""`process_notifications` (seeds/000): one notification document per target user.

Input (the job's ``metadata``): ``targetUsers`` (user ids), ``notificationType``,
and optional ``title``, ``body`` and ``data``. Each user gets
``users/{uid}/notifications/{jobId}``: the job id is the document id, so
running the job again rewrites the same documents and never duplicates one.
The result is the number of users notified.
"""

from __future__ import annotations

from typing import Any

from google.cloud import firestore
from pydantic import BaseModel, ConfigDict, Field, field_validator

from jobs_lib.context import JobContext
from jobs_lib.registry import handler

#: Writes per batch commit (Firestore allows 500).
CHUNK = 400


class NotificationInput(BaseModel):
    """The metadata of a `process_notifications` job."""

    model_config = ConfigDict(extra="allow")

    targetUsers: list[str] = Field(default_factory=list, max_length=100_000)
    notificationType: str = "general"
    title: str | None = None
    body: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("targetUsers")
    @classmethod
    def _valid_ids(cls, users: list[str]) -> list[str]:
        for uid in users:
            if not uid or "/" in uid or uid in (".", ".."):
                raise ValueError(f"{uid!r} is not a valid user id (a non-empty id without '/')")
        return list(dict.fromkeys(users))  # the same user twice gets one notification


@handler("process_notifications", input=NotificationInput, max_attempts=5, timeout=300)
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
