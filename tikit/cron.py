"""Cron arithmetic for the platform's four cron dialects (docs/architecture.md):

* CloudNativePG ScheduledBackup: six fields, seconds first, UTC;
* KEDA cron trigger: five fields plus an IANA time zone;
* Kubernetes CronJob: five fields plus spec.timeZone;
* Chaos Mesh Schedule: five fields.

croniter does the arithmetic; this module only knows which dialect is which and what the
platform asks of a schedule (a fixed period, for the backup-age alerts).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Optional

_MAX_RUNS = 2000
# A fixed, arbitrary start: the same answer on every machine and every day.
_REFERENCE = datetime(2026, 1, 1, tzinfo=timezone.utc)
DAY_SECONDS = 86400
# The highest day of week the clusters' Go cron parser (robfig/cron) accepts: Sunday is 0 only.
DAY_OF_WEEK_MAX = 6
HOUR_SECONDS = 3600


def _fields(schedule: str) -> int:
    return len(schedule.split())


def is_valid(schedule: str, *, seconds_first: bool = False) -> bool:
    """A five-field schedule, or (``seconds_first``) a six-field one with seconds first."""
    from croniter import croniter

    want = 6 if seconds_first else 5
    if _fields(schedule) != want or "\n" in schedule:
        return False
    if _sunday_as_seven(schedule.split()[-1]):
        return False
    try:
        return bool(croniter.is_valid(schedule, second_at_beginning=seconds_first))
    except Exception:  # noqa: BLE001 - croniter raises several types for nonsense
        return False


def _sunday_as_seven(day_of_week: str) -> bool:
    """A day of week above 6: croniter and Vixie cron read 7 as Sunday, but the Go parser
    behind CronJobs, KEDA, CloudNativePG and Karpenter (robfig/cron) accepts 0-6 only."""
    for part in day_of_week.split(","):
        base = part.split("/")[0]
        if any(int(n) > DAY_OF_WEEK_MAX for n in re.findall(r"[0-9]+", base)):
            return True
    return False


def runs(schedule: str, start: datetime = _REFERENCE, *, until: Optional[datetime] = None, limit: int = _MAX_RUNS) -> list[datetime]:
    """The schedule's run times (UTC) from ``start``: five fields, or six with seconds first."""
    from croniter import croniter

    seconds_first = _fields(schedule) == 6
    it = croniter(schedule, start, second_at_beginning=seconds_first)
    out: list[datetime] = []
    while len(out) < limit:
        t = it.get_next(datetime)
        if until is not None and t > until:
            break
        out.append(t)
    return out


WEEK_SECONDS = 7 * DAY_SECONDS


def weekly_period_seconds(schedule: str) -> Optional[int]:
    """The period of a weekly schedule (one minute, one hour, one weekday, every month): a
    week; else what period_seconds() says (hourly ... daily).  The restore drills' age alert
    follows it."""
    from croniter import croniter

    if not is_valid(schedule):
        return None
    minutes, hours, days, months, weekdays = croniter(schedule).expanded[:5]
    if len(minutes) == 1 and len(hours) == 1 and days == ["*"] and months == ["*"] and len(weekdays) == 1 and weekdays != ["*"]:
        return WEEK_SECONDS
    return period_seconds(schedule)


def period_seconds(schedule: str) -> Optional[int]:
    """The fixed period of a regular schedule (five fields, or six with seconds first) that
    runs every N hours with N dividing a day: hourly, every 6 hours, daily.  None for
    anything else (weekdays only, weekly, monthly, every few minutes, invalid), because a
    backup-age alert cannot tell a missed run from a planned gap there.

    Read from croniter's expansion of the fields: one second and one minute, every day of
    every month, and hours that step evenly round the clock."""
    from croniter import croniter

    seconds_first = _fields(schedule) == 6
    if not is_valid(schedule, seconds_first=seconds_first):
        return None
    expanded = croniter(schedule, second_at_beginning=seconds_first).expanded
    minutes, hours, days, months, weekdays = expanded[:5]
    seconds = expanded[5] if seconds_first else [0]
    if len(seconds) != 1 or len(minutes) != 1 or any(f != ["*"] for f in (days, months, weekdays)):
        return None
    if hours == ["*"]:
        return HOUR_SECONDS
    steps = {b - a for a, b in zip(hours, hours[1:])} | {hours[0] + 24 - hours[-1]}
    if len(steps) != 1:
        return None
    period = steps.pop() * HOUR_SECONDS
    return period if DAY_SECONDS % period == 0 else None


def utc_window(start: str, end: str, tz: str) -> tuple[str, str]:
    """A daily window given as two five-field schedules in time zone ``tz`` (a KEDA cron
    trigger's start and end), as Karpenter's disruption budgets want it: one five-field
    schedule in UTC (budgets take no time zone) and a duration such as '6h' or '6h15m'.

    Only daily schedules (one minute, one hour, every day) in a zone without daylight
    saving translate to a single UTC schedule; anything else raises ValueError."""
    from zoneinfo import ZoneInfo

    from croniter import croniter

    zone = ZoneInfo(tz)
    offsets = {datetime(2026, month, 1, tzinfo=zone).utcoffset() for month in (1, 4, 7, 10)}
    if len(offsets) != 1:
        raise ValueError(f"time zone {tz} changes its UTC offset during the year; a UTC budget schedule cannot follow it")
    for schedule in (start, end):
        if not is_valid(schedule):
            raise ValueError(f"'{schedule}' is not a five-field schedule")
        minutes, hours, days, months, weekdays = croniter(schedule).expanded[:5]
        if len(minutes) != 1 or len(hours) != 1 or any(f != ["*"] for f in (days, months, weekdays)):
            raise ValueError(f"'{schedule}' is not a daily schedule (one minute, one hour, every day)")
    local_start = croniter(start, _REFERENCE.astimezone(zone)).get_next(datetime)
    local_end = croniter(end, local_start).get_next(datetime)
    minutes = int((local_end - local_start).total_seconds() // 60)
    utc_start = local_start.astimezone(timezone.utc)
    hours, rest = divmod(minutes, 60)
    duration = f"{hours}h{rest}m" if rest else f"{hours}h"
    return f"{utc_start.minute} {utc_start.hour} * * *", duration
