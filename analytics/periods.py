"""The days and periods a run over a range touches, in plain Python, for the writers of
rollups and the dashboard that reads them.

The keys themselves (``week:YYYY-MM-DD``, ``month:YYYY-MM``, ``year:YYYY``, ``all``) are
:mod:`auxcord.periods`'; they are re-exported here for the callers that import them from here.
Kept free of Spark imports so the web app can use it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from auxcord.periods import ALL_TIME, period_start
from auxcord.periods import PERIOD_NAMES as PERIOD_NAMES
from auxcord.periods import Period as Period
from auxcord.periods import period_key as period_key

# The widest UTC offsets (UTC-12, UTC+14): a local day starts and ends at most this long
# before or after UTC's.
_LATEST_OFFSET = timedelta(hours=14)


def local_days_window(first: date, last: date) -> tuple[datetime, datetime]:
    """``[since, until)`` in UTC: every instant that falls on a local day of ``[first, last]``
    in some timezone, so a query on ``played_at`` finds all of those days' plays (and some
    of the neighbouring days', which the caller drops by local day)."""
    since = datetime.combine(first, time(), UTC) - _LATEST_OFFSET
    until = datetime.combine(last + timedelta(days=1), time(), UTC) + _LATEST_OFFSET
    return since, until


def affected_periods(first: date, last: date) -> list[str]:
    """The rollup period keys holding any day of ``[first, last]``."""
    keys = {ALL_TIME}
    day = first
    while day <= last:
        keys |= {period_key(period, day) for period in ("week", "month", "year")}
        day += timedelta(days=1)
    return sorted(keys)


def period_days(period: Period, day: date, recent: int = 30) -> tuple[date, date]:
    """The first and last day of the ``period`` holding ``day``; for a single day and for all
    time, the ``recent`` days ending at ``day`` (what a chart of them shows)."""
    if period == "week":
        monday = period_start("week", day)
        return monday, monday + timedelta(days=6)
    if period == "month":
        following = date(day.year + day.month // 12, day.month % 12 + 1, 1)
        return period_start("month", day), following - timedelta(days=1)
    if period == "year":
        return period_start("year", day), date(day.year, 12, 31)
    return day - timedelta(days=recent - 1), day
