"""Handlers whose input models the web client's generated types describe (`jobs types --handlers
tests.web_handlers`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from jobs_lib import JobContext, handler


class ResizeInput(BaseModel):
    """An image to resize."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, description="Where the image is.")
    width: int = Field(gt=0, le=10_000)
    format: Literal["png", "jpeg", "webp"] = "png"


@handler("resize_image", input=ResizeInput)
def resize_image(ctx: JobContext[ResizeInput]) -> dict[str, str]:
    """Resize an image (the test types' example)."""
    return {"path": f"{ctx.input.path}@{ctx.input.width}.{ctx.input.format}"}
