"""The daily aggregates through MongoDB: stored idempotently, backfills equal daily runs."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from analytics.aggregate import aggregate_days
from auxcord.events import ListenEvent
from auxcord.names import Collection
from auxcord.settings import Settings
from tests.analytics.test_daily import (
    GROUPS,
    LAST,
    START,
    ZONES,
    make_plays,
    reference_user_days,
)

ROOT = Path(__file__).resolve().parents[2]

if TYPE_CHECKING:
    from pymongo.database import Database
    from pyspark.sql import SparkSession


def seed(db: Database[dict[str, Any]]) -> None:
    for user, zone in ZONES.items():
        db[Collection.USERS].insert_one({"_id": user, "display_name": user, "timezone": zone})
    for group, members in GROUPS.items():
        db[Collection.GROUPS].insert_one({"_id": group, "name": group, "members": members})
    documents = []
    for play in make_plays():
        event = ListenEvent.from_dict({**play, "source": "poll"})
        documents.append(event.to_document())
    db[Collection.LISTENS].insert_many(documents)


DAYS = (Collection.USER_DAILY, Collection.GROUP_DAILY)
EVERYTHING = (*DAYS, Collection.USER_ROLLUPS, Collection.GROUP_ROLLUPS, Collection.GROUP_RECAPS)


def snapshot(
    db: Database[dict[str, Any]], names: tuple[Collection, ...] = DAYS
) -> dict[str, list[dict[str, Any]]]:
    return {name: sorted(db[name].find(), key=lambda d: d["_id"]) for name in names}


def test_a_day_is_stored_once_indexed_and_rerunning_it_changes_nothing(
    spark: SparkSession, test_settings: Settings, mongo_db: Database[dict[str, Any]]
) -> None:
    seed(mongo_db)
    day = date(2026, 3, 8)
    first = aggregate_days(test_settings, day, day, spark=spark)
    assert first.user_days == 4 and first.group_days == 2
    once = snapshot(mongo_db)
    aggregate_days(test_settings, day, day, spark=spark)
    assert snapshot(mongo_db) == once, "a re-run replaces the day's documents, identically"
    ana = mongo_db[Collection.USER_DAILY].find_one({"_id": "ana:2026-03-08"})
    assert ana is not None and ana["hours"][23] >= 1, "23:59 in New York counts on 8 March"
    board = mongo_db[Collection.GROUP_DAILY].find_one({"_id": "g1:2026-03-08"})
    assert board is not None
    assert [entry["user_id"] for entry in board["leaderboards"]["minutes"]]
    # The run also made the indexes the dashboard's reads use.
    assert_the_dashboard_reads_are_indexed(mongo_db)


def test_a_backfill_stores_what_daily_runs_store(
    spark: SparkSession, test_settings: Settings, mongo_db: Database[dict[str, Any]]
) -> None:
    from analytics.periods import affected_periods

    seed(mongo_db)
    aggregate_days(test_settings, START, date(2026, 3, 29), spark=spark)
    # Day by day across the end of March: each run builds on the stored days and rollups.
    first, last = date(2026, 3, 30), date(2026, 4, 1)
    for offset in range((last - first).days + 1):
        day = first + timedelta(days=offset)
        aggregate_days(test_settings, day, day, spark=spark)
    stored = snapshot(mongo_db, EVERYTHING)
    # Each run reads only its own day's plays and carries on from the stored days before it,
    # to the same discoveries and streaks as the whole history gives.
    expected = reference_user_days(make_plays())
    # The reference covers March.
    carried = [d for d in stored[Collection.USER_DAILY] if str(first) <= d["day"] <= str(LAST)]
    assert len(carried) == sum(1 for _, day in expected if first <= day <= LAST)
    for document in carried:
        want = expected[(document["user_id"], date.fromisoformat(document["day"]))]
        assert (document["new_tracks"], document["streak"]) == (
            want["new_tracks"],
            want["streak"],
        ), document["_id"]
    assert any(document["streak"] > 4 for document in carried), "streaks run into the range"
    # The same range as one backfill, on the days and rollups stored before it.
    mongo_db[Collection.USER_DAILY].delete_many({"day": {"$gte": str(first), "$lte": str(last)}})
    mongo_db[Collection.GROUP_DAILY].delete_many({"day": {"$gte": str(first), "$lte": str(last)}})
    for name in (Collection.USER_ROLLUPS, Collection.GROUP_ROLLUPS):
        mongo_db[name].delete_many({"period": {"$in": affected_periods(first, last)}})
    mongo_db[Collection.GROUP_RECAPS].delete_many({})
    aggregate_days(test_settings, first, last, spark=spark)
    assert snapshot(mongo_db, EVERYTHING) == stored
    # And the whole history as one backfill from nothing: rollups built from month and year
    # rollups equal those summed from every day.
    for name in EVERYTHING:
        mongo_db[name].delete_many({})
    aggregate_days(test_settings, START, last, spark=spark)
    assert snapshot(mongo_db, EVERYTHING) == stored


def assert_the_dashboard_reads_are_indexed(db: Database[dict[str, Any]]) -> None:
    reads = [
        (Collection.USER_DAILY, {"user_id": "ana"}, [("day", -1)]),
        (Collection.GROUP_DAILY, {"group_id": "g1", "day": "2026-03-08"}, None),
    ]
    for collection, query, order in reads:
        cursor = db[collection].find(query)
        if order:
            cursor = cursor.sort(order)
        plan = str(cursor.explain()["queryPlanner"]["winningPlan"])
        assert "IXSCAN" in plan and "COLLSCAN" not in plan, (collection, plan)


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **settings.as_environment()}
    # With Spark's own settings, not the small-data ones of the other tests' Spark processes.
    environment.pop("PYSPARK_SUBMIT_ARGS", None)
    return subprocess.run(
        [sys.executable, "-c", "from cli.main import main; main()", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_bad_dates_are_one_clear_line(test_settings: Settings) -> None:
    result = run_cli(test_settings, "backfill", "--from", "2026-03-10", "--to", "yesterday")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "--to expects a date as YYYY-MM-DD, got 'yesterday'" in result.stderr
    result = run_cli(test_settings, "backfill", "--from", "2026-03-10", "--to", "2026-03-01")
    assert result.returncode == 1 and "is before --from" in result.stderr


def run_cli_here(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
) -> tuple[int, str, str]:
    """``auxcord ARGS`` run by the CLI's own entry point in this process, so that a Spark
    command gets the session's SparkSession instead of starting a JVM of its own: the exit
    code, stdout and stderr."""
    from auxcord.settings import get_settings
    from cli.main import main

    for name, value in {**settings.as_environment(), "COLUMNS": "200"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", ["auxcord", *args])
    get_settings.cache_clear()
    try:
        main()
        code = 0
    except SystemExit as exit:
        code = int(exit.code or 0)
    finally:
        get_settings.cache_clear()
    out, err = capsys.readouterr()
    return code, out, err


def test_backfill_and_sql_from_the_command_line(
    spark: SparkSession,
    test_settings: Settings,
    mongo_db: Database[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seed(mongo_db)
    # The backfill as a user runs it: a process of its own, starting its own Spark.
    result = run_cli(
        test_settings, "backfill", "--from", "2026-03-07", "--to", "2026-03-09", "--group", "g2"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "3 day(s) 2026-03-07 to 2026-03-09" in result.stdout
    assert {doc["group_id"] for doc in mongo_db[Collection.GROUP_DAILY].find()} == {"g2"}
    assert {doc["user_id"] for doc in mongo_db[Collection.USER_DAILY].find()} == {"cy", "dee"}
    # `auxcord sql` in this process, on the session's Spark (a JVM start less each).
    query = "SELECT group_id, day, plays FROM group_daily ORDER BY day"
    code, out, err = run_cli_here(test_settings, monkeypatch, capsys, "sql", query)
    assert code == 0, err[-2000:]
    assert "2026-03-07" in out and "g2" in out
    code, out, err = run_cli_here(
        test_settings, monkeypatch, capsys, "sql", "SELECT nothing FROM nowhere"
    )
    assert code == 1 and "Traceback" not in err and "Py4JJavaError" not in err, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("error: the query failed"), err


def test_rollups_add_up_the_days_exactly(
    spark: SparkSession, test_settings: Settings, mongo_db: Database[dict[str, Any]]
) -> None:
    from collections import Counter

    from tests.analytics.test_daily import local_day

    seed(mongo_db)
    aggregate_days(test_settings, date(2026, 3, 1), date(2026, 3, 31), spark=spark)
    month = mongo_db[Collection.USER_ROLLUPS].find_one({"_id": "ana:month:2026-03"})
    assert month is not None
    plays = [
        p
        for p in make_plays()
        if p["user_id"] == "ana" and p["item_type"] == "track" and local_day(p)[0].month == 3
    ]
    assert month["plays"] == len(plays)
    counts = Counter(p["track_id"] for p in plays)
    want = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    assert [(t["track_key"], t["plays"]) for t in month["top_tracks"]] == want
    days = list(
        mongo_db[Collection.USER_DAILY].find({"user_id": "ana", "day": {"$regex": "^2026-03"}})
    )
    assert month["active_days"] == len(days)
    assert month["longest_streak"] == max(day["streak"] for day in days)
    assert sum(month["hours"]) == month["plays"]
    week = mongo_db[Collection.USER_ROLLUPS].find_one({"_id": "ana:week:2026-03-09"})
    assert week is not None and week["plays"] == sum(
        d["plays"] for d in days if "2026-03-09" <= d["day"] <= "2026-03-15"
    )
    group = mongo_db[Collection.GROUP_ROLLUPS].find_one({"_id": "g1:month:2026-03"})
    assert group is not None
    assert {e["user_id"] for e in group["leaderboards"]["minutes"]} == set(GROUPS["g1"])
    assert {(m["user_a"], m["user_b"]) for m in group["taste_match"]} <= {
        ("ana", "ben"),
        ("ana", "cy"),
        ("ben", "cy"),
    }
    recap = mongo_db[Collection.GROUP_RECAPS].find_one({"_id": "g1:2026"})
    assert recap is not None and recap["best_match"]["score"] > 0
    # The busiest day, summed from the members' days and months, is the group day with the
    # most minutes.
    group_days = mongo_db[Collection.GROUP_DAILY].find(
        {"group_id": "g1", "day": {"$regex": "^2026"}}
    )
    busiest = max(group_days, key=lambda d: (d["minutes"], d["day"]))
    assert recap["busiest_day"] == {"minutes": busiest["minutes"], "day": busiest["day"]}
    # Re-running one day recomputes the periods holding it, identically.
    before = list(mongo_db[Collection.USER_ROLLUPS].find().sort("_id"))
    aggregate_days(test_settings, date(2026, 3, 12), date(2026, 3, 12), spark=spark)
    assert list(mongo_db[Collection.USER_ROLLUPS].find().sort("_id")) == before


def test_the_data_lake_gives_the_same_days_as_mongodb(
    spark: SparkSession, test_settings: Settings, mongo_db: Database[dict[str, Any]]
) -> None:
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    from auxcord.clients import ensure_bucket, gcs_bucket
    from streaming.parse import nullable
    from streaming.sinks import SliceTag, write_raw_listens

    settings = test_settings.model_copy(update={"gcs_bucket": f"lake-{os.getpid()}"})
    ensure_bucket(settings)
    seed(mongo_db)
    events = [ListenEvent.from_dict({**p, "source": "poll"}).model_dump() for p in make_plays()]
    schema = to_arrow_schema(nullable(ListenEvent.spark_schema()), timezone="UTC")
    write_raw_listens(
        gcs_bucket(settings), pa.Table.from_pylist(events, schema=schema), SliceTag("seed", 0, 0)
    )
    first, last = date(2026, 3, 6), date(2026, 3, 12)
    aggregate_days(settings, first, last, spark=spark)
    from_mongodb = snapshot(mongo_db)
    aggregate_days(settings, first, last, source="gcs", spark=spark)
    assert snapshot(mongo_db) == from_mongodb


def test_a_user_scoped_run_stores_what_a_full_run_stores(
    spark: SparkSession, test_settings: Settings, mongo_db: Database[dict[str, Any]]
) -> None:
    """An import's re-aggregation: only the importing user's days are recomputed, their
    groups' days and rollups are rebuilt from the other members' stored days, and the result
    is what a full run over everything stores."""
    from datetime import UTC, datetime

    seed(mongo_db)
    # Ana's plays of 10 to 20 March arrive later, from her export.
    span = {"$gte": datetime(2026, 3, 10, tzinfo=UTC), "$lt": datetime(2026, 3, 20, tzinfo=UTC)}
    held = {"user_id": "ana", "played_at": span}
    exported = list(mongo_db[Collection.LISTENS].find(held))
    assert len(exported) > 20
    mongo_db[Collection.LISTENS].delete_many(held)
    last = date(2026, 4, 1)
    aggregate_days(test_settings, START, last, spark=spark)
    mongo_db[Collection.LISTENS].insert_many(exported)
    # Marks on what the scoped run must leave alone: the other members' days (read, not
    # recomputed) and the days of a group Ana is not in.
    untouched = [
        (Collection.USER_DAILY, {"user_id": {"$in": ["ben", "cy", "dee"]}}),
        (Collection.USER_ROLLUPS, {"user_id": {"$in": ["ben", "cy", "dee"]}}),
        (Collection.GROUP_DAILY, {"group_id": "g2"}),
        (Collection.GROUP_ROLLUPS, {"group_id": "g2"}),
    ]
    for collection, query in untouched:
        assert mongo_db[collection].update_many(query, {"$set": {"mark": 1}}).modified_count
    result = aggregate_days(test_settings, date(2026, 3, 9), last, user="ana", spark=spark)
    assert result.user_days == mongo_db[Collection.USER_DAILY].count_documents(
        {"user_id": "ana", "day": {"$gte": "2026-03-09", "$lte": str(last)}}
    )
    assert {d["group_id"] for d in mongo_db[Collection.GROUP_DAILY].find({"mark": None})} == {"g1"}
    for collection, query in untouched:
        assert mongo_db[collection].count_documents({**query, "mark": None}) == 0, collection
        mongo_db[collection].update_many(query, {"$unset": {"mark": ""}})
    scoped = snapshot(mongo_db, EVERYTHING)
    for name in EVERYTHING:
        mongo_db[name].delete_many({})
    aggregate_days(test_settings, START, last, spark=spark)
    full = snapshot(mongo_db, EVERYTHING)
    assert scoped == full
    march = [d for d in full[Collection.GROUP_DAILY] if d["_id"] == "g1:2026-03-15"]
    assert march and "ana" in {e["user_id"] for e in march[0]["leaderboards"]["plays"]}


def test_a_user_scope_names_a_known_user(
    spark: SparkSession, test_settings: Settings, mongo_db: Database[dict[str, Any]]
) -> None:
    import pytest

    from auxcord.errors import AuxcordError

    seed(mongo_db)
    with pytest.raises(AuxcordError, match="no user 'nobody'"):
        aggregate_days(test_settings, START, START, user="nobody", spark=spark)
