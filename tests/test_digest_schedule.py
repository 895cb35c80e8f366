"""Digest scheduling core: local wall-clock delivery across zones, DST and weekends."""

from __future__ import annotations

import datetime as dt
import itertools
import pickle
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from notify.digest.schedule import (
    Schedule,
    ScheduleError,
    delivery_instant,
    due_day,
    is_delivery_day,
    local_date,
    next_delivery,
    period_start,
    upcoming,
)

HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
WEEK = dt.timedelta(days=7)


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> dt.datetime:
    return dt.datetime(y, mo, d, h, mi, s, tzinfo=dt.UTC)


def sched(zone: str, hhmm: str, **kw: Any) -> Schedule:
    h, m = hhmm.split(":")
    return Schedule(dt.time(int(h), int(m)), ZoneInfo(zone), **kw)


# Expected instants are worked out by hand from the offsets in the comments.
@pytest.mark.parametrize(
    ("zone", "hhmm", "day", "expected"),
    [
        # America/New_York: EST -5, EDT -4; 2026-03-08 02:00->03:00, 2026-11-01 02:00->01:00.
        ("America/New_York", "07:00", dt.date(2026, 1, 15), utc(2026, 1, 15, 12)),
        ("America/New_York", "07:00", dt.date(2026, 7, 15), utc(2026, 7, 15, 11)),
        ("America/New_York", "01:59", dt.date(2026, 3, 8), utc(2026, 3, 8, 6, 59)),
        ("America/New_York", "02:00", dt.date(2026, 3, 8), utc(2026, 3, 8, 7)),
        ("America/New_York", "02:30", dt.date(2026, 3, 8), utc(2026, 3, 8, 7)),
        ("America/New_York", "02:59", dt.date(2026, 3, 8), utc(2026, 3, 8, 7)),
        ("America/New_York", "03:00", dt.date(2026, 3, 8), utc(2026, 3, 8, 7)),
        ("America/New_York", "07:00", dt.date(2026, 3, 8), utc(2026, 3, 8, 11)),
        ("America/New_York", "00:59", dt.date(2026, 11, 1), utc(2026, 11, 1, 4, 59)),
        ("America/New_York", "01:00", dt.date(2026, 11, 1), utc(2026, 11, 1, 5)),
        ("America/New_York", "01:30", dt.date(2026, 11, 1), utc(2026, 11, 1, 5, 30)),
        ("America/New_York", "02:00", dt.date(2026, 11, 1), utc(2026, 11, 1, 7)),
        # Europe/London: GMT +0, BST +1; 2026-03-29 01:00->02:00, 2026-10-25 02:00->01:00.
        ("Europe/London", "00:59", dt.date(2026, 3, 29), utc(2026, 3, 29, 0, 59)),
        ("Europe/London", "01:30", dt.date(2026, 3, 29), utc(2026, 3, 29, 1)),
        ("Europe/London", "02:00", dt.date(2026, 3, 29), utc(2026, 3, 29, 1)),
        ("Europe/London", "01:30", dt.date(2026, 10, 25), utc(2026, 10, 25, 0, 30)),
        ("Europe/London", "02:00", dt.date(2026, 10, 25), utc(2026, 10, 25, 2)),
        # Australia/Sydney: AEST +10, AEDT +11; 2026-04-05 03:00->02:00, 2026-10-04 02:00->03:00.
        ("Australia/Sydney", "07:00", dt.date(2026, 4, 4), utc(2026, 4, 3, 20)),
        ("Australia/Sydney", "02:30", dt.date(2026, 4, 5), utc(2026, 4, 4, 15, 30)),
        ("Australia/Sydney", "07:00", dt.date(2026, 4, 5), utc(2026, 4, 4, 21)),
        ("Australia/Sydney", "02:00", dt.date(2026, 10, 4), utc(2026, 10, 3, 16)),
        ("Australia/Sydney", "02:30", dt.date(2026, 10, 4), utc(2026, 10, 3, 16)),
        ("Australia/Sydney", "07:00", dt.date(2026, 10, 4), utc(2026, 10, 3, 20)),
        # Australia/Lord_Howe: +10:30 / +11, a 30-minute shift;
        # 2026-04-05 02:00->01:30, 2026-10-04 02:00->02:30.
        ("Australia/Lord_Howe", "07:00", dt.date(2026, 1, 15), utc(2026, 1, 14, 20)),
        ("Australia/Lord_Howe", "07:00", dt.date(2026, 7, 15), utc(2026, 7, 14, 20, 30)),
        ("Australia/Lord_Howe", "01:29", dt.date(2026, 4, 5), utc(2026, 4, 4, 14, 29)),
        ("Australia/Lord_Howe", "01:45", dt.date(2026, 4, 5), utc(2026, 4, 4, 14, 45)),
        ("Australia/Lord_Howe", "01:59", dt.date(2026, 10, 4), utc(2026, 10, 3, 15, 29)),
        ("Australia/Lord_Howe", "02:00", dt.date(2026, 10, 4), utc(2026, 10, 3, 15, 30)),
        ("Australia/Lord_Howe", "02:15", dt.date(2026, 10, 4), utc(2026, 10, 3, 15, 30)),
        ("Australia/Lord_Howe", "02:30", dt.date(2026, 10, 4), utc(2026, 10, 3, 15, 30)),
        # :30 and :45 offsets, and a local date that starts on the previous UTC day.
        ("Asia/Kolkata", "07:00", dt.date(2026, 1, 15), utc(2026, 1, 15, 1, 30)),
        ("Asia/Kathmandu", "07:00", dt.date(2026, 1, 15), utc(2026, 1, 15, 1, 15)),
        ("Asia/Kathmandu", "00:10", dt.date(2026, 1, 10), utc(2026, 1, 9, 18, 25)),
        ("Pacific/Chatham", "07:00", dt.date(2026, 1, 15), utc(2026, 1, 14, 17, 15)),
        # America/Santiago springs forward at local midnight: 2026-09-06 00:00 (-4) -> 01:00 (-3).
        ("America/Santiago", "00:00", dt.date(2026, 9, 6), utc(2026, 9, 6, 4)),
        ("America/Santiago", "00:30", dt.date(2026, 9, 6), utc(2026, 9, 6, 4)),
        ("UTC", "07:00", dt.date(2026, 1, 15), utc(2026, 1, 15, 7)),
    ],
)
def test_delivery_instant(zone: str, hhmm: str, day: dt.date, expected: dt.datetime) -> None:
    got = delivery_instant(sched(zone, hhmm), day)
    assert got == expected
    assert got.tzinfo is dt.UTC


@pytest.mark.parametrize(
    ("zone", "day", "gap"),
    [
        ("America/New_York", dt.date(2026, 3, 8), (dt.time(2), dt.time(3))),
        ("America/New_York", dt.date(2026, 11, 1), None),
        ("Europe/London", dt.date(2026, 3, 29), (dt.time(1), dt.time(2))),
        ("Europe/London", dt.date(2026, 10, 25), None),
        ("Australia/Sydney", dt.date(2026, 10, 4), (dt.time(2), dt.time(3))),
        ("Australia/Sydney", dt.date(2026, 4, 5), None),
        ("Australia/Lord_Howe", dt.date(2026, 10, 4), (dt.time(2), dt.time(2, 30))),
        ("Australia/Lord_Howe", dt.date(2026, 4, 5), None),
    ],
)
def test_every_minute_of_a_transition_day(
    zone: str, day: dt.date, gap: tuple[dt.time, dt.time] | None
) -> None:
    """Each minute lands on itself, or (inside the gap) on the gap's end; never out of order."""
    tz = ZoneInfo(zone)
    previous: dt.datetime | None = None
    for minute in range(24 * 60):
        wanted = dt.time(minute // 60, minute % 60)
        got = delivery_instant(Schedule(wanted, tz), day)
        local = got.astimezone(tz)
        assert local.date() == day
        if gap is not None and gap[0] <= wanted < gap[1]:
            assert local.time() == gap[1], wanted
        else:
            assert local.time() == wanted
            # The first occurrence: no earlier instant shows the same wall time.
            assert (got - HOUR).astimezone(tz).replace(tzinfo=None) != local.replace(tzinfo=None)
        if previous is not None:
            assert got >= previous
        previous = got


def test_fall_back_delivered_once() -> None:
    s = sched("America/New_York", "01:30")
    assert upcoming(s, utc(2026, 10, 31), 3) == [
        utc(2026, 10, 31, 5, 30),  # 01:30 EDT
        utc(2026, 11, 1, 5, 30),  # first 01:30 (EDT); the 01:30 EST an hour later is not listed
        utc(2026, 11, 2, 6, 30),  # 01:30 EST
    ]
    london = sched("Europe/London", "01:30")
    assert upcoming(london, utc(2026, 10, 24, 12), 2) == [
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 26, 1, 30),
    ]


def test_due_day_during_fall_back_and_spring_forward() -> None:
    back = sched("America/New_York", "01:30")
    assert due_day(back, utc(2026, 11, 1, 5, 29)) is None
    assert due_day(back, utc(2026, 11, 1, 5, 30)) == dt.date(2026, 11, 1)
    forward = sched("America/New_York", "02:30")
    assert due_day(forward, utc(2026, 3, 8, 6, 59)) is None  # 01:59 EST
    assert due_day(forward, utc(2026, 3, 8, 7)) == dt.date(2026, 3, 8)  # 03:00 EDT


def test_local_date_crosses_utc_day() -> None:
    s = sched("Asia/Kathmandu", "00:10")
    assert local_date(s, utc(2026, 1, 9, 18, 25)) == dt.date(2026, 1, 10)
    assert local_date(s, utc(2026, 1, 9, 18, 14)) == dt.date(2026, 1, 9)  # 23:59 +05:45
    # Just before midnight local: the delivery belongs to the next local (and same UTC) day.
    assert upcoming(s, utc(2026, 1, 9, 18), 1) == [utc(2026, 1, 9, 18, 25)]
    assert due_day(s, utc(2026, 1, 9, 18, 25)) == dt.date(2026, 1, 10)


# --- weekends and weekdays by LOCAL date ---


def test_weekend_is_local_auckland() -> None:
    # 2026-01-09 is a Friday. 20:00Z Friday = 09:00 NZDT (+13) Saturday 2026-01-10.
    s = sched("Pacific/Auckland", "07:00", exclude_weekends=True)
    now = utc(2026, 1, 9, 20)
    assert now.date().weekday() == 4
    assert local_date(s, now) == dt.date(2026, 1, 10)
    assert is_delivery_day(s, dt.date(2026, 1, 9))
    assert not is_delivery_day(s, dt.date(2026, 1, 10))
    assert due_day(s, now) is None


def test_weekend_is_local_tokyo() -> None:
    s = sched("Asia/Tokyo", "07:00", exclude_weekends=True)
    # Friday 23:00Z = Saturday 08:00 JST: past the local time, but Saturday.
    assert due_day(s, utc(2026, 1, 9, 23)) is None
    # Sunday 23:00Z = Monday 08:00 JST: due for Monday.
    assert due_day(s, utc(2026, 1, 11, 23)) == dt.date(2026, 1, 12)
    # Thursday 2026-01-08 09:00 JST: next are Fri, then (skipping Sat/Sun) Mon, Tue at 07:00 JST.
    assert upcoming(s, utc(2026, 1, 8), 3) == [
        utc(2026, 1, 8, 22),
        utc(2026, 1, 11, 22),
        utc(2026, 1, 12, 22),
    ]


def test_friday_local_is_saturday_utc() -> None:
    # Los Angeles Friday 19:00 PST = Saturday 03:00Z: still Friday's digest.
    s = sched("America/Los_Angeles", "19:00", exclude_weekends=True)
    assert due_day(s, utc(2026, 1, 10, 3)) == dt.date(2026, 1, 9)
    assert due_day(s, utc(2026, 1, 11, 3)) is None  # Saturday 19:00 PST


def test_weekends_included_by_default() -> None:
    s = sched("Asia/Tokyo", "07:00")
    assert all(is_delivery_day(s, dt.date(2026, 1, 5) + DAY * i) for i in range(7))


def test_weekly_mondays_new_york_across_spring_forward() -> None:
    s = sched("America/New_York", "07:00", frequency="weekly", weekday=0)
    got = upcoming(s, utc(2026, 2, 20), 4)
    assert got == [
        utc(2026, 2, 23, 12),
        utc(2026, 3, 2, 12),
        utc(2026, 3, 9, 11),  # EDT from 2026-03-08
        utc(2026, 3, 16, 11),
    ]
    assert [b - a for a, b in itertools.pairwise(got)] == [WEEK, WEEK - HOUR, WEEK]


def test_weekly_mondays_new_york_across_fall_back() -> None:
    s = sched("America/New_York", "07:00", frequency="weekly", weekday=0)
    got = upcoming(s, utc(2026, 10, 20), 3)
    assert got == [utc(2026, 10, 26, 11), utc(2026, 11, 2, 12), utc(2026, 11, 9, 12)]
    assert [b - a for a, b in itertools.pairwise(got)] == [WEEK + HOUR, WEEK]


def test_weekly_a_year_of_local_mondays() -> None:
    tz = ZoneInfo("America/New_York")
    s = Schedule(dt.time(7), tz, frequency="weekly", weekday=0)
    got = upcoming(s, utc(2026, 1, 1), 52)
    assert len(got) == 52
    assert (got[0], got[-1]) == (utc(2026, 1, 5, 12), utc(2026, 12, 28, 12))
    for instant in got:
        local = instant.astimezone(tz)
        assert (local.weekday(), local.time()) == (0, dt.time(7))
    gaps = {b - a for a, b in itertools.pairwise(got)}
    assert gaps == {WEEK - HOUR, WEEK, WEEK + HOUR}


def test_weekly_weekday_is_local() -> None:
    # Monday 07:00 NZDT (+13) is Sunday 18:00Z.
    s = sched("Pacific/Auckland", "07:00", frequency="weekly", weekday=0)
    assert next_delivery(s, utc(2026, 1, 7)) == utc(2026, 1, 11, 18)
    assert due_day(s, utc(2026, 1, 11, 18)) == dt.date(2026, 1, 12)
    assert due_day(s, utc(2026, 1, 12, 18)) is None  # Tuesday locally


def test_weekly_ignores_exclude_weekends() -> None:
    s = sched("UTC", "09:00", frequency="weekly", weekday=5, exclude_weekends=True)
    assert is_delivery_day(s, dt.date(2026, 1, 10))  # a Saturday
    assert not is_delivery_day(s, dt.date(2026, 1, 9))


# --- due_day ---


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (utc(2026, 1, 15, 11, 59), None),  # 06:59 EST, before the time
        (utc(2026, 1, 15, 11, 59, 59), None),
        (utc(2026, 1, 15, 12), dt.date(2026, 1, 15)),  # exactly the instant
        (utc(2026, 1, 15, 12, 0, 1), dt.date(2026, 1, 15)),
        (utc(2026, 1, 15, 23), dt.date(2026, 1, 15)),  # scheduler catching up later
        (utc(2026, 1, 16, 4, 59), dt.date(2026, 1, 15)),  # 23:59 EST, still the same local day
        (utc(2026, 1, 16, 5), None),  # local midnight: yesterday is gone, today not yet
        (utc(2026, 1, 16, 11, 59), None),
        (utc(2026, 1, 16, 12), dt.date(2026, 1, 16)),
    ],
)
def test_due_day(now: dt.datetime, expected: dt.date | None) -> None:
    assert due_day(sched("America/New_York", "07:00"), now) == expected


def test_due_day_accepts_any_aware_now() -> None:
    s = sched("America/New_York", "07:00")
    cet = dt.timezone(dt.timedelta(hours=1))
    assert due_day(s, dt.datetime(2026, 1, 15, 13, tzinfo=cet)) == dt.date(2026, 1, 15)
    assert due_day(s, dt.datetime(2026, 1, 15, 12, 59, tzinfo=cet)) is None


# --- upcoming ---


def test_upcoming_is_strictly_after() -> None:
    s = sched("America/New_York", "07:00")
    assert upcoming(s, utc(2026, 1, 15, 12), 1) == [utc(2026, 1, 16, 12)]
    assert upcoming(s, utc(2026, 1, 15, 11, 59, 59), 1) == [utc(2026, 1, 15, 12)]
    assert next_delivery(s, utc(2026, 1, 15, 12)) == utc(2026, 1, 16, 12)


@pytest.mark.parametrize("count", [0, 1, 2, 5])
def test_upcoming_respects_count(count: int) -> None:
    got = upcoming(sched("Europe/London", "08:15"), utc(2026, 5, 1), count)
    assert got == [utc(2026, 5, 1, 7, 15) + DAY * i for i in range(count)]


def test_upcoming_thirty_daily_across_spring_forward() -> None:
    s = sched("America/New_York", "07:00")
    got = upcoming(s, utc(2026, 2, 20), 30)
    # 07:00 EST = 12:00Z until 2026-03-07, 07:00 EDT = 11:00Z from 2026-03-08.
    expected = []
    for i in range(30):
        day = dt.date(2026, 2, 20) + DAY * i
        hour = 11 if day >= dt.date(2026, 3, 8) else 12
        expected.append(utc(day.year, day.month, day.day, hour))
    assert got == expected
    assert got == sorted(got)
    assert all(t.tzinfo is dt.UTC for t in got)


def test_upcoming_from_non_utc_after() -> None:
    s = sched("Asia/Kolkata", "07:00")
    after = dt.datetime(2026, 1, 15, 7, 0, tzinfo=ZoneInfo("Asia/Kolkata"))
    assert upcoming(s, after, 2) == [utc(2026, 1, 16, 1, 30), utc(2026, 1, 17, 1, 30)]


def test_upcoming_skips_a_local_date_that_never_existed() -> None:
    # Pacific/Apia jumped from 2011-12-29 23:59 (-10) to 2011-12-31 00:00 (+14).
    s = sched("Pacific/Apia", "07:00")
    assert upcoming(s, utc(2011, 12, 29), 3) == [
        utc(2011, 12, 29, 17),  # 12-29 07:00 -10
        utc(2011, 12, 30, 17),  # 12-31 07:00 +14
        utc(2011, 12, 31, 17),  # 01-01 07:00 +14
    ]


def test_upcoming_negative_count() -> None:
    with pytest.raises(ValueError, match="count"):
        upcoming(sched("UTC", "07:00"), utc(2026, 1, 1), -1)


# --- period_start ---


def test_period_start_daily_first_time() -> None:
    s = sched("America/New_York", "07:00")
    assert period_start(s, dt.date(2026, 1, 15), None) == utc(2026, 1, 14, 12)
    # 24 hours, not "the previous local 07:00" (which would be 12:00Z on 03-07).
    assert period_start(s, dt.date(2026, 3, 8), None) == utc(2026, 3, 7, 11)


def test_period_start_weekly_first_time() -> None:
    s = sched("America/New_York", "07:00", frequency="weekly", weekday=3)
    assert period_start(s, dt.date(2026, 1, 15), None) == utc(2026, 1, 8, 12)


def test_period_start_uses_previous() -> None:
    s = sched("America/New_York", "07:00")
    previous = dt.datetime(2026, 1, 13, 7, 0, 5, tzinfo=ZoneInfo("America/New_York"))
    got = period_start(s, dt.date(2026, 1, 15), previous)
    assert got == utc(2026, 1, 13, 12, 0, 5)
    assert got.tzinfo is dt.UTC


# --- parse ---


def test_parse_valid() -> None:
    s = Schedule.parse("07:00", "America/New_York")
    assert s == Schedule(dt.time(7), ZoneInfo("America/New_York"))
    weekly = Schedule.parse("23:59", "Asia/Kathmandu", "weekly", 6)
    assert weekly.delivery_time == dt.time(23, 59)
    assert (weekly.frequency, weekly.weekday) == ("weekly", 6)
    assert Schedule.parse("00:00", "UTC", exclude_weekends=True).exclude_weekends is True
    assert Schedule.parse("12:30", "US/Eastern").zone.key == "US/Eastern"  # backward links are IANA


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"delivery_time": "7:00"}, "delivery_time"),
        ({"delivery_time": "24:00"}, "delivery_time"),
        ({"delivery_time": "07:60"}, "delivery_time"),
        ({"delivery_time": "ab:cd"}, "delivery_time"),
        ({"delivery_time": ""}, "delivery_time"),
        ({"delivery_time": "0700"}, "delivery_time"),
        ({"delivery_time": "07:00:00"}, "delivery_time"),
        ({"delivery_time": " 07:00"}, "delivery_time"),
        ({"delivery_time": "07:00\n"}, "delivery_time"),
        ({"delivery_time": "-1:00"}, "delivery_time"),
        ({"delivery_time": "\u0660\u0667:\u0660\u0660"}, "delivery_time"),  # Arabic-Indic digits
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": ""}, "timezone"),
        ({"timezone": "../etc"}, "timezone"),
        ({"timezone": "/etc/localtime"}, "timezone"),
        ({"timezone": "localtime"}, "timezone"),
        ({"timezone": "Factory"}, "timezone"),
        ({"timezone": "posix/America/New_York"}, "timezone"),
        ({"timezone": "america/new_york"}, "timezone"),
        ({"timezone": "America/New_York/"}, "timezone"),
        ({"timezone": "zone.tab"}, "timezone"),
        ({"frequency": "hourly"}, "frequency"),
        ({"frequency": "Daily"}, "frequency"),
        ({"frequency": "weekly"}, "weekday"),
        ({"frequency": "weekly", "weekday": 7}, "weekday"),
        ({"frequency": "weekly", "weekday": -1}, "weekday"),
        ({"frequency": "weekly", "weekday": True}, "weekday"),
        ({"weekday": 7}, "weekday"),
    ],
)
def test_parse_errors_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"delivery_time": "07:00", "timezone": "Europe/London", **kwargs}
    with pytest.raises(ScheduleError) as info:
        Schedule.parse(**args)
    assert info.value.field == field
    assert info.value.message
    assert str(info.value).startswith(f"{field}: ")
    assert isinstance(info.value, ValueError)


def test_schedule_error_pickles() -> None:
    err = pickle.loads(pickle.dumps(ScheduleError("timezone", "bad")))  # noqa: S301
    assert (err.field, err.message) == ("timezone", "bad")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"frequency": "weekly"},
        {"delivery_time": dt.time(7, 0, 30)},
        {"delivery_time": dt.time(7, tzinfo=dt.UTC)},
        {"weekday": 9},
    ],
)
def test_constructor_validates(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"delivery_time": dt.time(7), "zone": ZoneInfo("UTC"), **kwargs}
    with pytest.raises(ValueError):  # noqa: PT011 - ScheduleError; the field varies
        Schedule(**args)


# --- misuse ---


NAIVE = dt.datetime(2026, 1, 15, 12)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: local_date(s, NAIVE),
        lambda s: due_day(s, NAIVE),
        lambda s: upcoming(s, NAIVE, 1),
        lambda s: next_delivery(s, NAIVE),
        lambda s: period_start(s, dt.date(2026, 1, 15), NAIVE),
    ],
)
def test_naive_datetimes_rejected(call: Any) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        call(sched("UTC", "07:00"))


def test_datetime_is_not_a_local_date() -> None:
    s = sched("UTC", "07:00")
    with pytest.raises(TypeError):
        delivery_instant(s, utc(2026, 1, 15))
    with pytest.raises(TypeError):
        is_delivery_day(s, utc(2026, 1, 15))
