"""When a user's digest is delivered: pure local-time scheduling, no database."""

from __future__ import annotations

import datetime as dt
import functools
import re
import zoneinfo
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo

__all__ = [
    "Frequency",
    "Schedule",
    "ScheduleError",
    "delivery_instant",
    "due_day",
    "is_delivery_day",
    "local_date",
    "next_delivery",
    "period_start",
    "upcoming",
]

Frequency = Literal["daily", "weekly"]

_FREQUENCIES: dict[str, Frequency] = {"daily": "daily", "weekly": "weekly"}
# ASCII digits only: `\d` would also accept e.g. Arabic-Indic digits, which int() then parses.
_HHMM = re.compile(r"([0-9]{2}):([0-9]{2})")
# Present in the tz database directory and loadable, but not a zone a user can live in:
# `localtime` is the host's own zone (a symlink to /etc/localtime), `Factory` means "unset".
_NOT_USER_ZONES = frozenset({"localtime", "Factory", "posixrules"})
_SATURDAY = 5


class ScheduleError(ValueError):
    """A schedule setting is invalid; `field` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        # Both go into args so the exception survives pickling (cls(*args)).
        super().__init__(field, message)
        self.field = field
        self.message = message

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True, slots=True)
class Schedule:
    """A digest schedule: a local wall-clock time in an IANA zone, daily or on one weekday."""

    delivery_time: dt.time
    zone: ZoneInfo
    frequency: Frequency = "daily"
    weekday: int | None = None
    exclude_weekends: bool = False

    def __post_init__(self) -> None:
        # Direct construction (not only parse) must not yield a schedule the functions
        # below would silently misread, so the structural rules are enforced here too.
        t = self.delivery_time
        if not isinstance(t, dt.time) or t.tzinfo is not None:
            raise ScheduleError("delivery_time", "must be a naive local time")
        if t.second or t.microsecond:
            raise ScheduleError("delivery_time", "must have minute precision")
        if not isinstance(self.zone, ZoneInfo):
            raise ScheduleError("timezone", "must be a ZoneInfo")
        if self.frequency not in _FREQUENCIES:
            raise ScheduleError("frequency", "must be 'daily' or 'weekly'")
        _check_weekday(self.weekday, required=self.frequency == "weekly")
        if not isinstance(self.exclude_weekends, bool):
            raise ScheduleError("exclude_weekends", "must be a boolean")

    @classmethod
    def parse(
        cls,
        delivery_time: str,
        timezone: str,
        frequency: str = "daily",
        weekday: int | None = None,
        exclude_weekends: bool = False,
    ) -> Schedule:
        """Build a schedule from user input, raising ScheduleError naming the bad field."""
        freq = _FREQUENCIES.get(frequency) if isinstance(frequency, str) else None
        if freq is None:
            raise ScheduleError("frequency", "must be 'daily' or 'weekly'")
        return cls(
            delivery_time=_parse_time(delivery_time),
            zone=_parse_zone(timezone),
            frequency=freq,
            weekday=weekday,
            exclude_weekends=exclude_weekends,
        )


def _parse_time(value: str) -> dt.time:
    match = _HHMM.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ScheduleError("delivery_time", 'must be "HH:MM" (24-hour, two digits each)')
    hour, minute = int(match[1]), int(match[2])
    if hour > 23 or minute > 59:
        raise ScheduleError("delivery_time", "must be between 00:00 and 23:59")
    return dt.time(hour, minute)


@functools.cache
def _known_zones() -> frozenset[str]:
    # Walking the zoneinfo tree takes ~10 ms; the set of installed zones does not change
    # while the process runs in any way we could act on (ZoneInfo caches instances anyway).
    return frozenset(zoneinfo.available_timezones()) - _NOT_USER_ZONES


def _parse_zone(value: str) -> ZoneInfo:
    # Membership, not just "ZoneInfo() loads it": ZoneInfo accepts any TZif file under the
    # tz directory (localtime, posix/..., right/...) and on case-insensitive filesystems
    # mis-cased keys, none of which should be stored as a user's zone.
    if not isinstance(value, str) or value not in _known_zones():
        raise ScheduleError("timezone", "must be an IANA time zone name, e.g. Europe/London")
    try:
        return ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ScheduleError("timezone", "must be an IANA time zone name") from exc


def _check_weekday(weekday: int | None, *, required: bool) -> None:
    if weekday is None:
        if required:
            raise ScheduleError("weekday", "is required for a weekly digest (0 = Monday)")
        return
    # bool is an int subclass; `true` from a JSON body is not a weekday.
    if isinstance(weekday, bool) or not isinstance(weekday, int) or not 0 <= weekday <= 6:
        raise ScheduleError("weekday", "must be an integer 0-6 (0 = Monday)")


def _require_aware(value: dt.datetime, name: str) -> None:
    if not isinstance(value, dt.datetime):
        raise TypeError(f"{name} must be a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


def _require_date(day: dt.date) -> None:
    # datetime is a date subclass; accepting one would invite passing a UTC timestamp
    # where the user's local calendar date is meant.
    if isinstance(day, dt.datetime) or not isinstance(day, dt.date):
        raise TypeError("day must be a local calendar date (datetime.date)")


def local_date(schedule: Schedule, instant: dt.datetime) -> dt.date:
    """The calendar date in the schedule's zone at the aware `instant`."""
    _require_aware(instant, "instant")
    return instant.astimezone(schedule.zone).date()


def is_delivery_day(schedule: Schedule, day: dt.date) -> bool:
    """Whether local date `day` gets a digest (weekday / weekend rules use the LOCAL date)."""
    _require_date(day)
    if schedule.frequency == "weekly":
        return day.weekday() == schedule.weekday
    return not (schedule.exclude_weekends and day.weekday() >= _SATURDAY)


def delivery_instant(schedule: Schedule, day: dt.date) -> dt.datetime:
    """UTC instant of the delivery on local date `day`, whether or not it is a delivery day.

    A wall time that does not exist that day (spring forward) is delivered at the end of the
    gap, the first valid local minute after it; a wall time that occurs twice (fall back) is
    delivered at its first occurrence only.
    """
    _require_date(day)
    wall = dt.datetime.combine(day, schedule.delivery_time)
    # fold=0 is the earlier of two occurrences, so an ambiguous time resolves to the first.
    first = wall.replace(tzinfo=schedule.zone, fold=0).astimezone(dt.UTC)
    if _wall(schedule, first) == wall:
        return first
    # Nonexistent wall time: fold=0 and fold=1 map it through the offsets either side of
    # the transition, giving two instants that bracket it; bisect for the transition.
    second = wall.replace(tzinfo=schedule.zone, fold=1).astimezone(dt.UTC)
    lo, hi = min(first, second), max(first, second)
    # Invariant: wall clock at lo is still before `wall`, at hi it is already past it.
    # Offsets are whole seconds, so bisecting on seconds finds the transition exactly.
    while hi - lo > dt.timedelta(seconds=1):
        mid = lo + dt.timedelta(seconds=max(1, int((hi - lo).total_seconds()) // 2))
        if _wall(schedule, mid) >= wall:
            hi = mid
        else:
            lo = mid
    return hi


def _wall(schedule: Schedule, instant: dt.datetime) -> dt.datetime:
    return instant.astimezone(schedule.zone).replace(tzinfo=None, fold=0)


def due_day(schedule: Schedule, now: dt.datetime) -> dt.date | None:
    """The local date whose digest is due at the aware `now`, or None.

    Only the user's current local date is considered: a scheduler that was down catches up
    later the same local day, nobody gets a digest early, and a day that has ended locally
    is not sent retroactively.
    """
    today = local_date(schedule, now)
    if is_delivery_day(schedule, today) and delivery_instant(schedule, today) <= now:
        return today
    return None


def upcoming(schedule: Schedule, after: dt.datetime, count: int) -> list[dt.datetime]:
    """The next `count` delivery instants strictly after the aware `after`, UTC, ascending.

    Callers exposing `count` to users should cap it; the work is linear in `count`.
    """
    _require_aware(after, "after")
    if count < 0:
        raise ValueError("count must be >= 0")
    # Start a day early: one spare iteration keeps this right even where a fall-back
    # crosses local midnight (the local date briefly runs backwards), so the next delivery
    # can belong to the local date before local_date(after).
    day = local_date(schedule, after) - dt.timedelta(days=1)
    found: list[dt.datetime] = []
    # Weekly needs 7 days per delivery, the rest fewer; the slack covers the early start.
    for _ in range(count * 7 + 14):
        if len(found) >= count:
            break
        if is_delivery_day(schedule, day):
            instant = delivery_instant(schedule, day)
            # A date skipped entirely (Pacific/Apia 2011-12-30) maps into the next day;
            # due_day can never pick it, so it is not listed either.
            if instant > after and local_date(schedule, instant) == day:
                found.append(instant)
        day += dt.timedelta(days=1)
    return found


def next_delivery(schedule: Schedule, after: dt.datetime) -> dt.datetime:
    """The first delivery instant strictly after the aware `after`, UTC."""
    return upcoming(schedule, after, 1)[0]


def period_start(schedule: Schedule, day: dt.date, previous: dt.datetime | None) -> dt.datetime:
    """Start (UTC) of the content period for the digest of local `day`.

    The previous digest's instant when there was one, so nothing falls between two digests;
    otherwise one period (24 h or 7 days) before this delivery.
    """
    if previous is not None:
        _require_aware(previous, "previous")
        return previous.astimezone(dt.UTC)
    span = dt.timedelta(days=7) if schedule.frequency == "weekly" else dt.timedelta(hours=24)
    return delivery_instant(schedule, day) - span
