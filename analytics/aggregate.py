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
    group_daily_stats,
    local_listens,
    prior_history_from_summaries,
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
from auxcord.periods import ALL_TIME, doc_id, is_key_of, key_year, period_key, prefix_range
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
        row["_id"] = doc_id(row[key], row["day"])
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
    """The dashboard's reads: one user's days, one group's days, a day's leaderboard
    (registered in :mod:`auxcord.indexes`)."""
    from auxcord.indexes import AGGREGATES
    from auxcord.indexes import ensure_indexes as ensure_registered

    ensure_registered(database, *AGGREGATES)


@dataclass(frozen=True)
class Scope:
    """Whose documents a run replaces, and whose stored days it reads instead.

    ``users``: the users whose days and rollups are recomputed (None: everyone).
    ``groups``: the groups whose days, rollups and recaps are recomputed (None: every group).
    ``pairs``: the ``(group_id, user_id)`` memberships of those groups.
    ``others``: members of those groups whose days are not recomputed: their stored days
    (and the rollups built from them) are read, so their groups' figures can be rebuilt.
    """

    users: list[str] | None
    groups: list[str] | None
    pairs: list[tuple[str, str]]
    others: list[str]

    @property
    def user_filter(self) -> dict[str, Any]:
        return {} if self.users is None else {"user_id": {"$in": self.users}}

    @property
    def group_filter(self) -> dict[str, Any]:
        return {} if self.groups is None else {"group_id": {"$in": self.groups}}


def run_scope(
    database: Database[dict[str, Any]], *, group: str | None = None, user: str | None = None
) -> Scope:
    """The :class:`Scope` of a run over everything, one group (its members' days and the
    group's), or one user (their days, and the days of the groups they belong to, from the
    other members' stored days: what an import of that user's history changes)."""
    if group is not None and user is not None:
        raise AuxcordError("give a group or a user to aggregate, not both")
    if group is not None:
        pairs = membership_pairs(database, group)
        if not pairs:
            raise AuxcordError(f"no group {group!r} (or it has no members)")
        return Scope(sorted({member for _, member in pairs}), [group], pairs, [])
    if user is not None:
        if database[Collection.USERS].find_one({"_id": user}, {"_id": 1}) is None:
            raise AuxcordError(f"no user {user!r}")
        groups = sorted(
            str(found["_id"]) for found in database[Collection.GROUPS].find({"members": user})
        )
        pairs = [pair for group_id in groups for pair in membership_pairs(database, group_id)]
        others = sorted({member for _, member in pairs} - {user})
        return Scope([user], groups, pairs, others)
    return Scope(None, None, membership_pairs(database), [])


def aggregate_days(
    settings: Settings,
    first: date,
    last: date,
    *,
    group: str | None = None,
    user: str | None = None,
    source: Literal["mongodb", "gcs"] = "mongodb",
    spark: SparkSession | None = None,
    on_step: Callable[[str], None] = lambda _: None,
) -> AggregateResult:
    """Compute and store user and group daily statistics for local days ``[first, last]``.

    Everyone's by default; with ``group``, that group's members and the group; with ``user``,
    that user's days and rollups, and the days, rollups and recaps of the groups they belong
    to, rebuilt from the other members' stored days (which are read, not recomputed: a
    history import changes only its user's days). A scoped run stores exactly what a full
    run over the same days would store for what it replaces.

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
    scope = run_scope(database, group=group, user=user)
    since, until = local_days_window(first, last)
    days_queries, rollups_queries = stored_summaries_queries(first, last)
    days_wanted = [{**scope.user_filter, **query} for query in days_queries]
    rollups_wanted = [{**scope.user_filter, **query} for query in rollups_queries]
    if scope.others:
        # The other members' days of the range too: theirs are read, not recomputed.
        others = {"user_id": {"$in": scope.others}}
        in_range = {"day": {"$gte": first.isoformat(), "$lte": last.isoformat()}}
        days_wanted += [{**others, **query} for query in [*days_queries, in_range]]
        rollups_wanted += [{**others, **query} for query in rollups_queries]
    # MongoDB reads take as long as the JVM takes to start, so they run meanwhile.
    with ThreadPoolExecutor(max_workers=3) as pool:
        stored_days = pool.submit(summaries_table, database, Collection.USER_DAILY, days_wanted)
        stored_rollups = pool.submit(
            summaries_table, database, Collection.USER_ROLLUPS, rollups_wanted
        )
        stored_listens = (
            pool.submit(listens_table, database, since=since, before=until, users=scope.users)
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
            if scope.users is not None:
                listens = listens.where(listens.user_id.isin(scope.users))
        stored = arrow_frame(
            session, pa.concat_tables([stored_days.result(), stored_rollups.result()])
        ).cache()
    memberships = session.createDataFrame(scope.pairs, "group_id string, user_id string")
    plays = local_listens(listens, read_users(session, database, scope.users)).cache()
    on_step(AggregateStep.USER_DAYS)
    own = stored if not scope.others else stored.where(~stored.user_id.isin(scope.others))
    before = prior_history_from_summaries(own, first)
    # Checkpointed, not cached: later plans build on it, and Spark compares every new plan
    # with the lineage of what is cached (deep ones here made that the slowest step).
    user_daily = user_daily_stats(plays, first, last, before).localCheckpoint()
    user_documents = _documents(user_daily, "user_id")
    ensure_indexes(database)
    replace_days(database, Collection.USER_DAILY, user_documents, first, last, scope.user_filter)
    on_step(AggregateStep.GROUP_DAYS_AND_ROLLUPS)
    member_days = user_daily
    if scope.others:
        member_days = user_daily.unionByName(
            stored_days_of(stored, scope.others, first, last), allowMissingColumns=True
        )

    @inheritable_thread_target(session)
    def store_group_days() -> list[dict[str, Any]]:
        documents = _documents(group_daily_stats(member_days, memberships, first, last), "group_id")
        replace_days(database, Collection.GROUP_DAILY, documents, first, last, scope.group_filter)
        return documents

    # Group days and rollups are independent Spark jobs: side by side they fill the gaps
    # each leaves on the cores between its stages (bench/RESULTS.md, daily aggregates).
    with ThreadPoolExecutor(max_workers=1) as side:
        group_days = side.submit(store_group_days)
        summaries = stored.unionByName(as_summaries(user_daily, stored.schema))
        update_rollups(database, summaries, memberships, first, last, scope)
        group_documents = group_days.result()
    plays.unpersist()
    stored.unpersist()
    return AggregateResult(first, last, len(user_documents), len(group_documents))


def stored_days_of(stored: DataFrame, users: list[str], first: date, last: date) -> DataFrame:
    """The stored days of ``users`` in ``[first, last]`` from ``stored`` (read with
    :func:`analytics.sources.summaries_schema`), with ``day`` as a date, as
    :func:`analytics.daily.group_daily_stats` takes user days."""
    from pyspark.sql import functions as F

    day = F.col("day")
    return stored.where(
        F.col("user_id").isin(users) & (day >= first.isoformat()) & (day <= last.isoformat())
    ).select(
        "user_id",
        F.to_date(day).alias("day"),
        "plays",
        "minutes",
        "new_tracks",
        "streak",
        "track_counts",
        "artist_counts",
    )


def stored_summaries_queries(
    first: date, last: date
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The stored user days and user rollups a run over ``[first, last]`` builds on: the
    ``user_daily`` and ``user_rollups`` queries.

    Days: the other days of the weeks and months holding the range, and the day before it
    (its streak runs on). Rollups: the other months of the years holding the range, and the
    other years. Together with the range's own days they are what
    :func:`analytics.rollups.contributions` needs, and the ones before ``first`` cover every
    earlier day for :func:`analytics.daily.prior_history_from_summaries`.

    Several plain range and ``$in`` queries rather than one ``$or`` with ``$nin``: each is
    answered from the ``day`` or ``period`` index, where the local server scanned the whole
    collection for the combined one, several times slower on a year of plays.
    """
    periods = affected_periods(first, last)
    day_before = first - timedelta(days=1)
    span_start = min(period_days("week", first)[0], period_days("month", first)[0], day_before)
    span_end = max(period_days("week", last)[1], period_days("month", last)[1])
    days: list[dict[str, Any]] = [
        {"day": {"$gte": span_start.isoformat(), "$lt": first.isoformat()}},
        {"day": {"$gt": last.isoformat(), "$lte": span_end.isoformat()}},
    ]
    years = sorted(key for key in periods if is_key_of(key, "year"))
    months = [
        period_key("month", date(int(key_year(key)), n, 1)) for key in years for n in range(1, 13)
    ]
    # The year keys between the range's years, and before and after them.
    below, above = prefix_range("year")
    bounds = [below, *years, above]
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
    scope: Scope,
) -> None:
    """Recompute the weeks, months, years and all-time that hold ``[first, last]``, and the
    yearly recaps, from ``summaries`` (the range's user days and the stored days and rollups
    :func:`stored_summaries_queries` names; rollups never read raw listens), and store those
    of ``scope``: the other members' rollups are rebuilt from their stored days only for
    their groups' (weeks and all-time keep no full counts to read back)."""
    from pyspark.sql import functions as F

    from analytics.rollups import (
        contributions,
        group_day_minutes,
        group_recaps,
        group_rollups,
        user_rollups,
    )
    from analytics.rollups import is_key_of as is_key_column

    periods = affected_periods(first, last)
    # All-time adds up the years (the one just rebuilt and the stored others), not every
    # month and day again: half the work of a daily run's rollups.
    period_rollups = user_rollups(contributions(summaries, [p for p in periods if p != ALL_TIME]))
    period_rollups = period_rollups.localCheckpoint()
    year_summaries = summaries.where(is_key_column(F.col("period"), "year")).unionByName(
        as_summaries(period_rollups.where(is_key_column(F.col("period"), "year")), summaries.schema)
    )
    all_time = user_rollups(contributions(year_summaries, [ALL_TIME]))
    users = period_rollups.unionByName(all_time).localCheckpoint()
    groups = group_rollups(users, memberships).localCheckpoint()
    years = sorted(key_year(key) for key in periods if is_key_of(key, "year"))
    minutes = group_day_minutes(summaries, memberships, periods)
    recaps = group_recaps(groups, minutes)
    own = users if not scope.others else users.where(~F.col("user_id").isin(scope.others))
    user_rows: list[dict[str, Any]] = own.toArrow().to_pylist()
    for row in user_rows:
        row["_id"] = doc_id(row["user_id"], row["period"])
        # Only months and years are summed again (into years and all-time), and only months
        # are read for their days' minutes; the rest would only make the dashboard's
        # documents heavier.
        if not (is_key_of(row["period"], "month") or is_key_of(row["period"], "year")):
            for counts in ("track_counts", "artist_counts", "album_counts"):
                del row[counts]
        if not is_key_of(row["period"], "month"):
            del row["day_minutes"]
    # Rows, not Arrow, for groups and recaps: Spark declares some nested structs non-nullable
    # that a left join leaves null (a recap's best match when nobody shared an artist), and
    # Arrow's conversion refuses them.
    group_rows = [row.asDict(recursive=True) for row in groups.collect()]
    for row in group_rows:
        row["_id"] = doc_id(row["group_id"], row["period"])
    recap_rows = [row.asDict(recursive=True) for row in recaps.collect()]
    for row in recap_rows:
        row["_id"] = doc_id(row["group_id"], row["year"])
    selector = {"period": {"$in": periods}}
    for collection, rows, within, replaced in (
        (Collection.USER_ROLLUPS, user_rows, scope.user_filter, selector),
        (Collection.GROUP_ROLLUPS, group_rows, scope.group_filter, selector),
        (Collection.GROUP_RECAPS, recap_rows, scope.group_filter, {"year": {"$in": years}}),
    ):
        target = database[collection]
        target.delete_many({**replaced, **within})
        if rows:
            target.insert_many(rows, ordered=False)
