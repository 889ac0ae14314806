"""The input of `process_notifications`, a pydantic model: imported only when such a job runs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


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
