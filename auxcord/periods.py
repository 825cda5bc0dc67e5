"""Period keys and document ids: the one definition the Spark writers and the web app share.

A stored day is keyed by its date (``YYYY-MM-DD``); a rollup by its period's key:
``week:YYYY-MM-DD`` (the Monday), ``month:YYYY-MM``, ``year:YYYY`` or ``all``. A document's
``_id`` is its owner (a user, a group, a recommendation run) and its key, joined by ``:``.

Plain Python, so the core holds it: :func:`analytics.rollups.period_key` builds the same keys
as Spark columns from :data:`SPARK_KEY_FORMATS` and :func:`key_prefix`.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Literal

Period = Literal["day", "week", "month", "year", "all"]
PERIOD_NAMES: tuple[Period, ...] = ("day", "week", "month", "year", "all")
ROLLUP_PERIODS: tuple[Period, ...] = ("week", "month", "year", "all")
"""The periods stored as rollups (a day is stored as a day)."""

ALL_TIME = "all"
"""The key of the all-time rollup."""
SEPARATOR = ":"
"""Between a key's period and its date, and between a document id's owner and key."""

KEY_FORMATS: dict[str, str] = {"week": "%Y-%m-%d", "month": "%Y-%m", "year": "%Y"}
"""How a dated period's key writes its first day (``strftime``)."""
SPARK_KEY_FORMATS: dict[str, str] = {"week": "yyyy-MM-dd", "month": "yyyy-MM", "year": "yyyy"}
"""The same formats as Spark's ``date_format`` patterns."""


def key_prefix(period: str) -> str:
    """What every key of a dated ``period`` starts with: ``week:``, ``month:``, ``year:``."""
    if period not in KEY_FORMATS:
        raise ValueError(f"{period!r} has no dated keys; expected one of {', '.join(KEY_FORMATS)}")
    return f"{period}{SEPARATOR}"


def prefix_range(period: str) -> tuple[str, str]:
    """``(low, high)``: every key of ``period`` sorts strictly between the two."""
    prefix = key_prefix(period)
    return prefix, prefix[:-1] + chr(ord(SEPARATOR) + 1)


def period_start(period: Period, day: date) -> date:
    """The first day of the ``period`` holding ``day`` (``day`` itself for a day)."""
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    if period == "year":
        return date(day.year, 1, 1)
    return day


def period_key(period: Period, day: date) -> str:
    """The key of the ``period`` holding ``day`` (``day`` itself for daily documents)."""
    if period == "day":
        return day.isoformat()
    if period == "all":
        return ALL_TIME
    return key_prefix(period) + period_start(period, day).strftime(KEY_FORMATS[period])


def is_key_of(key: str, period: str) -> bool:
    """Whether ``key`` is a key of the dated ``period``."""
    return key.startswith(key_prefix(period))


def key_year(key: str) -> str:
    """The year (``YYYY``) of a week, month or year key."""
    return key.partition(SEPARATOR)[2][:4]


def doc_id(owner: str, key: str | int) -> str:
    """A stored document's ``_id``: ``owner:key`` (``ana:2026-03-08``, ``g1:month:2026-03``,
    ``g1:2026`` for a recap, ``2026-03-09:ana`` for a recommendation run's list)."""
    return f"{owner}{SEPARATOR}{key}"
