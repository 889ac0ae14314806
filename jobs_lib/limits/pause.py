"""Paused types (`jobs pause TYPE`): no new job of the type starts until it is resumed.

The paused set lives in the control document (`jobs_lib.store.limits`); the engine reads it (or
listens to it while breakers are in use) and this policy holds the type's jobs back meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from jobs_lib.limits.policy import Hold, Policy
from jobs_lib.model.job import Job
from jobs_lib.registry import HandlerSpec


class Pause(Policy):
    """Holds back the jobs of paused types."""

    name = "pause"

    def __init__(self, paused: Callable[[], set[str]]) -> None:
        self.paused = paused  # the paused types, as the engine last read them

    def gate(self, job: Job, spec: HandlerSpec, now: datetime) -> Hold | None:
        return Hold.skip("its type is paused") if spec.type in self.paused() else None

    def excluded_types(self, now: datetime) -> set[str]:
        return set(self.paused())
