"""Numbers and times the way people say them: "7 d 11 h", "2 min ago", "1.2k", "friends' 2026".

Pages never print raw seconds or raw counts: ``647198.5 s`` means nothing at a glance, "7 d
11 h" does. Every function here is a Jinja filter (registered by :mod:`api.templating` from
:data:`FILTERS`) and a plain function the tests call directly.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

MISSING = "\N{EN DASH}"
"""What a figure that is not known shows."""
_UNITS = ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"))


def duration(seconds: float | None) -> str:
    """``647198.5`` → ``7 d 11 h``: the two largest units, rounded down (so a figure never
    claims more time than passed); under ten seconds with one decimal (``0.4 s``)."""
    if seconds is None:
        return MISSING
    value = abs(float(seconds))
    if value < 10:
        return f"{value:.1f} s".replace(".0 s", " s")
    whole = int(value)
    parts: list[str] = []
    for size, unit in _UNITS:
        amount, whole = divmod(whole, size)
        if amount or parts:
            parts.append(f"{amount} {unit}")
        if len(parts) == 2:
            break
    # "2 h 0 min" says no more than "2 h".
    return " ".join(part for part in parts if not part.startswith("0 ")) or "0 s"


def relative(moment: datetime | None, now: datetime | None = None) -> str:
    """``2 min ago``, ``in 13 h 5 min``, ``just now`` or ``never`` (for ``None``)."""
    if moment is None:
        return "never"
    if moment.tzinfo is None:  # pymongo without tz_aware: its datetimes are UTC
        moment = moment.replace(tzinfo=UTC)
    seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    if abs(seconds) < 60:
        return "just now"
    # Whole minutes: "2 min 30 s ago" is more precise than anyone reading it needs.
    minutes = int(abs(seconds)) // 60 * 60
    return f"in {duration(minutes)}" if seconds > 0 else f"{duration(minutes)} ago"


def count(number: float | None) -> str:
    """``950`` → ``950``, ``1234`` → ``1.2k``, ``12345`` → ``12k``, ``2500000`` → ``2.5M``."""
    if number is None:
        return MISSING
    value = float(number)
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            scaled = value / size
            text = f"{scaled:.1f}" if abs(scaled) < 10 else f"{scaled:.0f}"
            return text.removesuffix(".0") + suffix
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def plural(number: float | None, singular: str, several: str | None = None) -> str:
    """``1, "day"`` → ``day``, ``2, "day"`` → ``days``; ``several`` when adding s is wrong."""
    return singular if number == 1 else (several or f"{singular}s")


def possessive(name: str) -> str:
    """``Ana`` → ``Ana's``, ``Demo friends`` → ``Demo friends'``."""
    return f"{name}'" if name.endswith(("s", "S")) else f"{name}'s"


def time_span(start: datetime, end: datetime, zone: str = "UTC") -> str:
    """``Tue 1 Dec, 14:05 to 16:30`` in ``zone``; both days are named when the span crosses
    midnight there. An unknown zone falls back to UTC (and says so)."""
    try:
        tz = ZoneInfo(zone)
    except (KeyError, ValueError):
        tz, zone = ZoneInfo("UTC"), "UTC"
    first, last = start.astimezone(tz), end.astimezone(tz)
    day = "{0:%a} {0.day} {0:%b}"
    if first.date() == last.date():
        return f"{day.format(first)}, {first:%H:%M} to {last:%H:%M} ({zone})"
    return f"{day.format(first)} {first:%H:%M} to {day.format(last)} {last:%H:%M} ({zone})"


FILTERS: dict[str, Callable[..., Any]] = {
    "duration": duration,
    "ago": relative,
    "count": count,
    "plural": plural,
    "possessive": possessive,
    "time_span": time_span,
}
"""The Jinja filters of this module, by the names templates use."""
