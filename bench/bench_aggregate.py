"""Daily aggregates at scale: a year for a 50-user group (about a million plays) on 2 cores.

Data: the Spotify simulator's seeded world, one year of plays of 110 users in their own
timezones: a group of 50 and twenty groups of 3 (as in bench_recommend; the simulator's users
play about 25 tracks a day, so 50 alone make about 450k plays), written to MongoDB
``listens`` in a database of its own. Then, in one run:

1. ``auxcord backfill`` over the whole year as one Spark application, end to end (Spark
   start-up, reading MongoDB, computing user and group days, storing them);
2. ``auxcord aggregate --date D`` for one day, end to end, Spark start-up included;
3. for the ratio, the last ``--compare-days`` (31) days twice: ``auxcord backfill`` over them,
   and the per-user daily figures that MongoDB itself can compute (plays, minutes, distinct
   tracks and artists, top 10 tracks per user-local day) as aggregation pipelines over the
   same days. The Spark job computes all of that and more (albums, hours, discoveries,
   streaks, group leaderboards, same songs, taste-match, rollups). A month, not the year:
   the local MongoDB server did not finish the year's pipelines in 7 minutes.

Targets (issue 5): the backfill ≤ 5 minutes; a daily run ≤ 60 s.

Needs the local stack: `auxcord stack up` first (or set the AUXCORD_* variables).

    .venv/bin/python bench/bench_aggregate.py [--days 365] [--users 50]

``--keep`` leaves the seeded, backfilled database behind; ``--daily-only DATABASE`` then
times step 2 alone on it (without re-seeding for 5 minutes), ``--compare-only DATABASE``
step 3.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa

from analytics.periods import local_days_window
from auxcord.clients import mongo_client
from auxcord.names import Collection
from auxcord.settings import Settings, get_settings
from devtools.simulator.frames import track_plays
from devtools.simulator.model import World, WorldConfig
from streaming.sinks import ensure_indexes as ensure_listens_indexes

GROUP = "bench-group"


def listens_table(world: World, until: datetime) -> pa.Table:
    """Every listed track play until ``until``, as listens documents' columns."""
    plays = track_plays(world, until)
    plays.insert(0, "_id", plays["user_id"] + ":" + plays["played_at"].astype("int64").astype(str))
    plays["item_type"] = "track"
    plays["source"] = "poll"
    return pa.Table.from_pandas(plays, preserve_index=False)


def mongo_pipeline_user_days(
    settings: Settings, database: str, first: date, last: date
) -> tuple[int, float]:
    """The user-day figures MongoDB can compute itself for local days ``[first, last]``;
    returns (user days, seconds).

    One pipeline per timezone: the local server does not take the timezone from a field.
    Plays are matched on the indexed ``played_at`` window that can hold those local days.
    """
    since, until = local_days_window(first, last)
    window = {"$gte": since, "$lt": until}
    with mongo_client(settings) as client:
        db = client[database]
        zones: dict[str, list[str]] = {}
        for user in db[Collection.USERS].find():
            zones.setdefault(user["timezone"], []).append(user["_id"])
        started = time.perf_counter()
        days = 0
        for zone, users in zones.items():
            pipeline: list[dict[str, Any]] = [
                {"$match": {"played_at": window, "user_id": {"$in": users}}},
                {
                    "$set": {
                        "day": {
                            "$dateToString": {
                                "format": "%Y-%m-%d",
                                "date": "$played_at",
                                "timezone": zone,
                            }
                        }
                    }
                },
                {"$match": {"day": {"$gte": first.isoformat(), "$lte": last.isoformat()}}},
                {
                    "$group": {
                        "_id": {"user": "$user_id", "day": "$day", "track": "$track_id"},
                        "plays": {"$sum": 1},
                        "ms": {"$sum": "$duration_ms"},
                        "artist": {"$first": "$artist_name"},
                    }
                },
                {
                    "$group": {
                        "_id": {"user": "$_id.user", "day": "$_id.day"},
                        "plays": {"$sum": "$plays"},
                        "ms": {"$sum": "$ms"},
                        "distinct_tracks": {"$sum": 1},
                        "artists": {"$addToSet": "$artist"},
                        "tracks": {"$push": {"plays": "$plays", "track": "$_id.track"}},
                    }
                },
                {
                    "$project": {
                        "plays": 1,
                        "minutes": {"$divide": ["$ms", 60000]},
                        "distinct_tracks": 1,
                        "distinct_artists": {"$size": "$artists"},
                        "top_tracks": {
                            "$slice": [
                                {"$sortArray": {"input": "$tracks", "sortBy": {"plays": -1}}},
                                10,
                            ]
                        },
                    }
                },
            ]
            days += len(list(db[Collection.LISTENS].aggregate(pipeline, allowDiskUse=True)))
        return days, time.perf_counter() - started


def run_cli(environment: dict[str, str], *args: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "from cli.main import main; main()", *args],
        env=environment,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--users", type=int, default=110)
    parser.add_argument(
        "--no-pipeline",
        action="store_true",
        help="skip the comparison with MongoDB pipelines (step 3)",
    )
    parser.add_argument("--compare-days", type=int, default=31)
    parser.add_argument(
        "--keep", action="store_true", help="keep the benchmark database (for --daily-only)"
    )
    parser.add_argument(
        "--daily-only",
        metavar="DATABASE",
        help="only time the daily run, on a database an earlier --keep run left",
    )
    parser.add_argument(
        "--compare-only",
        metavar="DATABASE",
        help="only compare with MongoDB pipelines, on a database an earlier --keep run left",
    )
    args = parser.parse_args()
    base = get_settings()
    database = args.daily_only or args.compare_only or f"bench_aggregate_{os.getpid()}"
    settings = base.model_copy(
        update={"mongodb_uri": base.mongodb_uri.replace("/auxcord?", f"/{database}?")}
    )
    end = datetime(2026, 11, 1, tzinfo=UTC)
    first = (end - timedelta(days=args.days)).date()
    last = (end - timedelta(days=1)).date()
    day = last - timedelta(days=3)
    compared = (last - timedelta(days=args.compare_days - 1), last)
    environment = {**os.environ, **settings.as_environment()}
    if args.compare_only:
        print_comparison(*compare_with_pipelines(environment, settings, database, *compared))
        return
    if args.daily_only:
        with mongo_client(settings) as client:
            plays = client[database][Collection.LISTENS].estimated_document_count()
        print(f"{plays:,} plays stored in {database}")
        daily = run_cli(environment, "aggregate", "--date", str(day))
        print(f"one daily run, end to end:           {daily:7.1f} s  (target ≤ 60 s)")
        return
    world = World(WorldConfig(users=args.users, seed=11, history_days=args.days, start=end))
    table = listens_table(world, end)
    print(f"{table.num_rows:,} plays of {args.users} users, {first} to {last}")
    from pymongoarrow.api import write

    with mongo_client(settings) as client:
        db = client[database]
        db[Collection.USERS].insert_many(
            [{"_id": u.user_id, "timezone": u.timezone} for u in world.users]
        )
        ids = [u.user_id for u in world.users]
        db[Collection.GROUPS].insert_many(
            [{"_id": GROUP, "name": GROUP, "members": ids[:50]}]
            + [
                {"_id": f"small-{n}", "name": f"small-{n}", "members": ids[start : start + 3]}
                for n, start in enumerate(range(50, len(ids) - 2, 3))
            ]
        )
        # The streaming job's indexes, which listens in production have (daily runs read a
        # day's window of played_at). Made first: the local server indexes existing data
        # far more slowly than it indexes documents as they arrive.
        ensure_listens_indexes(db)
        started = time.perf_counter()
        write(db[Collection.LISTENS], table)
        print(f"loaded into MongoDB (indexed) in {time.perf_counter() - started:.1f} s")
    try:
        backfill = run_cli(environment, "backfill", "--from", str(first), "--to", str(last))
        print(f"backfill of {args.days} days, end to end:   {backfill:7.1f} s", flush=True)
        with mongo_client(settings) as client:
            stored = client[database][Collection.USER_DAILY].count_documents({})
        daily = run_cli(environment, "aggregate", "--date", str(day))
        comparison = (
            None
            if args.no_pipeline
            else compare_with_pipelines(environment, settings, database, *compared)
        )
    finally:
        if args.keep:
            print(f"kept the database {database} (drop it when done)")
        else:
            with mongo_client(settings) as client:
                client.drop_database(database)
    print(f"backfill, target ≤ 300 s:            {backfill:7.1f} s")
    print(f"  user days stored:                  {stored:7,}")
    print(f"one daily run, end to end:           {daily:7.1f} s  (target ≤ 60 s)")
    if comparison is not None:
        print_comparison(*comparison)


def compare_with_pipelines(
    environment: dict[str, str], settings: Settings, database: str, first: date, last: date
) -> tuple[date, date, float, int, float]:
    """Spark's backfill of ``[first, last]`` on the stored state, then MongoDB's pipelines over
    the same days; returns (first, last, Spark seconds, pipeline user days, pipeline seconds)."""
    spark = run_cli(environment, "backfill", "--from", str(first), "--to", str(last))
    mongo_days, mongo_seconds = mongo_pipeline_user_days(settings, database, first, last)
    return first, last, spark, mongo_days, mongo_seconds


def print_comparison(
    first: date, last: date, spark: float, mongo_days: int, mongo_seconds: float
) -> None:
    print(f"{first} to {last}:")
    print(f"  Spark backfill, everything:   {spark:7.1f} s")
    print(f"  MongoDB pipelines, user days: {mongo_seconds:7.1f} s  ({mongo_days:,} user days)")
    print(f"  ratio MongoDB / Spark:        {mongo_seconds / spark:7.2f}")


if __name__ == "__main__":
    main()
