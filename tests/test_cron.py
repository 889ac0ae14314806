"""The firing rule, as a pure function: DST, missed slots, and a property test against the cron
itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs_lib.model import cron

NY = "America/New_York"


def local(text: str, tz: str = NY) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz))


def test_spring_forward_runs_a_0230_schedule_at_0300() -> None:
    # 2026-03-08: clocks jump from 02:00 to 03:00 in New York; 02:30 does not exist.
    slots = []
    moment = local("2026-03-06T12:00")
    for _ in range(4):
        moment = cron.next_after("30 2 * * *", NY, moment)
        slots.append(moment.astimezone(ZoneInfo(NY)).isoformat())
    assert slots == [
        "2026-03-07T02:30:00-05:00",
        "2026-03-08T03:00:00-04:00",
        "2026-03-09T02:30:00-04:00",
        "2026-03-10T02:30:00-04:00",
    ]


def test_fall_back_runs_a_0130_schedule_once() -> None:
    # 2026-11-01: 01:00-02:00 happens twice in New York; the daily 01:30 runs once.
    slots = []
    moment = local("2026-10-30T12:00")
    for _ in range(3):
        moment = cron.next_after("30 1 * * *", NY, moment)
        slots.append(moment.astimezone(ZoneInfo(NY)).isoformat())
    assert slots == [
        "2026-10-31T01:30:00-04:00",
        "2026-11-01T01:30:00-04:00",
        "2026-11-02T01:30:00-05:00",
    ]
    # A tick during the repeated hour does not fire it again.
    first = cron.next_after("30 1 * * *", NY, local("2026-10-31T12:00"))
    repeated_hour = datetime(2026, 11, 1, 6, 45, tzinfo=UTC)  # 01:45 EST, the second 01:45
    slot, upcoming = cron.fire(
        "30 1 * * *", NY, cron.next_after("30 1 * * *", NY, first), repeated_hour
    )
    assert (
        slot is None
        and upcoming.astimezone(ZoneInfo(NY)).isoformat() == "2026-11-02T01:30:00-05:00"
    )


def test_a_schedule_overdue_by_ten_slots_fires_once_and_moves_to_the_next_future_slot() -> None:
    start = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    now = start + timedelta(hours=10, minutes=20)
    slot, upcoming = cron.fire("0 * * * *", "UTC", start, now)
    assert slot == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    assert upcoming == datetime(2026, 1, 1, 11, 0, tzinfo=UTC)
    again, same = cron.fire("0 * * * *", "UTC", upcoming, now + timedelta(minutes=5))
    assert again is None and same == upcoming


def test_not_yet_due_and_never_set() -> None:
    now = datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    assert cron.fire("0 * * * *", "UTC", now + timedelta(minutes=30), now) == (
        None,
        now + timedelta(minutes=30),
    )
    assert cron.fire("0 * * * *", "UTC", None, now) == (
        None,
        datetime(2026, 1, 1, 1, 0, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("expression", "timezone", "message"),
    [
        ("61 * * * *", "UTC", "bad cron expression"),
        ("* * *", "UTC", "bad cron expression"),
        ("0 * * * *", "Mars/Olympus", "unknown timezone"),
        ("", "UTC", "non-empty"),
    ],
)
def test_bad_expressions_and_zones_are_refused(
    expression: str, timezone: str, message: str
) -> None:
    with pytest.raises(cron.CronError, match=message):
        cron.check(expression, timezone)


# -- property: fired slots are exactly the cron's slots, each once ------------------------------

MINUTES = st.sampled_from(["*", "0", "*/5", "*/15", "7,37", "0-10/5", "59"])
HOURS = st.sampled_from(["*", "*/2", "3", "0-5", "9-17", "23", "1,13"])
DOMS = st.sampled_from(["*", "1", "15", "1-7", "*/3"])
MONTHS = st.sampled_from(["*", "*/2", "1-6", "3,11"])
DOWS = st.sampled_from(["*", "MON-FRI", "0", "6", "1,3,5"])
ZONES = st.sampled_from(["UTC", NY, "Europe/Paris", "Asia/Kolkata", "Australia/Lord_Howe"])


def slots_between(expression: str, timezone: str, start: datetime, end: datetime) -> list[datetime]:
    out, moment = [], start.astimezone(ZoneInfo(timezone))
    for value in CronSim(expression, moment):
        if value.astimezone(UTC) > end:
            break
        out.append(value.astimezone(UTC))
    return out


@settings(max_examples=150, deadline=None)
@given(
    fields=st.tuples(MINUTES, HOURS, DOMS, MONTHS, DOWS),
    timezone=ZONES,
    start=st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 1)).map(
        lambda d: d.replace(tzinfo=UTC)
    ),
    gaps=st.lists(st.integers(min_value=1, max_value=6 * 3600), min_size=1, max_size=60),
)
def test_fired_slots_are_the_crons_slots_each_once(
    fields: tuple[str, ...], timezone: str, start: datetime, gaps: list[int]
) -> None:
    expression = " ".join(fields)
    _, next_run = cron.fire(expression, timezone, None, start)  # a new schedule, created at `start`
    fired: list[datetime] = []
    now = start
    ticks = []
    for gap in gaps:
        now += timedelta(seconds=gap)
        ticks.append(now)
        slot, next_run = cron.fire(expression, timezone, next_run, now)
        if slot is not None:
            fired.append(slot)
    cron_slots = slots_between(expression, timezone, start, now)
    assert len(fired) == len(set(fired)) and fired == sorted(fired)  # each once, in order
    assert set(fired) <= set(cron_slots)  # only real slots
    # Exactly the latest slot due at each tick, when one became due since the previous tick.
    expected, previous = [], start
    for tick in ticks:
        due = [s for s in cron_slots if previous < s <= tick]
        if due:
            expected.append(due[-1])
        previous = tick
    assert fired == expected


@settings(max_examples=40, deadline=None)
@given(
    fields=st.tuples(MINUTES, HOURS, DOMS, MONTHS, DOWS),
    timezone=ZONES,
    start=st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 1)).map(
        lambda d: d.replace(tzinfo=UTC)
    ),
)
def test_ticking_every_minute_fires_every_slot(
    fields: tuple[str, ...], timezone: str, start: datetime
) -> None:
    expression = " ".join(fields)
    _, next_run = cron.fire(expression, timezone, None, start)
    end = start + timedelta(days=1)
    fired, now = [], start
    while now < end:
        now += timedelta(minutes=1)
        slot, next_run = cron.fire(expression, timezone, next_run, now)
        if slot is not None:
            fired.append(slot)
    assert fired == slots_between(expression, timezone, start, now)
