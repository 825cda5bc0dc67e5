"""Recommendations from the group's own listening: implicit-feedback ALS, restricted to the group.

Spotify's recommendation endpoints are closed to new apps, so auxcord recommends "tracks your
friends love that you haven't heard". Every function here is a pure DataFrame transform (or, for
:func:`fit_als`, a model fit); reading listens and writing documents happen in
:mod:`analytics.recommend.job`.

Confidence weighting. Spark's implicit ALS turns a strength ``r`` into a preference of 1 and a
confidence ``c = 1 + alpha * r`` (Hu, Koren and Volinsky 2008). auxcord feeds
``r = log(1 + plays)``: the tenth play of a track says less than the first, and one track on
repeat must not drown a user's other tastes. ``alpha`` is then chosen on a validation split.

Candidates. A user is only ever recommended tracks that a *friend* (someone sharing at least one
group with them) has played, and that the user never played. Explanations name those friends and
their play counts, so nothing from outside the user's groups can appear.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.ml.recommendation import ALSModel
    from pyspark.sql import DataFrame


@dataclass(frozen=True)
class AlsParams:
    """The hyperparameters chosen on the validation split."""

    rank: int = 32
    reg_param: float = 0.1
    alpha: float = 10.0
    max_iter: int = 10


def music_plays(listens: DataFrame) -> DataFrame:
    """Listens that can be recommended: music with a Spotify id (no podcasts, no local files)."""
    from pyspark.sql import functions as F

    return listens.where((F.col("item_type") == "track") & F.col("track_id").isNotNull())


def play_counts(listens: DataFrame) -> DataFrame:
    """``(user_id, track_id, plays)`` over music plays."""
    return (
        music_plays(listens)
        .groupBy("user_id", "track_id")
        .count()
        .withColumnRenamed("count", "plays")
    )


def split_last_days(listens: DataFrame, days: int) -> tuple[DataFrame, DataFrame]:
    """Split each user's plays into (before, last ``days`` days of that user's history)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    last = F.max("played_at").over(Window.partitionBy("user_id"))
    marked = listens.withColumn(
        "_held_out", F.col("played_at") > last - F.expr(f"INTERVAL {int(days)} DAYS")
    )
    before = marked.where(~F.col("_held_out")).drop("_held_out")
    held_out = marked.where(F.col("_held_out")).drop("_held_out")
    return before, held_out


def new_tracks(before: DataFrame, held_out: DataFrame) -> DataFrame:
    """``(user_id, track_id)`` first played in ``held_out``: what a recommender should find."""
    seen = music_plays(before).select("user_id", "track_id").distinct()
    later = music_plays(held_out).select("user_id", "track_id").distinct()
    return later.join(seen, ["user_id", "track_id"], "left_anti")


def friendships(memberships: DataFrame) -> DataFrame:
    """``(user_id, friend_id)`` for every two distinct users sharing at least one group."""
    from pyspark.sql import functions as F

    left = memberships.select("group_id", "user_id")
    right = memberships.select("group_id", F.col("user_id").alias("friend_id"))
    return (
        left.join(right, "group_id")
        .where(F.col("user_id") != F.col("friend_id"))
        .select("user_id", "friend_id")
        .distinct()
    )


def group_candidates(counts: DataFrame, friends: DataFrame) -> DataFrame:
    """``(user_id, track_id, friend_plays, friend_count)``: friends' tracks the user never had."""
    from pyspark.sql import functions as F

    friend_counts = counts.select(
        F.col("user_id").alias("friend_id"), "track_id", F.col("plays").alias("friend_plays")
    )
    return (
        friends.join(friend_counts, "friend_id")
        .groupBy("user_id", "track_id")
        .agg(
            F.sum("friend_plays").alias("friend_plays"),
            F.countDistinct("friend_id").alias("friend_count"),
        )
        .join(counts.select("user_id", "track_id"), ["user_id", "track_id"], "left_anti")
    )


def top_n(scored: DataFrame, score: str, n: int) -> DataFrame:
    """The ``n`` best-scored rows per user, ties broken by track id, with a 1-based ``rank``."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = Window.partitionBy("user_id").orderBy(F.desc(score), F.asc("track_id"))
    return (
        scored.withColumn("rank", F.row_number().over(order))
        .where(F.col("rank") <= n)
        .select("user_id", "track_id", "rank", F.col(score).cast("double").alias("score"))
    )


def popularity_recommendations(candidates: DataFrame, n: int) -> DataFrame:
    """The baseline: the friends' most played tracks the user hasn't heard."""
    return top_n(candidates, "friend_plays", n)


def _indexed(counts: DataFrame) -> tuple[DataFrame, DataFrame, DataFrame]:
    """Dense integer ids for ALS, assigned in sorted order so they are reproducible."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    users = counts.select("user_id").distinct()
    users = users.withColumn("user_idx", F.dense_rank().over(Window.orderBy("user_id")) - 1)
    tracks = counts.select("track_id").distinct()
    tracks = tracks.withColumn("track_idx", F.dense_rank().over(Window.orderBy("track_id")) - 1)
    return users, tracks, counts.join(users, "user_id").join(tracks, "track_id")


@dataclass(frozen=True)
class FittedAls:
    """A trained ALS model with the id maps it was trained with."""

    model: ALSModel
    users: DataFrame
    tracks: DataFrame


def fit_als(counts: DataFrame, params: AlsParams, seed: int) -> FittedAls:
    """Train implicit ALS on ``log(1 + plays)`` (see the module docstring for why)."""
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import functions as F

    users, tracks, indexed = _indexed(counts)
    training = indexed.select(
        "user_idx", "track_idx", F.log1p(F.col("plays").cast("double")).alias("strength")
    )
    als = ALS(
        rank=params.rank,
        maxIter=params.max_iter,
        regParam=params.reg_param,
        alpha=params.alpha,
        implicitPrefs=True,
        userCol="user_idx",
        itemCol="track_idx",
        ratingCol="strength",
        coldStartStrategy="drop",
        seed=seed,
    )
    return FittedAls(model=als.fit(training), users=users, tracks=tracks)


def als_recommendations(fitted: FittedAls, candidates: DataFrame, n: int) -> DataFrame:
    """Rank each user's group candidates by the ALS preference score."""
    indexed = candidates.join(fitted.users, "user_id").join(fitted.tracks, "track_id")
    scored = fitted.model.transform(indexed)
    return top_n(scored, "prediction", n)


def explanations(recommended: DataFrame, counts: DataFrame, friends: DataFrame) -> DataFrame:
    """For each recommended ``(user_id, track_id)``, the friends who play it and how often.

    Returns ``(user_id, track_id, friends)`` where ``friends`` is an array of
    ``struct(user_id, plays)``, most plays first. Only friends (shared-group members) appear.
    """
    from pyspark.sql import functions as F

    friend_counts = counts.select(
        F.col("user_id").alias("friend_id"), "track_id", F.col("plays").alias("friend_plays")
    )
    return (
        recommended.select("user_id", "track_id")
        .join(friends, "user_id")
        .join(friend_counts, ["friend_id", "track_id"])
        .groupBy("user_id", "track_id")
        .agg(
            F.sort_array(
                F.collect_list(
                    F.struct(
                        F.col("friend_plays").alias("plays"),
                        F.col("friend_id").alias("user_id"),
                    )
                ),
                asc=False,
            ).alias("friends")
        )
    )
