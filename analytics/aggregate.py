"""Running the daily aggregates for a day or a range, then the rollups holding those days.

The I/O edge of :mod:`analytics.daily`. One Spark application computes a whole range at once
(a backfill pays for one JVM start, not one per day), and each day's documents depend only on
plays up to that day, so a backfill writes exactly what day-by-day runs write.

A run reads the plays of its own days only; what came before (tracks already heard, the
streak running in) comes from the stored user days and month and year rollups, as do the
other parts of the rollups. So a day's discoveries and streaks take the earlier days as
stored: re-run an earlier day (or back-fill from it) when plays for it arrive after it was
aggregated. A backfill from the first day with plays needs nothing stored.

Idempotent: a run first removes what an earlier run stored for its days (and group), then
inserts; documents are keyed ``user:day`` and ``group:day``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Literal

from analytics.daily import (
    as_summaries,
    before_from_summaries,
    group_daily_stats,
    local_listens,
    user_daily_stats,
)
from analytics.periods import affected_periods, local_days_window, period_days
from analytics.sources import (
    listens_table,
    membership_pairs,
    read_raw_listens,
    read_users,
    summaries_table,
)
from auxcord.clients import gcs_bucket, mongo_database
from auxcord.errors import AuxcordError
from auxcord.names import Collection
from auxcord.settings import Settings

if TYPE_CHECKING:
    from pymongo.database import Database
    from pyspark.sql import DataFrame, SparkSession


class AggregateStep(StrEnum):
    """The steps :func:`aggregate_days` reports through ``on_step``, in order: the CLI's
    progress bar counts them."""

    STARTING_SPARK = "starting Spark"
    READING_LISTENS = "reading listens"
    USER_DAYS = "computing user days"
    GROUP_DAYS_AND_ROLLUPS = "computing group days and rollups"


@dataclass
class AggregateResult:
    first: date
    last: date
    user_days: int
    group_days: int


def _documents(frame: DataFrame, key: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = frame.toArrow().to_pylist()
    for row in rows:
        row["day"] = row["day"].isoformat()
        row["_id"] = f"{row[key]}:{row['day']}"
    return rows


def replace_days(
    database: Database[dict[str, Any]],
    collection: Collection,
    documents: list[dict[str, Any]],
    first: date,
    last: date,
    scope: dict[str, Any],
) -> None:
    """Replace the documents of days ``[first, last]`` (within ``scope``) by ``documents``."""
    target = database[collection]
    target.delete_many({"day": {"$gte": first.isoformat(), "$lte": last.isoformat()}, **scope})
    for start in range(0, len(documents), 5_000):
        target.insert_many(documents[start : start + 5_000], ordered=False)


def ensure_indexes(database: Database[dict[str, Any]]) -> None:
    """The dashboard's reads: one user's days, one group's days, a day's leaderboard."""
    from pymongo import ASCENDING, DESCENDING

    database[Collection.USER_DAILY].create_index([("user_id", ASCENDING), ("day", DESCENDING)])
    database[Collection.USER_DAILY].create_index([("day", ASCENDING)])
    database[Collection.GROUP_DAILY].create_index([("group_id", ASCENDING), ("day", DESCENDING)])
    database[Collection.GROUP_DAILY].create_index([("day", ASCENDING)])
    database[Collection.USER_ROLLUPS].create_index([("user_id", ASCENDING), ("period", ASCENDING)])
    database[Collection.USER_ROLLUPS].create_index([("period", ASCENDING)])
    database[Collection.GROUP_ROLLUPS].create_index(
        [("group_id", ASCENDING), ("period", ASCENDING)]
    )


def aggregate_days(
    settings: Settings,
    first: date,
    last: date,
    *,
    group: str | None = None,
    source: Literal["mongodb", "gcs"] = "mongodb",
    spark: SparkSession | None = None,
    on_step: Callable[[str], None] = lambda _: None,
) -> AggregateResult:
    """Compute and store user and group daily statistics for local days ``[first, last]``.

    Listens come from MongoDB (the serving copy) or, with ``source="gcs"``, from the raw
    Parquet in GCS (the data lake); the streaming job writes each play once to both.
    """
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa
    from pyspark.util import inheritable_thread_target

    from auxcord.spark import arrow_frame, build_spark_session

    if last < first:
        raise AuxcordError(f"the range ends ({last}) before it starts ({first})")
    database = mongo_database(settings)
    pairs = membership_pairs(database, group)
    members = None
    if group is not None:
        members = sorted({user for _, user in pairs})
        if not members:
            raise AuxcordError(f"no group {group!r} (or it has no members)")
    since, until = local_days_window(first, last)
    user_scope = {} if members is None else {"user_id": {"$in": members}}
    days_queries, rollups_queries = stored_summaries_queries(first, last)
    # MongoDB reads take as long as the JVM takes to start, so they run meanwhile.
    with ThreadPoolExecutor(max_workers=3) as pool:
        stored_days = pool.submit(
            summaries_table,
            database,
            Collection.USER_DAILY,
            [{**user_scope, **query} for query in days_queries],
        )
        stored_rollups = pool.submit(
            summaries_table,
            database,
            Collection.USER_ROLLUPS,
            [{**user_scope, **query} for query in rollups_queries],
        )
        stored_listens = (
            pool.submit(listens_table, database, since=since, before=until, users=members)
            if source == "mongodb"
            else None
        )
        session = spark or build_spark_session(
            settings, "auxcord-aggregate", short_run=last - first < timedelta(days=7)
        )
        on_step(AggregateStep.READING_LISTENS)
        if stored_listens is not None:
            listens = arrow_frame(session, stored_listens.result())
        else:
            listens = read_raw_listens(session, gcs_bucket(settings), since=since, before=until)
            if members is not None:
                listens = listens.where(listens.user_id.isin(members))
        stored = arrow_frame(
            session, pa.concat_tables([stored_days.result(), stored_rollups.result()])
        ).cache()
    memberships = session.createDataFrame(pairs, "group_id string, user_id string")
    plays = local_listens(listens, read_users(session, database)).cache()
    on_step(AggregateStep.USER_DAYS)
    before = before_from_summaries(stored, first)
    # Checkpointed, not cached: later plans build on it, and Spark compares every new plan
    # with the lineage of what is cached (deep ones here made that the slowest step).
    user_daily = user_daily_stats(plays, first, last, before).localCheckpoint()
    user_documents = _documents(user_daily, "user_id")
    ensure_indexes(database)
    replace_days(database, Collection.USER_DAILY, user_documents, first, last, user_scope)
    on_step(AggregateStep.GROUP_DAYS_AND_ROLLUPS)
    group_scope = {} if group is None else {"group_id": group}

    @inheritable_thread_target(session)
    def store_group_days() -> list[dict[str, Any]]:
        documents = _documents(
            group_daily_stats(plays, user_daily, memberships, first, last), "group_id"
        )
        replace_days(database, Collection.GROUP_DAILY, documents, first, last, group_scope)
        return documents

    # Group days and rollups are independent Spark jobs: side by side they fill the gaps
    # each leaves on the cores between its stages (a year's backfill 245 s → 208 s).
    with ThreadPoolExecutor(max_workers=1) as side:
        group_days = side.submit(store_group_days)
        summaries = stored.unionByName(as_summaries(user_daily, stored.schema))
        update_rollups(database, summaries, memberships, first, last, user_scope, group_scope)
        group_documents = group_days.result()
    plays.unpersist()
    stored.unpersist()
    return AggregateResult(first, last, len(user_documents), len(group_documents))


def stored_summaries_queries(
    first: date, last: date
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The stored user days and user rollups a run over ``[first, last]`` builds on: the
    ``user_daily`` and ``user_rollups`` queries.

    Days: the other days of the weeks and months holding the range, and the day before it
    (its streak runs on). Rollups: the other months of the years holding the range, and the
    other years. Together with the range's own days they are what
    :func:`analytics.rollups.contributions` needs, and the ones before ``first`` cover every
    earlier day for :func:`analytics.daily.before_from_summaries`.

    Several plain range and ``$in`` queries rather than one ``$or`` with ``$nin``: each is
    answered from the ``day`` or ``period`` index, where the local server scanned the whole
    collection for the combined one (6 s instead of 1 s on a year of 110 users).
    """
    periods = affected_periods(first, last)
    eve = first - timedelta(days=1)
    span_start = min(period_days("week", first)[0], period_days("month", first)[0], eve)
    span_end = max(period_days("week", last)[1], period_days("month", last)[1])
    days: list[dict[str, Any]] = [
        {"day": {"$gte": span_start.isoformat(), "$lt": first.isoformat()}},
        {"day": {"$gt": last.isoformat(), "$lte": span_end.isoformat()}},
    ]
    years = sorted(key for key in periods if key.startswith("year:"))
    months = [f"month:{key.removeprefix('year:')}-{n:02d}" for key in years for n in range(1, 13)]
    # The year keys between the range's years; "year;" sorts just after every "year:YYYY".
    bounds = ["year:", *years, "year;"]
    rollups: list[dict[str, Any]] = [
        {"period": {"$in": [month for month in months if month not in periods]}},
        *[{"period": {"$gt": low, "$lt": high}} for low, high in pairwise(bounds)],
    ]
    return days, rollups


def update_rollups(
    database: Database[dict[str, Any]],
    summaries: DataFrame,
    memberships: DataFrame,
    first: date,
    last: date,
    user_scope: dict[str, Any],
    group_scope: dict[str, Any],
) -> None:
    """Recompute the weeks, months, years and all-time that hold ``[first, last]``, and the
    yearly recaps, from ``summaries`` (the range's user days and the stored days and rollups
    :func:`stored_summaries_queries` names; rollups never read raw listens)."""
    from pyspark.sql import functions as F

    from analytics.rollups import (
        contributions,
        group_day_minutes,
        group_recaps,
        group_rollups,
        user_rollups,
    )

    periods = affected_periods(first, last)
    # All-time adds up the years (the one just rebuilt and the stored others), not every
    # month and day again: half the work of a daily run's rollups.
    below = user_rollups(contributions(summaries, [p for p in periods if p != "all"]))
    below = below.localCheckpoint()
    year_summaries = summaries.where(F.col("period").startswith("year:")).unionByName(
        as_summaries(below.where(F.col("period").startswith("year:")), summaries.schema)
    )
    all_time = user_rollups(contributions(year_summaries, ["all"]))
    users = below.unionByName(all_time).localCheckpoint()
    groups = group_rollups(users, memberships).localCheckpoint()
    years = sorted(key.removeprefix("year:") for key in periods if key.startswith("year:"))
    minutes = group_day_minutes(summaries, memberships, periods)
    recaps = group_recaps(groups, minutes)
    user_rows: list[dict[str, Any]] = users.toArrow().to_pylist()
    for row in user_rows:
        row["_id"] = f"{row['user_id']}:{row['period']}"
        # Only months and years are summed again (into years and all-time), and only months
        # are read for their days' minutes; the rest would only make the dashboard's
        # documents heavier.
        if not row["period"].startswith(("month:", "year:")):
            for counts in ("track_counts", "artist_counts", "album_counts"):
                del row[counts]
        if not row["period"].startswith("month:"):
            del row["day_minutes"]
    # Rows, not Arrow, for groups and recaps: Spark declares some nested structs non-nullable
    # that a left join leaves null (a recap's best match when nobody shared an artist), and
    # Arrow's conversion refuses them.
    group_rows = [row.asDict(recursive=True) for row in groups.collect()]
    for row in group_rows:
        row["_id"] = f"{row['group_id']}:{row['period']}"
    recap_rows = [row.asDict(recursive=True) for row in recaps.collect()]
    for row in recap_rows:
        row["_id"] = f"{row['group_id']}:{row['year']}"
    selector = {"period": {"$in": periods}}
    for collection, rows, scope, replaced in (
        (Collection.USER_ROLLUPS, user_rows, user_scope, selector),
        (Collection.GROUP_ROLLUPS, group_rows, group_scope, selector),
        (Collection.GROUP_RECAPS, recap_rows, group_scope, {"year": {"$in": years}}),
    ):
        target = database[collection]
        target.delete_many({**replaced, **scope})
        if rows:
            target.insert_many(rows, ordered=False)
