"""Running the daily aggregates for a day or a range, then the rollups holding those days.

The I/O edge of :mod:`analytics.daily`. One Spark application computes a whole range at once
(a backfill pays for one JVM start, not one per day), and each day's documents depend only on
plays up to that day, so a backfill writes exactly what day-by-day runs write.

Idempotent: a run first removes what an earlier run stored for its days (and group), then
inserts; documents are keyed ``user:day`` and ``group:day``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Literal

from analytics.daily import group_daily_stats, local_listens, user_daily_stats
from analytics.periods import affected_periods
from analytics.sources import read_listens, read_memberships, read_raw_listens, read_users
from auxcord.clients import gcs_bucket, mongo_database
from auxcord.errors import AuxcordError
from auxcord.names import Collection
from auxcord.settings import Settings

if TYPE_CHECKING:
    from pymongo.database import Database
    from pyspark.sql import DataFrame, SparkSession

# The widest UTC offsets (UTC-12, UTC+14): a local day ends at most this long after UTC's.
_LATEST_OFFSET = timedelta(hours=14)


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
    from auxcord.spark import build_spark_session

    if last < first:
        raise AuxcordError(f"the range ends ({last}) before it starts ({first})")
    database = mongo_database(settings)
    session = spark or build_spark_session(settings, "auxcord-aggregate")
    memberships = read_memberships(session, database, group)
    members = None
    if group is not None:
        members = [row.user_id for row in memberships.select("user_id").collect()]
        if not members:
            raise AuxcordError(f"no group {group!r} (or it has no members)")
    on_step("reading listens")
    until = datetime.combine(last + timedelta(days=1), time(), UTC) + _LATEST_OFFSET
    if source == "gcs":
        listens = read_raw_listens(session, gcs_bucket(settings), before=until)
        if members is not None:
            listens = listens.where(listens.user_id.isin(members))
    else:
        listens = read_listens(session, database, before=until, users=members)
    history = local_listens(listens, read_users(session, database)).cache()
    on_step("computing user days")
    user_daily = user_daily_stats(history, first, last).cache()
    user_documents = _documents(user_daily, "user_id")
    on_step("computing group days")
    group_documents = _documents(
        group_daily_stats(history, user_daily, memberships, first, last), "group_id"
    )
    on_step("writing")
    ensure_indexes(database)
    user_scope = {} if members is None else {"user_id": {"$in": members}}
    replace_days(database, Collection.USER_DAILY, user_documents, first, last, user_scope)
    group_scope = {} if group is None else {"group_id": group}
    replace_days(database, Collection.GROUP_DAILY, group_documents, first, last, group_scope)
    history.unpersist()
    user_daily.unpersist()
    on_step("updating rollups")
    update_rollups(session, database, memberships, first, last, user_scope, group_scope)
    return AggregateResult(first, last, len(user_documents), len(group_documents))


def update_rollups(
    spark: SparkSession,
    database: Database[dict[str, Any]],
    memberships: DataFrame,
    first: date,
    last: date,
    user_scope: dict[str, Any],
    group_scope: dict[str, Any],
) -> None:
    """Recompute the weeks, months, years and all-time that hold ``[first, last]``, from the
    stored daily documents (never raw listens), and the yearly recaps."""
    from pyspark.sql import functions as F

    from analytics.rollups import group_recaps, group_rollups, user_rollups, with_periods
    from analytics.sources import read_documents

    daily = read_documents(spark, database, Collection.USER_DAILY, user_scope)
    if daily is None:
        return
    periods = affected_periods(first, last)
    periodic = with_periods(daily).where(F.col("period").isin(periods)).cache()
    users = user_rollups(periodic).cache()
    groups = group_rollups(periodic, users, memberships).cache()
    recaps = group_recaps(groups, periodic, memberships)
    years = [key.removeprefix("year:") for key in periods if key.startswith("year:")]
    for collection, frame, key, scope, selector in (
        (Collection.USER_ROLLUPS, users, "user_id", user_scope, {"period": {"$in": periods}}),
        (Collection.GROUP_ROLLUPS, groups, "group_id", group_scope, {"period": {"$in": periods}}),
        (Collection.GROUP_RECAPS, recaps, "group_id", group_scope, {"year": {"$in": years}}),
    ):
        # Rows, not Arrow: Spark declares some nested structs non-nullable that a left join
        # leaves null (a group with one listener has no taste-match pair), and Arrow's
        # conversion refuses them.
        rows = [row.asDict(recursive=True) for row in frame.collect()]
        for row in rows:
            row["_id"] = f"{row[key]}:{row.get('period') or row['year']}"
        target = database[collection]
        target.delete_many({**selector, **scope})
        if rows:
            target.insert_many(rows, ordered=False)
    for frame in (periodic, users, groups):
        frame.unpersist()
