"""Daily aggregates against a reference computed independently in plain Python."""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest

from analytics.daily import (
    as_summaries,
    group_daily_stats,
    local_listens,
    prior_history_from_summaries,
    user_daily_stats,
)
from analytics.sources import summaries_schema

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

ZONES = {"ana": "America/New_York", "ben": "Europe/Berlin", "cy": "UTC", "dee": "Asia/Tokyo"}
GROUPS = {"g1": ["ana", "ben", "cy"], "g2": ["cy", "dee"]}
FIRST, LAST = date(2026, 3, 6), date(2026, 3, 31)
TRACKS = [(f"t{n}", f"Track {n}", f"Artist {n % 7}", f"Album {n % 5}") for n in range(40)]
START = date(2026, 2, 28)
"""The first local day with a play (1 March 00:00 UTC is still 28 February in New York)."""


def make_plays(seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    plays = []
    for user in ZONES:
        # Some history before the range, so discoveries and streaks depend on it.
        moment = datetime(2026, 3, 1, tzinfo=UTC)
        while moment < datetime(2026, 4, 2, tzinfo=UTC):
            moment += timedelta(minutes=rng.choice([4, 4, 5, 30, 90, 600, 1500]))
            track = TRACKS[min(int(rng.expovariate(0.15)), len(TRACKS) - 1)]
            plays.append(play(user, track, moment, rng.randint(120_000, 300_000)))
    # Edge cases: 23:59 local versus UTC, and the DST changes (US 8 March, EU 29 March 2026).
    edges = [
        ("ana", datetime(2026, 3, 9, 3, 59, tzinfo=UTC)),  # 23:59 on 8 March in New York (EDT)
        ("ana", datetime(2026, 3, 8, 4, 59, tzinfo=UTC)),  # 23:59 on 7 March (EST)
        ("ben", datetime(2026, 3, 28, 23, 30, tzinfo=UTC)),  # 00:30 on 29 March in Berlin
        ("ben", datetime(2026, 3, 29, 21, 59, tzinfo=UTC)),  # 23:59 on 29 March (CEST)
        ("dee", datetime(2026, 3, 31, 15, 0, tzinfo=UTC)),  # 00:00 on 1 April in Tokyo
    ]
    plays += [play(user, TRACKS[0], moment, 200_000) for user, moment in edges]
    plays.append(
        {**play("cy", TRACKS[1], datetime(2026, 3, 10, 12, tzinfo=UTC), 0), "item_type": "episode"}
    )
    return plays


def play(user: str, track: tuple[str, str, str, str], moment: datetime, ms: int) -> dict[str, Any]:
    track_id, name, artist, album = track
    return {
        "user_id": user,
        "track_id": track_id,
        "track_name": name,
        "artist_name": artist,
        "album_name": album,
        "album_image_url": None,
        "duration_ms": ms,
        "ms_played": None,
        "played_at": moment,
        "item_type": "track",
    }


def local_day(row: dict[str, Any]) -> tuple[date, int]:
    local = row["played_at"].astimezone(ZoneInfo(ZONES[row["user_id"]]))
    return local.date(), local.hour


def reference_user_days(plays: list[dict[str, Any]]) -> dict[tuple[str, date], dict[str, Any]]:
    music = [p for p in plays if p["item_type"] == "track"]
    first_track: dict[tuple[str, str], date] = {}
    days_of: dict[str, set[date]] = defaultdict(set)
    for p in sorted(music, key=lambda p: p["played_at"]):
        day, _ = local_day(p)
        first_track.setdefault((p["user_id"], p["track_id"]), day)
        days_of[p["user_id"]].add(day)
    by_day: dict[tuple[str, date], list[dict[str, Any]]] = defaultdict(list)
    for p in music:
        by_day[(p["user_id"], local_day(p)[0])].append(p)
    result = {}
    for (user, day), rows in by_day.items():
        if not FIRST <= day <= LAST:
            continue
        hours = [0] * 24
        for p in rows:
            hours[local_day(p)[1]] += 1
        tracks = Counter(p["track_id"] for p in rows)
        streak = 0
        while day - timedelta(days=streak) in days_of[user]:
            streak += 1
        result[(user, day)] = {
            "plays": len(rows),
            # Spark rounds half up.
            "minutes": float(
                (Decimal(sum(p["duration_ms"] for p in rows)) / 60_000).quantize(
                    Decimal("0.001"), ROUND_HALF_UP
                )
            ),
            "distinct_tracks": len(tracks),
            "distinct_artists": len({p["artist_name"] for p in rows}),
            "top_track": sorted(tracks.items(), key=lambda kv: (-kv[1], kv[0]))[0],
            "hours": hours,
            "new_tracks": sum(1 for t in tracks if first_track[(user, t)] == day),
            "streak": streak,
            "artists": Counter(p["artist_name"] for p in rows),
        }
    return result


def days_after_history(history: DataFrame, first: date, last: date) -> DataFrame:
    """User days of ``[first, last]``, carrying on from the days before ``first`` (computed
    the same way from START, with nothing before), as a run after the stored days does.

    Checkpointed, as ``aggregate_days`` checkpoints them: group days read the user days
    several times, and Spark plans each read of the uncheckpointed lineage anew."""
    earlier = user_daily_stats(history, START, first - timedelta(days=1), None)
    schema = history.sparkSession.createDataFrame(summaries_schema().empty_table()).schema
    before = prior_history_from_summaries(as_summaries(earlier, schema), first)
    return user_daily_stats(history, first, last, before).localCheckpoint()


@pytest.fixture(scope="module")
def frames(spark: SparkSession) -> tuple[DataFrame, DataFrame]:
    plays = make_plays()
    schema = (
        "user_id string, track_id string, track_name string, artist_name string, "
        "album_name string, album_image_url string, duration_ms long, ms_played long, "
        "played_at timestamp, item_type string"
    )
    listens = spark.createDataFrame([tuple(p.values()) for p in plays], schema)
    users = spark.createDataFrame(list(ZONES.items()), "user_id string, timezone string")
    memberships = spark.createDataFrame(
        [(g, u) for g, members in GROUPS.items() for u in members],
        "group_id string, user_id string",
    )
    return local_listens(listens, users).cache(), memberships


def test_user_days_match_the_plain_python_reference(frames: tuple[DataFrame, DataFrame]) -> None:
    history, _ = frames
    expected = reference_user_days(make_plays())
    rows = {(r.user_id, r.day): r for r in days_after_history(history, FIRST, LAST).collect()}
    assert set(rows) == set(expected)
    for key, want in expected.items():
        got = rows[key]
        assert (got.plays, got.minutes, got.distinct_tracks, got.distinct_artists) == (
            want["plays"],
            want["minutes"],
            want["distinct_tracks"],
            want["distinct_artists"],
        ), key
        assert (got.top_tracks[0].track_key, got.top_tracks[0].plays) == want["top_track"], key
        assert list(got.hours) == want["hours"], key
        assert (got.new_tracks, got.streak) == (want["new_tracks"], want["streak"]), key


def test_timezone_edges_land_on_the_local_day(frames: tuple[DataFrame, DataFrame]) -> None:
    history, _ = frames
    rows = {(r.user_id, r.day): r for r in days_after_history(history, FIRST, LAST).collect()}
    # 23:59 in New York on the US DST day is still 8 March, though UTC says 9 March.
    assert rows[("ana", date(2026, 3, 8))].hours[23] >= 1
    assert (
        rows[("ben", date(2026, 3, 29))].hours[0] >= 1
        and rows[("ben", date(2026, 3, 29))].hours[23] >= 1
    )
    # A play at 00:00 on 1 April in Tokyo is outside a range ending on 31 March.
    assert ("dee", date(2026, 4, 1)) not in rows


def test_a_range_equals_its_days_one_by_one(frames: tuple[DataFrame, DataFrame]) -> None:
    history, memberships = frames

    def days(first: date, last: date) -> tuple[list[Any], list[Any]]:
        users = days_after_history(history, first, last)
        groups = group_daily_stats(users, memberships, first, last)
        return sorted(map(str, users.collect())), sorted(map(str, groups.collect()))

    whole = days(date(2026, 3, 7), date(2026, 3, 10))
    one_by_one: tuple[list[Any], list[Any]] = ([], [])
    for offset in range(4):
        day = date(2026, 3, 7) + timedelta(days=offset)
        users, groups = days(day, day)
        one_by_one[0].extend(users)
        one_by_one[1].extend(groups)
    assert whole == (sorted(one_by_one[0]), sorted(one_by_one[1]))


def test_group_days_rank_members_and_find_shared_songs(frames: tuple[DataFrame, DataFrame]) -> None:
    history, memberships = frames
    users = days_after_history(history, FIRST, LAST)
    expected = reference_user_days(make_plays())
    groups = {
        (r.group_id, r.day): r for r in group_daily_stats(users, memberships, FIRST, LAST).collect()
    }
    plays = [p for p in make_plays() if p["item_type"] == "track"]
    for (group, day), row in groups.items():
        members = [u for u in GROUPS[group] if (u, day) in expected]
        minutes = [(b.value, b.user_id) for b in row.leaderboards.minutes]
        assert minutes == sorted(
            ((expected[(u, day)]["minutes"], u) for u in members), reverse=True
        )
        listeners: dict[str, set[str]] = defaultdict(set)
        for p in plays:
            if p["user_id"] in GROUPS[group] and local_day(p)[0] == day:
                listeners[p["track_id"]].add(p["user_id"])
        shared = {t for t, who in listeners.items() if len(who) >= 2}
        assert {s.track_key for s in row.same_songs} == shared
        for match in row.taste_match or []:
            a = expected[(match.user_a, day)]["artists"]
            b = expected[(match.user_b, day)]["artists"]
            dot = sum(a[k] * b[k] for k in a)
            cosine = dot / math.sqrt(
                sum(v * v for v in a.values()) * sum(v * v for v in b.values())
            )
            assert match.score == pytest.approx(cosine, abs=1e-6)
            assert match.shared_artists[0].artist_name in set(a) & set(b)
