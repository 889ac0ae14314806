"""Backoff between attempts: fixed, or exponential with jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from jobs_lib.errors import ConfigurationError


@dataclass(frozen=True)
class Backoff:
    """How long a failed job waits before its next attempt.

    ``fixed``: always `delay` seconds. ``exponential``: ``delay * factor**(attempt-1)``
    capped at `max_delay`, then, with `jitter`, a random share of up to half of it
    is taken off so that jobs failing together do not retry together.
    """

    kind: Literal["fixed", "exponential"] = "exponential"
    delay: float = 5.0
    factor: float = 2.0
    max_delay: float = 3600.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.kind not in ("fixed", "exponential"):
            raise ConfigurationError(
                f"backoff kind must be 'fixed' or 'exponential', got {self.kind!r}"
            )
        if self.delay < 0 or self.max_delay < 0 or self.factor < 1:
            raise ConfigurationError("backoff needs delay >= 0, max_delay >= 0 and factor >= 1")

    @classmethod
    def fixed(cls, delay: float) -> Backoff:
        """Wait the same `delay` seconds before every retry."""
        return cls(kind="fixed", delay=delay, jitter=False)

    @classmethod
    def exponential(
        cls, delay: float = 5.0, factor: float = 2.0, max_delay: float = 3600.0, jitter: bool = True
    ) -> Backoff:
        """Double (or `factor`) the wait after each failure, up to `max_delay`."""
        return cls(
            kind="exponential", delay=delay, factor=factor, max_delay=max_delay, jitter=jitter
        )

    def seconds(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait after failed attempt number `attempt` (1-based), with random jitter."""
        return self.wait(attempt, (rng or random).random())

    def wait(self, attempt: int, jitter: float) -> float:
        """The wait after failed attempt `attempt`, given a `jitter` draw in [0, 1): a pure
        function."""
        if self.kind == "fixed":
            return self.delay
        # Past ~1,000 doublings the float overflows; the cap has long been reached by then.
        exponent = min(max(attempt - 1, 0), 1000)
        try:
            base = min(self.delay * self.factor**exponent, self.max_delay)
        except OverflowError:
            base = self.max_delay
        if not self.jitter:
            return base
        return base * (1 - min(max(jitter, 0.0), 1.0) / 2)


__all__ = ["Backoff"]
