"""The API's per-user limit on creating jobs and schedules, counted in Firestore windows.

At most `limit` actions per user per `window` seconds, counted in fixed
windows by `jobs_lib.store.create_limit.RateWindows` so every function instance
shares the count. Once a user is over the limit, this instance remembers it
until the window ends and refuses without writing, so a client that hammers
the API does not hammer one document too.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from jobs_lib.store import JobStore


@dataclass(frozen=True)
class RateDecision:
    """Whether a request may go ahead; if not, how many seconds until it may."""

    allowed: bool
    count: int
    limit: int
    retry_after: int


class RateLimiter:
    """At most `limit` actions per user per `window` seconds."""

    def __init__(
        self, store: JobStore, *, limit: int, window: float, action: str = "create"
    ) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a rate limit needs limit >= 1 and a positive window")
        self.store = store
        self.limit = limit
        self.window = window
        self.action = action
        self._blocked: dict[str, float] = {}
        self._lock = threading.Lock()

    def hit(self, user: str, count: int = 1) -> RateDecision:
        """Count `count` actions by `user` (a batch of creates counts each) and say whether they are
        within the limit."""
        now = self.store.now().timestamp()
        index = math.floor(now / self.window)
        window_end = (index + 1) * self.window
        retry_after = max(1, math.ceil(window_end - now))
        with self._lock:
            blocked_until = self._blocked.get(user)
            if blocked_until is not None and blocked_until > now:
                return RateDecision(False, self.limit + 1, self.limit, retry_after)
            self._blocked.pop(user, None)
        count = self.store.rate_windows.increment(self.action, user, index, self.window, count)
        if count > self.limit:
            with self._lock:
                self._blocked[user] = window_end
            return RateDecision(False, count, self.limit, retry_after)
        return RateDecision(True, count, self.limit, 0)


__all__ = ["RateDecision", "RateLimiter"]
