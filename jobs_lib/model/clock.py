"""Time: reading the timestamps apps write, and a clock that follows the server's.

Apps write Firestore timestamps and ISO-8601 strings (the original app stores
``"2025-04-27T05:39:36.941Z"``); `parse_time` reads both. Leases and due times
are compared against `ServerClock.now()`, the local clock corrected by the
offset to Firestore's own clock as observed in write results and read times,
so a worker whose clock is off by a minute neither steals live leases nor
runs delayed jobs early.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from jobs_lib.errors import TimeParseError

#: The ISO-8601 strings `parse_time` reads: a date, optionally a time (to the minute, second or a
#: fraction) after ``T`` or a space, optionally ``Z`` or an offset.
_ISO = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[Tt "
    r"]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?)?(?:[Zz]|[+-]\d{2}(?::?\d{2})?)?"
)

#: Widest UTC offset in use (UTC+14). A string bound widened by it catches
#: every ISO string that may be due, whatever its offset.
MAX_UTC_OFFSET = timedelta(hours=14)


def parse_time(value: Any, field: str = "timestamp") -> datetime | None:
    """Read a Firestore timestamp or an ISO-8601 string as an aware UTC datetime.

    ``None`` stays ``None``. Anything else that is not a time raises
    `TimeParseError` with a message naming the field.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        text = value
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            if not _ISO.fullmatch(value):
                # Strict: no spaces around it, no week dates or other forms fromisoformat also
                # reads. A string that only looks like a time (" 2099-01-01T00:00:00Z") must not
                # sort among real ones and still parse (docs: discussions/security.md).
                raise ValueError(value)
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise TimeParseError(
                f"{field} {value!r} is not a timestamp: write a Firestore timestamp or an "
                "ISO-8601 string such as '2025-04-27T05:39:36.941Z'"
            ) from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise TimeParseError(
        f"{field} has type {type(value).__name__} ({value!r}): write a Firestore timestamp "
        "or an ISO-8601 string"
    )


def to_iso(moment: datetime) -> str:
    """Format as the ISO-8601 UTC string apps write: millisecond precision, ``Z``."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


class ServerClock:
    """The local clock plus the measured offset to Firestore's clock.

    Each call to `observe` gives a server time seen in a response and the
    local times the request was sent and answered; the sample with the
    smallest round trip among recent ones sets the offset.
    """

    #: Samples older than this are replaced even by a slower one, so drift is followed.
    SAMPLE_TTL = 300.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offset = 0.0
        self._best_rtt = float("inf")
        self._best_at = 0.0
        self.calibrated = False

    def observe(self, server_time: datetime, sent: float, received: float) -> None:
        """Record a server time seen in a response to a request sent and answered at these local
        times."""
        rtt = max(received - sent, 0.0)
        midpoint = (sent + received) / 2
        offset = server_time.timestamp() - midpoint
        with self._lock:
            stale = received - self._best_at > self.SAMPLE_TTL
            if rtt <= self._best_rtt or stale:
                self._offset, self._best_rtt, self._best_at = offset, rtt, received
                self.calibrated = True

    @property
    def offset(self) -> float:
        """Seconds to add to the local clock to read the server's."""
        return self._offset

    def now(self) -> datetime:
        """The server's current time, as best known."""
        return datetime.fromtimestamp(time.time() + self._offset, tz=UTC)


__all__ = ["MAX_UTC_OFFSET", "ServerClock", "TimeParseError", "parse_time", "to_iso"]
