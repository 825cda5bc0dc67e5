"""Week, month, year and all-time rollups, and the yearly group recap, from daily results.

Pure DataFrame transforms over summaries, never raw listens: stored user days and the month
and year rollups built from them. Each keeps every track, artist and album it counted
(``track_counts``, ``artist_counts``, ``album_counts``), so a period's top lists are exact
sums, not merges of daily top tens. Periods are keyed as :mod:`auxcord.periods` defines:
``week:YYYY-MM-DD`` (the Monday), ``month:YYYY-MM``, ``year:YYYY`` and ``all``.

Incremental: re-running a day rebuilds its week and month from their days, its year from that
month and the stored other months, and all-time from that year and the stored other years. So
a day's run reads about a month of days and a summary per month and year, however long the
history, and gives what summing every day would give (sums, maxima and full counts compose).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from analytics.daily import (
    ALBUM_FIELDS,
    TRACK_FIELDS,
    empty_if_missing,
    leaderboards,
    ranked_top,
    taste_matches,
    tops_and_counts,
)
from auxcord.periods import ALL_TIME, ROLLUP_PERIODS, SEPARATOR, SPARK_KEY_FORMATS, key_prefix

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame


def period_key(period: str, day: Column) -> Column:
    """The key of the ``period`` holding ``day``: :func:`auxcord.periods.period_key` as a
    column, from the same prefixes and formats."""
    if period == ALL_TIME:
        return F.lit(ALL_TIME)
    if period not in SPARK_KEY_FORMATS:
        raise ValueError(f"unknown period {period!r}; expected one of {', '.join(ROLLUP_PERIODS)}")
    start = F.date_trunc("week", day) if period == "week" else day
    return F.concat(F.lit(key_prefix(period)), F.date_format(start, SPARK_KEY_FORMATS[period]))


def is_key_of(key: Column, period: str) -> Column:
    """Whether ``key`` is a key of the dated ``period`` (:func:`auxcord.periods.is_key_of`)."""
    return key.startswith(key_prefix(period))


def key_year(key: Column) -> Column:
    """The year (``YYYY``) of a week, month or year key (:func:`auxcord.periods.key_year`)."""
    return F.substring(F.substring_index(key, SEPARATOR, -1), 1, 4)


def contributions(summaries: DataFrame, affected: list[str]) -> DataFrame:
    """Each summary once per affected period it adds to, in a ``period`` column, with the
    per-day figures as rollups hold them (``active_days``, ``longest_streak``).

    ``summaries`` (:func:`analytics.sources.summaries_schema`) must hold, for ``affected``
    (:func:`analytics.periods.affected_periods` of a range): every day of the affected weeks
    and months, the month rollups of the affected years' other months, and the year rollups
    of the other years. A day adds to its week when that is affected, and to its month, year
    and all-time when its month is (otherwise the stored month rollup stands for it); a month
    rollup adds to its year and all-time, a year rollup to all-time. Other rows add nothing.
    """
    day = F.to_date("day")
    week, month = period_key("week", day), period_key("month", day)
    none = F.array().cast("array<string>")
    day_periods = F.concat(
        F.when(week.isin(affected), F.array(week)).otherwise(none),
        F.when(
            month.isin(affected), F.array(month, period_key("year", day), F.lit(ALL_TIME))
        ).otherwise(none),
    )
    period = F.col("period")
    year_of_month = F.concat(F.lit(key_prefix("year")), key_year(period))
    rollup_periods = (
        F.when(is_key_of(period, "month"), F.array(year_of_month, F.lit(ALL_TIME)))
        .when(is_key_of(period, "year"), F.array(F.lit(ALL_TIME)))
        .otherwise(none)
    )
    return summaries.select(
        "user_id",
        F.explode(F.when(F.col("day").isNotNull(), day_periods).otherwise(rollup_periods)).alias(
            "period"
        ),
        "day",
        "plays",
        "minutes",
        F.coalesce("active_days", F.lit(1)).alias("active_days"),
        "new_tracks",
        "new_artists",
        F.coalesce("longest_streak", "streak").alias("longest_streak"),
        "hours",
        "track_counts",
        "artist_counts",
        "album_counts",
    ).where(period.isin(affected))


def _entries(frame: DataFrame, column: str, by: list[str]) -> DataFrame:
    """One row per entry of the counts in ``column``, with ``by`` and the entry's fields."""
    return frame.select(*by, F.explode(column).alias("c")).select(*by, "c.*")


def _counts(
    parts: DataFrame, column: str, keys: list[str], names: list[str], by: list[str]
) -> DataFrame:
    """Sum the counts in ``column`` (structs of keys, names and plays) per ``by`` + keys."""
    return (
        _entries(parts, column, by)
        .groupBy(*by, *keys)
        .agg(F.sum("plays").alias("plays"), *[F.first(name).alias(name) for name in names])
    )


def user_rollups(parts: DataFrame) -> DataFrame:
    """Per (user_id, period) of :func:`contributions`: plays, minutes, active_days,
    discoveries, longest_streak, hours, distinct tracks and artists, top tracks, artists and
    albums, and the full track, artist and album counts (what the next level sums).

    ``day_minutes`` lists a month's days with their minutes (empty for other periods): a
    month keeps them so that a year's recap finds the busiest day without reading the group
    days of the whole year."""
    by = ["user_id", "period"]
    day = F.col("day")
    month_day = day.isNotNull() & is_key_of(F.col("period"), "month")
    totals = parts.groupBy(*by).agg(
        F.sum("plays").alias("plays"),
        F.round(F.sum("minutes"), 3).alias("minutes"),
        F.sort_array(
            F.collect_list(F.when(month_day, F.struct(day.alias("day"), "minutes")))
        ).alias("day_minutes"),
        F.sum("active_days").alias("active_days"),
        F.sum("new_tracks").alias("new_tracks"),
        F.sum("new_artists").alias("new_artists"),
        F.max("longest_streak").alias("longest_streak"),
    )
    hours = (
        parts.select(*by, F.posexplode("hours").alias("hour", "n"))
        .groupBy(*by, "hour")
        .agg(F.sum("n").alias("n"))
        .groupBy(*by)
        .agg(
            F.transform(
                F.sort_array(F.collect_list(F.struct("hour", "n"))), lambda x: x["n"]
            ).alias("hours")
        )
    )
    tracks = _counts(parts, "track_counts", ["track_key"], ["track_name", "artist_name"], by)
    artists = _counts(parts, "artist_counts", ["artist_name"], [], by)
    albums = _counts(parts, "album_counts", ALBUM_FIELDS, [], by)
    distinct = (
        tracks.groupBy(*by)
        .agg(F.count("*").alias("distinct_tracks"))
        .join(artists.groupBy(*by).agg(F.count("*").alias("distinct_artists")), by)
    )
    return (
        totals.join(hours, by)
        .join(distinct, by)
        .join(tops_and_counts(tracks, by, TRACK_FIELDS, "track"), by)
        .join(tops_and_counts(artists, by, ["artist_name"], "artist"), by)
        .join(tops_and_counts(albums, by, ALBUM_FIELDS, "album"), by)
    )


def group_rollups(rollups: DataFrame, memberships: DataFrame) -> DataFrame:
    """Per (group_id, period), from the members' :func:`user_rollups`: leaderboards, the
    group's top tracks and artists, taste-match."""
    by = ["group_id", "period"]
    members = rollups.join(memberships, "user_id")
    totals = members.groupBy(*by).agg(
        F.sum("plays").alias("plays"),
        F.round(F.sum("minutes"), 3).alias("minutes"),
        leaderboards("longest_streak"),
    )
    per_member = [*by, "user_id"]
    tracks = _entries(members, "track_counts", per_member)
    artists = _entries(members, "artist_counts", per_member)
    group_tracks = tracks.groupBy(*by, "track_key").agg(
        F.sum("plays").alias("plays"),
        F.first("track_name").alias("track_name"),
        F.first("artist_name").alias("artist_name"),
        F.count("*").alias("listeners"),
    )
    group_artists = artists.groupBy(*by, "artist_name").agg(
        F.sum("plays").alias("plays"), F.count("*").alias("listeners")
    )
    matches = taste_matches(artists, "period")
    return (
        totals.join(
            ranked_top(group_tracks, by, [*TRACK_FIELDS, "listeners"], "top_tracks"),
            by,
        )
        .join(ranked_top(group_artists, by, ["artist_name", "listeners"], "top_artists"), by)
        .join(matches, by, "left")
        .withColumn("taste_match", empty_if_missing(matches, "taste_match"))
    )


def group_day_minutes(
    summaries: DataFrame, memberships: DataFrame, affected: list[str]
) -> DataFrame:
    """``(group_id, day, minutes)`` of every day of the ``affected`` years when a member
    played: the group days' minutes, summed again from the members' days.

    ``summaries`` is what :func:`contributions` takes for ``affected``: the affected months'
    days come as days, the years' other months as month rollups, which list their days'
    minutes (``day_minutes``). Days of an affected week in a month that is not affected are
    left to their month's rollup (or, in another year, out).
    """
    month = period_key("month", F.to_date("day"))
    days = summaries.where(month.isin(affected)).select("user_id", "day", "minutes")
    months = summaries.where(is_key_of(F.col("period"), "month")).select(
        "user_id", F.inline("day_minutes")
    )
    return (
        days.unionByName(months)
        .join(memberships, "user_id")
        .groupBy("group_id", "day")
        .agg(F.round(F.sum("minutes"), 3).alias("minutes"))
    )


def group_recaps(group_rollup: DataFrame, group_minutes: DataFrame) -> DataFrame:
    """The yearly, Wrapped-style recap of each group: the year's totals, tops and leaders,
    the best-matched pair, and the group's busiest day.

    ``group_minutes`` has group_id, day (``YYYY-MM-DD``) and minutes of the group's days of
    the recapped years (:func:`group_day_minutes`).
    """
    years = group_rollup.where(is_key_of(F.col("period"), "year"))
    busiest = (
        group_minutes.withColumn("period", period_key("year", F.to_date("day")))
        .groupBy("group_id", "period")
        .agg(F.max(F.struct("minutes", "day")).alias("busiest_day"))
    )
    return years.join(busiest, ["group_id", "period"]).select(
        "group_id",
        key_year(F.col("period")).alias("year"),
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
