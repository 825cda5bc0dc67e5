"""Week, month, year and all-time rollups, and the yearly group recap, from daily results.

Pure DataFrame transforms over ``user_daily`` rows (never raw listens): each day keeps every
track and artist it counted (``track_counts``, ``artist_counts``), so a period's top lists are
exact sums, not merges of daily top tens. Periods are keyed ``week:YYYY-MM-DD`` (the Monday),
``month:YYYY-MM``, ``year:YYYY`` and ``all``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from analytics.daily import empty_if_missing, ranked_top, taste_match

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

PERIODS = ("week", "month", "year", "all")


def period_key(period: str, day: Column) -> Column:
    """The key of the ``period`` holding ``day``."""
    if period == "week":
        return F.concat(F.lit("week:"), F.date_format(F.date_trunc("week", day), "yyyy-MM-dd"))
    if period == "month":
        return F.concat(F.lit("month:"), F.date_format(day, "yyyy-MM"))
    if period == "year":
        return F.concat(F.lit("year:"), F.date_format(day, "yyyy"))
    if period == "all":
        return F.lit("all")
    raise ValueError(f"unknown period {period!r}; expected one of {', '.join(PERIODS)}")


def with_periods(user_daily: DataFrame) -> DataFrame:
    """``user_daily`` with a ``period`` column, one row per day and period holding it."""
    keys = F.array(*[period_key(p, F.to_date("day")) for p in PERIODS])
    return user_daily.withColumn("period", F.explode(keys))


def _counts(
    daily: DataFrame, column: str, keys: list[str], names: list[str], by: list[str]
) -> DataFrame:
    """Sum the per-day counts in ``column`` (structs of keys, names and plays) per ``by`` +
    keys."""
    exploded = daily.select(*by, F.explode(column).alias("c")).select(*by, "c.*")
    return exploded.groupBy(*by, *keys).agg(
        F.sum("plays").alias("plays"), *[F.first(name).alias(name) for name in names]
    )


def user_rollups(periodic: DataFrame) -> DataFrame:
    """Per (user_id, period): plays, minutes, active_days, discoveries, longest_streak, hours,
    distinct tracks and artists, top tracks, artists and albums."""
    by = ["user_id", "period"]
    totals = periodic.groupBy(*by).agg(
        F.sum("plays").alias("plays"),
        F.round(F.sum("minutes"), 3).alias("minutes"),
        F.count("*").alias("active_days"),
        F.sum("new_tracks").alias("new_tracks"),
        F.sum("new_artists").alias("new_artists"),
        F.max("streak").alias("longest_streak"),
    )
    hours = (
        periodic.select(*by, F.posexplode("hours").alias("hour", "n"))
        .groupBy(*by, "hour")
        .agg(F.sum("n").alias("n"))
        .groupBy(*by)
        .agg(
            F.transform(
                F.sort_array(F.collect_list(F.struct("hour", "n"))), lambda x: x["n"]
            ).alias("hours")
        )
    )
    tracks = _counts(periodic, "track_counts", ["track_key"], ["track_name", "artist_name"], by)
    artists = _counts(periodic, "artist_counts", ["artist_name"], [], by)
    albums = _counts(periodic, "album_counts", ["album_name", "artist_name"], [], by)
    distinct = (
        tracks.groupBy(*by)
        .agg(F.count("*").alias("distinct_tracks"))
        .join(artists.groupBy(*by).agg(F.count("*").alias("distinct_artists")), by)
    )
    return (
        totals.join(hours, by)
        .join(distinct, by)
        .join(ranked_top(tracks, by, ["track_key", "track_name", "artist_name"], "top_tracks"), by)
        .join(ranked_top(artists, by, ["artist_name"], "top_artists"), by)
        .join(ranked_top(albums, by, ["album_name", "artist_name"], "top_albums"), by)
    )


def group_rollups(periodic: DataFrame, rollups: DataFrame, memberships: DataFrame) -> DataFrame:
    """Per (group_id, period): leaderboards, the group's top tracks and artists, taste-match."""
    by = ["group_id", "period"]
    members = rollups.join(memberships, "user_id")

    def board(column: str) -> Column:
        values = F.collect_list(F.struct(F.col(column).alias("value"), "user_id"))
        return F.sort_array(values, asc=False)

    totals = members.groupBy(*by).agg(
        F.sum("plays").alias("plays"),
        F.round(F.sum("minutes"), 3).alias("minutes"),
        F.struct(
            board("minutes").alias("minutes"),
            board("plays").alias("plays"),
            board("new_tracks").alias("discoveries"),
            board("longest_streak").alias("streak"),
        ).alias("leaderboards"),
    )
    joined = periodic.join(memberships, "user_id")
    per_member = [*by, "user_id"]
    tracks = _counts(
        joined, "track_counts", ["track_key"], ["track_name", "artist_name"], per_member
    )
    artists = _counts(joined, "artist_counts", ["artist_name"], [], per_member)
    group_tracks = tracks.groupBy(*by, "track_key").agg(
        F.sum("plays").alias("plays"),
        F.first("track_name").alias("track_name"),
        F.first("artist_name").alias("artist_name"),
        F.count("*").alias("listeners"),
    )
    group_artists = artists.groupBy(*by, "artist_name").agg(
        F.sum("plays").alias("plays"), F.count("*").alias("listeners")
    )
    matches = (
        taste_match(artists, ["period"])
        .groupBy(*by)
        .agg(
            F.sort_array(
                F.collect_list(F.struct("score", "user_a", "user_b", "shared_artists")), asc=False
            ).alias("taste_match")
        )
    )
    return (
        totals.join(
            ranked_top(
                group_tracks,
                by,
                ["track_key", "track_name", "artist_name", "listeners"],
                "top_tracks",
            ),
            by,
        )
        .join(ranked_top(group_artists, by, ["artist_name", "listeners"], "top_artists"), by)
        .join(matches, by, "left")
        .withColumn("taste_match", empty_if_missing(matches, "taste_match"))
    )


def group_recaps(group_rollup: DataFrame, periodic: DataFrame, memberships: DataFrame) -> DataFrame:
    """The yearly, Wrapped-style recap of each group: the year's totals, tops and leaders,
    the best-matched pair, and the group's busiest day."""
    years = group_rollup.where(F.col("period").startswith("year:"))
    busiest = (
        periodic.where(F.col("period").startswith("year:"))
        .join(memberships, "user_id")
        .groupBy("group_id", "period", "day")
        .agg(F.round(F.sum("minutes"), 3).alias("minutes"))
        .groupBy("group_id", "period")
        .agg(F.max(F.struct("minutes", "day")).alias("busiest_day"))
    )
    return years.join(busiest, ["group_id", "period"]).select(
        "group_id",
        F.substring("period", 6, 4).alias("year"),
        "plays",
        "minutes",
        "top_tracks",
        "top_artists",
        F.col("leaderboards.minutes")[0].alias("most_minutes"),
        F.col("leaderboards.discoveries")[0].alias("most_discoveries"),
        F.col("leaderboards.streak")[0].alias("longest_streak"),
        F.get("taste_match", 0).alias("best_match"),
        "busiest_day",
    )
