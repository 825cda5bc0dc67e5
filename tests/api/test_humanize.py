"""Human units: what the admin page, the recap and the profile print instead of raw figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api.humanize import count, duration, plural, possessive, relative, time_span

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (647198.5, "7 d 11 h"),  # what /admin used to print as "647198.5 s"
        (607920, "7 d"),  # 10132 min: no "0 h"
        (3600, "1 h"),
        (3725, "1 h 2 min"),
        (125, "2 min 5 s"),
        (45, "45 s"),
        (0.42, "0.4 s"),
        (2.0, "2 s"),
        (None, "\N{EN DASH}"),
    ],
)
def test_durations_use_the_two_largest_units(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


def test_relative_times_say_ago_or_in() -> None:
    assert relative(NOW - timedelta(minutes=2, seconds=50), NOW) == "2 min ago"
    assert relative(NOW - timedelta(days=7, hours=11, minutes=30), NOW) == "7 d 11 h ago"
    assert relative(NOW + timedelta(hours=13), NOW) == "in 13 h"
    assert relative(NOW - timedelta(seconds=20), NOW) == "just now"
    assert relative(None, NOW) == "never"
    naive = (NOW - timedelta(days=2)).replace(tzinfo=None)
    assert relative(naive, NOW) == "2 d ago", "naive datetimes from pymongo are UTC"


@pytest.mark.parametrize(
    ("number", "text"),
    [(950, "950"), (1000, "1k"), (1234, "1.2k"), (12345, "12k"), (2_500_000, "2.5M"), (0, "0")],
)
def test_counts_are_short(number: int, text: str) -> None:
    assert count(number) == text


@pytest.mark.parametrize(
    ("name", "text"),
    [("Demo friends", "Demo friends'"), ("Ana", "Ana's"), ("BOYS", "BOYS'"), ("Cy", "Cy's")],
)
def test_possessive_drops_the_s_after_an_s(name: str, text: str) -> None:
    assert possessive(name) == text


def test_time_spans_are_in_the_readers_zone() -> None:
    start = datetime(2026, 12, 1, 19, 5, tzinfo=UTC)
    assert time_span(start, start + timedelta(hours=2), "UTC") == "Tue 1 Dec, 19:05 to 21:05 (UTC)"
    # Tuesday evening in UTC is already Wednesday in Tokyo.
    assert (
        time_span(start - timedelta(hours=3), start - timedelta(hours=1), "Asia/Tokyo")
        == "Wed 2 Dec, 01:05 to 03:05 (Asia/Tokyo)"
    )
    # Across midnight in the reader's zone, both days are named.
    assert (
        time_span(start, start + timedelta(hours=6), "Europe/Berlin")
        == "Tue 1 Dec 20:05 to Wed 2 Dec 02:05 (Europe/Berlin)"
    )
    assert time_span(start, start, "Not/AZone").endswith("(UTC)"), "a bad zone falls back"


def test_plurals_are_singular_for_one_only() -> None:
    assert [plural(n, "day") for n in (0, 1, 2, 1.5)] == ["days", "day", "days", "days"]
    assert plural(3, "match", "matches") == "matches"
