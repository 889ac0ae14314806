"""Rate-limit windows: one small counter document per user, action and window.

The policy (how many per window, what to answer) is the API's
(`jobs_lib.api.create_limit`); this part only counts, with one write whose
response carries the new count (no read, no transaction), so every function
instance shares the count.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1 import _helpers

from jobs_lib.store.base import StorePart


class RateWindows(StorePart):
    """``{collection}_rateLimits``: ids are a hash of the user, the action and the window number."""

    @property
    def collection(self) -> Any:
        """The rate-limit windows collection (``backgroundJobs_rateLimits``)."""
        return self.db.collection(f"{self.settings.collection}_rateLimits")

    def increment(self, action: str, user: str, index: int, window: float, count: int = 1) -> int:
        """Count `count` actions by `user` in window number `index` (of `window` seconds); the new
        count.

        Documents carry ``expireAt`` (an hour after the window) for a TTL policy.
        """
        digest = hashlib.sha256(user.encode()).hexdigest()[:32]
        ref = self.collection.document(f"{action}-{digest}-{index}")
        fields = {
            "count": firestore.Increment(count),
            "user": user,
            "action": action,
            "windowStart": datetime.fromtimestamp(index * window, UTC),
            "expireAt": datetime.fromtimestamp((index + 1) * window, UTC) + timedelta(hours=1),
        }
        sent = time.time()
        result = self.connection.write(
            lambda: ref.set(fields, merge=True, retry=None), "write:rate_limit"
        )
        self.clock.observe(result.update_time, sent, time.time())
        return int(_helpers.decode_value(result.transform_results[0], self.db))  # type: ignore[arg-type]


__all__ = ["RateWindows"]
