"""Per-user and per-group daily statistics: pure DataFrame transforms, no I/O.

A play belongs to the day on its listener's own clock: each user's timezone (from their
account) turns ``played_at`` (the end of the play, UTC) into a local day and hour. Only music
counts here (``item_type == "track"``); podcasts are kept apart.

Everything a day's figures depend on lies on or before that day (first plays, streaks), so the
result for a day is the same whether it is computed alone or inside a backfill over a range.
What a range needs from the days before it (the tracks and artists already heard, the streak
running into it) is a :class:`PriorHistory`, built from the stored days and rollups, so a run reads
the plays of its own days only, not the whole history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING

from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window

from auxcord.periods import key_prefix, period_key
from auxcord.trackkeys import LOCAL_PREFIX, LOCAL_SEPARATOR, casefold_table

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

TOP_N = 10
"""How many top tracks, artists and albums a day keeps."""

TRACK_FIELDS = ["track_key", "track_name", "artist_name"]
"""A track's key and the names shown with it, in top lists and counts."""
ALBUM_FIELDS = ["album_name", "artist_name"]
"""An album's key (its name and artist), in top lists and counts."""


def local_listens(listens: DataFrame, users: DataFrame) -> DataFrame:
    """Music listens with the listener's local ``day`` and ``hour``, time played (``ms``) and
    the track's key.

    ``users`` has ``user_id`` and ``timezone`` (an IANA name); a user without one counts in UTC.
    Time played is ``ms_played`` where the source knows it (exports), else the track's
    duration (Spotify lists only plays it counted, of at least 30 s).
    """
    zone = F.coalesce(F.col("timezone"), F.lit("UTC"))
    local = F.from_utc_timestamp(F.col("played_at"), zone)
    return (
        listens.where(F.col("item_type").isNull() | (F.col("item_type") == "track"))
        .join(users.select("user_id", "timezone"), "user_id", "left")
        .select(
            "user_id",
            track_key().alias("track_key"),
            "track_name",
            "artist_name",
            F.coalesce("album_name", F.lit("")).alias("album_name"),
            F.coalesce("ms_played", "duration_ms").alias("ms"),
            F.to_date(local).alias("day"),
            F.hour(local).alias("hour"),
        )
    )


def track_key() -> Column:
    """A track's identity (:mod:`auxcord.trackkeys`): its Spotify id, or for local files
    ``local:`` and their case-folded artist and name, the key their events are named by."""
    return F.coalesce(
        F.col("track_id"),
        F.concat(
            F.lit(LOCAL_PREFIX),
            casefolded(F.col("artist_name")),
            F.lit(LOCAL_SEPARATOR),
            casefolded(F.col("track_name")),
        ),
    )


def casefolded(text: Column) -> Column:
    """``text`` case-folded exactly as Python's :meth:`str.casefold` folds it, from
    :func:`auxcord.trackkeys.casefold_table`: a ``translate`` of the characters that fold to
    one, then a ``replace`` of each that folds to several. Built-in expressions, no Python
    UDF; :func:`track_key` only evaluates it for local files."""
    single, several = casefold_table()
    folded = F.translate(text, "".join(single), "".join(single.values()))
    for char, replacement in several.items():
        folded = F.replace(folded, F.lit(char), F.lit(replacement))
    return folded


def top_entries(fields: list[str], count: str = "plays", size: int = TOP_N) -> Column:
    """An aggregate: the ``size`` rows of the group with the highest ``count`` as an array of
    ``{rank, fields…, count}``, ties broken by the fields so the order is deterministic. One
    sort of the collected rows: no window and no join."""
    ordered = F.sort_array(F.collect_list(F.struct((-F.col(count)).alias("order"), *fields, count)))
    return F.transform(
        F.slice(ordered, 1, size),
        lambda entry, index: F.struct(
            (index + 1).alias("rank"),
            *[entry[field].alias(field) for field in fields],
            entry[count].alias(count),
        ),
    )


def every_entry(fields: list[str]) -> Column:
    """An aggregate: every row of the group as an array of ``{fields…, plays}``. Rollups add
    these up, so a month's top tracks are exact, not a merge of daily top tens."""
    return F.sort_array(F.collect_list(F.struct(*fields, "plays")))


def ranked_top(counted: DataFrame, by: list[str], fields: list[str], name: str) -> DataFrame:
    """Per ``by``: :func:`top_entries` of ``counted``, as ``name``."""
    return counted.groupBy(*by).agg(top_entries(fields).alias(name))


def tops_and_counts(counted: DataFrame, by: list[str], fields: list[str], kind: str) -> DataFrame:
    """Per ``by``: ``top_{kind}s`` (:func:`top_entries`) and ``{kind}_counts``
    (:func:`every_entry`) of ``counted``, in one aggregation."""
    return counted.groupBy(*by).agg(
        top_entries(fields).alias(f"top_{kind}s"), every_entry(fields).alias(f"{kind}_counts")
    )


def _count(plays: DataFrame, keys: list[str], fields: list[str]) -> DataFrame:
    return plays.groupBy("user_id", "day", *keys).agg(
        F.count("*").alias("plays"), *[F.first(f).alias(f) for f in fields if f not in keys]
    )


@dataclass(frozen=True)
class PriorHistory:
    """What discoveries and streaks of a range of days need from the days before it.

    ``tracks`` (user_id, track_key) and ``artists`` (user_id, artist_name): everything each
    user heard before the range; ``streaks`` (user_id, streak): the run of active days ending
    the day before it (users without one are absent).
    """

    tracks: DataFrame
    artists: DataFrame
    streaks: DataFrame


def prior_history_from_summaries(summaries: DataFrame, first: date) -> PriorHistory:
    """The :class:`PriorHistory` of a range starting on ``first``, from what was stored before it.

    ``summaries`` holds stored user days (``day`` as ``YYYY-MM-DD``) and month and year
    rollups (``period``), as :func:`analytics.sources.summaries_schema` reads them; together
    those before ``first`` must cover every earlier day (later ones are ignored). Their
    ``track_counts`` and ``artist_counts`` list every track and artist heard, and the day
    before ``first`` carries the streak running into the range. Months and years make this
    proportional to the range, not to the whole history.
    """
    day, period = F.col("day"), F.col("period")
    earlier = summaries.where(
        (day < F.lit(first.isoformat()))
        | (period.startswith(key_prefix("month")) & (period < F.lit(period_key("month", first))))
        | (period.startswith(key_prefix("year")) & (period < F.lit(period_key("year", first))))
    )
    tracks = earlier.select("user_id", F.explode("track_counts.track_key").alias("track_key"))
    artists = earlier.select("user_id", F.explode("artist_counts.artist_name").alias("artist_name"))
    day_before = summaries.where(day == F.lit((first - timedelta(days=1)).isoformat()))
    return PriorHistory(
        tracks.distinct(),
        artists.distinct(),
        day_before.select("user_id", F.col("streak").cast(T.IntegerType()).alias("streak")),
    )


def as_summaries(frame: DataFrame, schema: T.StructType) -> DataFrame:
    """:func:`user_daily_stats` or :func:`analytics.rollups.user_rollups` rows in the shape
    stored days and rollups are read back in (``schema``,
    :func:`analytics.sources.summaries_schema` as Spark reads it), so that new and stored ones
    make one frame: ``day`` as ``YYYY-MM-DD``, columns the rows lack null.
    """
    if "day" in frame.columns:
        frame = frame.withColumn("day", F.date_format("day", "yyyy-MM-dd"))
    return frame.select(
        *[
            (F.col(field.name) if field.name in frame.columns else F.lit(None))
            .cast(field.dataType)
            .alias(field.name)
            for field in schema
        ]
    )


def first_days(plays: DataFrame, before: PriorHistory | None) -> DataFrame:
    """Per user: how many tracks and artists were first heard on each local day of ``plays``,
    leaving out those heard ``before``."""
    tracks = plays.groupBy("user_id", "track_key").agg(F.min("day").alias("day"))
    artists = plays.groupBy("user_id", "artist_name").agg(F.min("day").alias("day"))
    if before is not None:
        tracks = tracks.join(before.tracks, ["user_id", "track_key"], "left_anti")
        artists = artists.join(before.artists, ["user_id", "artist_name"], "left_anti")
    return (
        tracks.groupBy("user_id", "day")
        .agg(F.count("*").alias("new_tracks"))
        .join(
            artists.groupBy("user_id", "day").agg(F.count("*").alias("new_artists")),
            ["user_id", "day"],
            "full",
        )
    )


def streaks(plays: DataFrame, first: date, before: PriorHistory | None) -> DataFrame:
    """Per user and active day of ``plays`` (which start on ``first``): how many days in a row,
    ending that day, had a play; a run starting on ``first`` continues ``before``'s."""
    active = plays.select("user_id", "day").distinct()
    order = Window.partitionBy("user_id").orderBy("day")
    # Days in one run share day - row_number: the classic gaps-and-islands grouping.
    island = F.date_sub(F.col("day"), F.row_number().over(order))
    runs = active.withColumn("island", island)
    in_run = Window.partitionBy("user_id", "island").orderBy("day")
    counted = runs.select(
        "user_id",
        "day",
        F.row_number().over(in_run).alias("streak"),
        F.min("day").over(Window.partitionBy("user_id", "island")).alias("run_start"),
    )
    if before is None:
        return counted.select("user_id", "day", "streak")
    carried = F.when(F.col("run_start") == F.lit(first), F.coalesce("carried", F.lit(0)))
    return counted.join(
        before.streaks.withColumnRenamed("streak", "carried"), "user_id", "left"
    ).select("user_id", "day", (F.col("streak") + carried.otherwise(0)).alias("streak"))


def user_daily_stats(
    history: DataFrame, first: date, last: date, before: PriorHistory | None
) -> DataFrame:
    """One row per user and local day in ``[first, last]`` with a play.

    ``history`` is :func:`local_listens` output holding (at least) every play of the range;
    plays outside it are ignored. ``before`` is what the users heard before ``first`` (None:
    nothing). Columns: user_id, day, plays, minutes, distinct_tracks, distinct_artists,
    top_tracks, top_artists, top_albums (arrays of ``{rank, …, plays}``), track_counts,
    artist_counts and album_counts (every one, for exact rollups), hours (24 play counts,
    local), new_tracks, new_artists, streak.
    """
    in_range = (F.col("day") >= F.lit(first)) & (F.col("day") <= F.lit(last))
    plays = history.where(in_range)
    totals = plays.groupBy("user_id", "day").agg(
        F.count("*").alias("plays"),
        F.round(F.sum("ms") / 60_000.0, 3).alias("minutes"),
        F.countDistinct("track_key").alias("distinct_tracks"),
        F.countDistinct("artist_name").alias("distinct_artists"),
    )
    by_hour = plays.groupBy("user_id", "day", "hour").count()
    hours = by_hour.groupBy("user_id", "day").agg(
        F.map_from_entries(F.collect_list(F.struct("hour", "count"))).alias("by_hour")
    )
    hour_array = F.transform(
        F.sequence(F.lit(0), F.lit(23)), lambda h: F.coalesce(F.col("by_hour")[h], F.lit(0))
    )
    by = ["user_id", "day"]
    tracks = _count(plays, ["track_key"], TRACK_FIELDS)
    artists = _count(plays, ["artist_name"], ["artist_name"])
    albums = _count(plays, ALBUM_FIELDS, ALBUM_FIELDS)
    return (
        totals.join(tops_and_counts(tracks, by, TRACK_FIELDS, "track"), by)
        .join(tops_and_counts(artists, by, ["artist_name"], "artist"), by)
        .join(tops_and_counts(albums, by, ALBUM_FIELDS, "album"), by)
        .join(
            hours.select(
                "user_id", "day", hour_array.cast(T.ArrayType(T.LongType())).alias("hours")
            ),
            ["user_id", "day"],
        )
        .join(first_days(plays, before), ["user_id", "day"], "left")
        .join(streaks(plays, first, before), ["user_id", "day"], "left")
        .select(
            "user_id",
            "day",
            "plays",
            "minutes",
            "distinct_tracks",
            "distinct_artists",
            "top_tracks",
            "top_artists",
            "top_albums",
            "track_counts",
            "artist_counts",
            "album_counts",
            "hours",
            F.coalesce("new_tracks", F.lit(0)).alias("new_tracks"),
            F.coalesce("new_artists", F.lit(0)).alias("new_artists"),
            "streak",
        )
    )


def _ranked(values: Column) -> Column:
    """``collect_list`` of ``struct(value, …)`` sorted by value, highest first."""
    return F.sort_array(F.collect_list(values), asc=False)


def leaderboards(streak: str) -> Column:
    """An aggregate over members' rows (``user_id`` and their figures): ``leaderboards``, the
    members ranked by minutes, plays, discoveries (``new_tracks``) and ``streak`` (a day's
    ``streak``, a period's ``longest_streak``). Group days and group rollups both use it."""
    boards = {"minutes": "minutes", "plays": "plays", "discoveries": "new_tracks", "streak": streak}
    return F.struct(
        *[
            _ranked(F.struct(F.col(column).alias("value"), "user_id")).alias(board)
            for board, column in boards.items()
        ]
    ).alias("leaderboards")


def group_leaderboards(user_daily: DataFrame, memberships: DataFrame) -> DataFrame:
    """Per (group_id, day): members ranked by minutes, plays, discoveries and streak."""
    joined = user_daily.join(memberships, "user_id")
    return joined.groupBy("group_id", "day").agg(
        leaderboards("streak"),
        F.count("*").alias("active_members"),
        F.round(F.sum("minutes"), 3).alias("minutes"),
        F.sum("plays").alias("plays"),
    )


def member_counts(user_daily: DataFrame, memberships: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Each member's track and artist counts of each day, per group: ``(group_id, day,
    user_id, track_key, track_name, artist_name, plays)`` and ``(group_id, day, user_id,
    artist_name, plays)``, from the user days' full counts (``track_counts``,
    ``artist_counts``), which hold exactly what counting the plays would give."""
    members = user_daily.join(memberships, "user_id")
    by = ["group_id", "day", "user_id"]
    tracks = members.select(*by, F.inline("track_counts"))
    artists = members.select(*by, F.inline("artist_counts"))
    return tracks, artists


def group_tops(tracks: DataFrame, artists: DataFrame) -> DataFrame:
    """Per (group_id, day): the group's TOP_N tracks and artists, from
    :func:`member_counts`."""
    by = ["group_id", "day"]

    def top(counts: DataFrame, keys: list[str], name: str) -> DataFrame:
        counted = counts.groupBy(*by, *keys).agg(
            F.sum("plays").alias("plays"), F.count("*").alias("listeners")
        )
        return ranked_top(counted, by, [*keys, "listeners"], name)

    return top(tracks, TRACK_FIELDS, "top_tracks").join(
        top(artists, ["artist_name"], "top_artists"), by
    )


def same_songs(tracks: DataFrame) -> DataFrame:
    """Per (group_id, day): tracks that two or more members played, who played them and how
    often, most shared first (``tracks`` from :func:`member_counts`)."""
    shared = (
        tracks.groupBy("group_id", "day", "track_key", "track_name", "artist_name")
        .agg(
            F.count("*").alias("listeners"),
            F.sum("plays").alias("plays"),
            F.sort_array(F.collect_list(F.struct("user_id", "plays"))).alias("members"),
        )
        .where("listeners >= 2")
    )
    return shared.groupBy("group_id", "day").agg(
        F.sort_array(
            F.collect_list(
                F.struct("listeners", "plays", "track_key", "track_name", "artist_name", "members")
            ),
            asc=False,
        ).alias("same_songs")
    )


def taste_match(counts: DataFrame, period: list[str]) -> DataFrame:
    """Pairwise taste-match between the members of each group, per ``period`` columns.

    ``counts`` has group_id, the period columns, user_id, artist_name and plays.

    The score is the cosine similarity of two members' artist play-count vectors:
    ``Σ a·b / (|a| |b|)``, 0 (nothing in common) to 1 (the same artists in the same
    proportions). Artists rather than tracks, because friends share taste in artists long
    before they play the same songs. Each pair carries the artists behind the score: the five
    with the most plays by both (the smaller of the two counts).
    """
    norms = counts.groupBy("group_id", *period, "user_id").agg(
        F.sqrt(F.sum(F.col("plays") * F.col("plays"))).alias("norm")
    )
    a, b = counts.alias("a"), counts.alias("b")
    keys = ["group_id", *period, "artist_name"]
    pairs = a.join(b, [F.col(f"a.{k}") == F.col(f"b.{k}") for k in keys]).where(
        F.col("a.user_id") < F.col("b.user_id")
    )
    shared = pairs.select(
        *[F.col(f"a.{k}").alias(k) for k in ["group_id", *period]],
        F.col("a.user_id").alias("user_a"),
        F.col("b.user_id").alias("user_b"),
        F.col("a.artist_name").alias("artist_name"),
        (F.col("a.plays") * F.col("b.plays")).alias("product"),
        F.least("a.plays", "b.plays").alias("together"),
    )
    dots = shared.groupBy("group_id", *period, "user_a", "user_b").agg(
        F.sum("product").alias("dot"),
        top_entries(["artist_name"], count="together", size=5).alias("shared_artists"),
    )
    na = norms.select(
        "group_id", *period, F.col("user_id").alias("user_a"), F.col("norm").alias("na")
    )
    nb = norms.select(
        "group_id", *period, F.col("user_id").alias("user_b"), F.col("norm").alias("nb")
    )
    scored = dots.join(na, ["group_id", *period, "user_a"]).join(
        nb, ["group_id", *period, "user_b"]
    )
    return scored.select(
        "group_id",
        *period,
        "user_a",
        "user_b",
        F.round(F.col("dot") / (F.col("na") * F.col("nb")), 6).alias("score"),
        "shared_artists",
    )


def taste_matches(counts: DataFrame, period: str) -> DataFrame:
    """Per (group_id, ``period``): ``taste_match``, every pair of :func:`taste_match` of
    ``counts``, best matched first. Group days and group rollups both use it."""
    return (
        taste_match(counts, [period])
        .groupBy("group_id", period)
        .agg(
            F.sort_array(
                F.collect_list(F.struct("score", "user_a", "user_b", "shared_artists")), asc=False
            ).alias("taste_match")
        )
    )


def group_daily_stats(
    user_daily: DataFrame, memberships: DataFrame, first: date, last: date
) -> DataFrame:
    """One row per group and local day in ``[first, last]`` when a member played.

    Built from the members' user days alone (:func:`user_daily_stats` rows, or stored ones
    read back with ``day`` as a date): their figures, discoveries and streaks for the
    leaderboards, their full track and artist counts for the tops, same songs and
    taste-match. So a group's day can be rebuilt when one member's day changed, from that
    day and the others' stored days, without their plays.

    ``memberships`` has ``group_id`` and ``user_id``. Columns: group_id, day, active_members,
    minutes, plays, leaderboards, top_tracks, top_artists, same_songs, taste_match.
    """
    days = user_daily.where((F.col("day") >= F.lit(first)) & (F.col("day") <= F.lit(last)))
    tracks, artists = member_counts(days, memberships)
    matches = taste_matches(artists, "day")
    shared = same_songs(tracks)
    empty: Column = F.array().cast(
        T.ArrayType(shared.schema["same_songs"].dataType.elementType)  # type: ignore[attr-defined]
    )
    return (
        group_leaderboards(days, memberships)
        .join(group_tops(tracks, artists), ["group_id", "day"])
        .join(shared, ["group_id", "day"], "left")
        .join(matches, ["group_id", "day"], "left")
        .select(
            "group_id",
            "day",
            "active_members",
            "minutes",
            "plays",
            "leaderboards",
            "top_tracks",
            "top_artists",
            F.coalesce("same_songs", empty).alias("same_songs"),
            empty_if_missing(matches, "taste_match"),
        )
    )


def empty_if_missing(frame: DataFrame, column: str) -> Column:
    """``column`` of a left-joined ``frame``, with an empty array where the join found nothing
    (a group where one member listened has no pairs): the documents keep one shape, and Arrow
    refuses nulls in a column Spark declared non-nullable."""
    return F.coalesce(F.col(column), F.array().cast(frame.schema[column].dataType)).alias(column)
