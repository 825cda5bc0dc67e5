"""Period keys in plain Python, for the writers of rollups and the dashboard that reads them.

The same keys as :func:`analytics.rollups.period_key` computes in Spark: ``week:YYYY-MM-DD``
(the Monday), ``month:YYYY-MM``, ``year:YYYY`` and ``all``. Kept free of Spark imports so the
web app can use it.
"""

from __future__ import annotations

from datetime import date, timedelta
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
