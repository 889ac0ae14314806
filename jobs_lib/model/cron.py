"""Cron arithmetic, with cronsim (Debian cron's rules, including daylight saving time).

On the spring-forward day a 02:30 daily schedule runs at 03:00 (the first
valid time after the gap); on the fall-back day a 01:30 schedule runs once, at
the first 01:30. Schedules that run several times an hour run on both sides
of the fall-back repetition. These are cronsim's rules (tests/test_schedules
pins them).

`fire` is the whole firing rule as a pure function, so it can be checked
against the cron's own enumeration for arbitrary expressions and tick times.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from jobs_lib.errors import CronError


def zone(name: str) -> ZoneInfo:
    """The IANA timezone `name`; raises `CronError` for an unknown one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise CronError(
            f"unknown timezone {name!r}: use an IANA name such as 'UTC' or 'Europe/Paris'"
        ) from None


def check(expression: str, timezone: str) -> None:
    """Raise `CronError` with a reason if the expression or the timezone is unusable."""
    if not isinstance(expression, str) or not expression.strip():
        raise CronError(f"cron must be a non-empty string such as '0 * * * *', got {expression!r}")
    tz = zone(timezone)
    try:
        CronSim(expression, datetime.now(tz))
    except CronSimError as exc:
        raise CronError(f"bad cron expression {expression!r}: {exc}") from None


def next_after(expression: str, timezone: str, moment: datetime) -> datetime:
    """The first slot strictly after `moment`, in UTC."""
    tz = zone(timezone)
    return next(CronSim(expression, moment.astimezone(tz))).astimezone(UTC)


def latest_at_or_before(expression: str, timezone: str, moment: datetime) -> datetime:
    """The last slot at or before `moment`, in UTC (cron has minute resolution)."""
    tz = zone(timezone)
    ceiling = moment.astimezone(tz).replace(second=0, microsecond=0) + timedelta(minutes=1)
    return next(CronSim(expression, ceiling, reverse=True)).astimezone(UTC)


def fire(
    expression: str, timezone: str, next_run_at: datetime | None, now: datetime
) -> tuple[datetime | None, datetime]:
    """What a tick at `now` does for a schedule: (the slot to fire or None, the new nextRunAt).

    Only the latest due slot fires, so a schedule that missed ten slots while
    nothing ran fires once; nextRunAt moves to the first slot after `now`. A
    schedule with no nextRunAt yet starts counting from `now` without firing.
    """
    upcoming = next_after(expression, timezone, now)
    if next_run_at is None or next_run_at > now:
        return None, upcoming if next_run_at is None else next_run_at
    slot = latest_at_or_before(expression, timezone, now)
    if slot < next_run_at:  # the expression changed since nextRunAt was set: nothing owed
        return None, upcoming
    return slot, upcoming


__all__ = ["CronError", "check", "fire", "latest_at_or_before", "next_after", "zone"]
