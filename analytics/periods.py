"""Period keys in plain Python, for the writers of rollups and the dashboard that reads them.

The same keys as :func:`analytics.rollups.period_key` computes in Spark: ``week:YYYY-MM-DD``
(the Monday), ``month:YYYY-MM``, ``year:YYYY`` and ``all``. Kept free of Spark imports so the
web app can use it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

Period = Literal["day", "week", "month", "year", "all"]
PERIOD_NAMES: tuple[Period, ...] = ("day", "week", "month", "year", "all")


def period_key(period: Period, day: date) -> str:
    """The key of the ``period`` holding ``day`` (``day`` itself for daily documents)."""
    if period == "day":
        return day.isoformat()
    if period == "week":
        return f"week:{day - timedelta(days=day.weekday())}"
    if period == "month":
        return f"month:{day:%Y-%m}"
    if period == "year":
        return f"year:{day:%Y}"
    return "all"


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
    keys = {"all"}
    day = first
    while day <= last:
        keys |= {period_key(period, day) for period in ("week", "month", "year")}
        day += timedelta(days=1)
    return sorted(keys)


def period_days(period: Period, day: date, recent: int = 30) -> tuple[date, date]:
    """The first and last day of the ``period`` holding ``day``; for a single day and for all
    time, the ``recent`` days ending at ``day`` (what a chart of them shows)."""
    if period == "week":
        monday = day - timedelta(days=day.weekday())
        return monday, monday + timedelta(days=6)
    if period == "month":
        following = date(day.year + day.month // 12, day.month % 12 + 1, 1)
        return day.replace(day=1), following - timedelta(days=1)
    if period == "year":
        return date(day.year, 1, 1), date(day.year, 12, 31)
    return day - timedelta(days=recent - 1), day
