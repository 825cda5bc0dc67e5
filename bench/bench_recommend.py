"""Recommendations at scale: train, evaluate and score on about a million plays, on 2 cores.

Data: the Spotify simulator's seeded world (planted taste clusters), a 50-user group plus 20
groups of 3, one year each. Targets (issue 6): the whole job (validation grid, test evaluation,
final training, scoring for every member) in at most 2 minutes, and ALS hit-rate@10 at least
1.5x the popularity-in-group baseline.

    .venv/bin/python bench/bench_recommend.py [--days 365]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime

import pandas as pd

from analytics.recommend.job import recommend
from auxcord.settings import load_settings
from auxcord.spark import build_spark_session
from devtools.simulator.frames import track_plays
from devtools.simulator.model import World, WorldConfig

MAIN_GROUP = 50
SMALL_GROUPS, SMALL_SIZE = 20, 3


def listens_frame(world: World, until: datetime) -> pd.DataFrame:
    """Every listed track play until ``until``, with the columns recommendations read."""
    plays = track_plays(world, until)
    plays["item_type"] = "track"
    plays["album_image_url"] = None
    return plays[
        [
            "user_id",
            "track_id",
            "played_at",
            "item_type",
            "track_name",
            "artist_name",
            "album_name",
            "album_image_url",
        ]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    args = parser.parse_args()
    users = MAIN_GROUP + SMALL_GROUPS * SMALL_SIZE
    start = datetime(2026, 11, 1, tzinfo=UTC)
    world = World(WorldConfig(users=users, seed=11, history_days=args.days, start=start))
    frame = listens_frame(world, start)
    memberships = [("main", u.user_id) for u in world.users[:MAIN_GROUP]] + [
        (f"small-{(i - MAIN_GROUP) // SMALL_SIZE}", u.user_id)
        for i, u in enumerate(world.users)
        if i >= MAIN_GROUP
    ]
    print(f"{len(frame):,} plays, {users} users in {1 + SMALL_GROUPS} groups")

    with tempfile.TemporaryDirectory() as tmp:
        spark_started = time.perf_counter()
        spark = build_spark_session(load_settings(data_dir=tmp), "bench-recommend")
        listens = spark.createDataFrame(frame).cache()
        groups = spark.createDataFrame(memberships, "group_id string, user_id string")
        listens.count()
        print(f"Spark start and load: {time.perf_counter() - spark_started:.1f} s")
        started = time.perf_counter()
        run = recommend(listens, groups, n=20, seed=42, now=start)
        elapsed = time.perf_counter() - started
        spark.stop()
    e = run.evaluation
    if e is None:
        # A year of plays for hundreds of users never falls back; say so rather than crash.
        print(f"no evaluation: the run fell back to popularity ({run.summary()})")
        return
    ratio = e.als.hit_rate / e.popularity.hit_rate if e.popularity.hit_rate else float("inf")
    print(f"train + evaluate + score: {elapsed:.1f} s (target <= 120 s)")
    print(
        f"ALS        hit-rate@10 {e.als.hit_rate:.3f}  NDCG@10 {e.als.ndcg:.3f}  "
        f"coverage {e.als.coverage:.3f}"
    )
    print(
        f"popularity hit-rate@10 {e.popularity.hit_rate:.3f}  NDCG@10 {e.popularity.ndcg:.3f}  "
        f"coverage {e.popularity.coverage:.3f}"
    )
    print(
        f"ALS / popularity hit-rate: {ratio:.2f}x (target >= 1.5x); chosen {e.chosen}; "
        f"{e.users_evaluated} users evaluated"
    )


if __name__ == "__main__":
    main()
