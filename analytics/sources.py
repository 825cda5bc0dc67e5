"""Reading what the analytics jobs need from MongoDB into Spark: listens, users and groups.

The I/O edge of :mod:`analytics`; every job's transform is pure. Listens come through
pymongoarrow, so no per-document Python work happens on the way into Spark.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from auxcord.names import Collection

if TYPE_CHECKING:
    import pyarrow as pa
    from google.cloud.storage import Bucket
    from pymongo.database import Database
    from pyspark.sql import DataFrame, SparkSession

LISTEN_FIELDS = {
    "user_id": "string",
    "track_id": "string",
    "track_name": "string",
    "artist_name": "string",
    "album_name": "string",
    "album_image_url": "string",
    "duration_ms": "int64",
    "ms_played": "int64",
    "played_at": "timestamp",
    "item_type": "string",
}


def read_listens(
    spark: SparkSession,
    database: Database[dict[str, Any]],
    *,
    since: datetime | None = None,
    before: datetime | None = None,
    users: list[str] | None = None,
) -> DataFrame:
    """Stored listens (those ending in ``[since, before)``, of ``users``), with
    LISTEN_FIELDS."""
    from auxcord.spark import arrow_frame

    return arrow_frame(spark, listens_table(database, since=since, before=before, users=users))


def listens_table(
    database: Database[dict[str, Any]],
    *,
    since: datetime | None = None,
    before: datetime | None = None,
    users: list[str] | None = None,
) -> pa.Table:
    """:func:`read_listens` as an Arrow table, which needs no Spark: a daily run reads it
    while the JVM starts."""
    import pyarrow as pa
    from pymongoarrow.api import Schema, find_arrow_all

    types = {"string": pa.string(), "int64": pa.int64(), "timestamp": pa.timestamp("ms")}
    schema = Schema({name: types[kind] for name, kind in LISTEN_FIELDS.items()})
    query: dict[str, Any] = {}
    window = {"$gte": since, "$lt": before}
    if since is not None or before is not None:
        query["played_at"] = {op: moment for op, moment in window.items() if moment is not None}
    if users is not None:
        query["user_id"] = {"$in": users}
    table = find_arrow_all(database[Collection.LISTENS], query, schema=schema)
    # pymongoarrow reads timestamps as naive UTC; Spark's session time zone is UTC too.
    return table.select(list(LISTEN_FIELDS))


def read_raw_listens(
    spark: SparkSession,
    bucket: Bucket,
    *,
    since: datetime | None = None,
    before: datetime | None = None,
) -> DataFrame:
    """Listens from the raw Parquet the streaming job writes to GCS (the data lake), ending in
    ``[since, before)``, from the ``dt=`` partitions of those days, with LISTEN_FIELDS."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from auxcord.names import RAW_LISTENS_PREFIX
    from auxcord.spark import arrow_frame

    first_day = since.date().isoformat() if since is not None else None
    last_day = before.date().isoformat() if before is not None else None
    tables = []
    for blob in bucket.list_blobs(prefix=f"{RAW_LISTENS_PREFIX}/dt="):
        day = blob.name.removeprefix(f"{RAW_LISTENS_PREFIX}/dt=")[:10]
        if (first_day is None or day >= first_day) and (last_day is None or day <= last_day):
            tables.append(pq.read_table(io.BytesIO(blob.download_as_bytes())))
    fields = list(LISTEN_FIELDS)
    if not tables:
        return spark.createDataFrame([], read_listens_schema())
    table = pa.concat_tables(tables, promote_options="default").select(fields)
    frame = arrow_frame(spark, table)
    if since is not None:
        frame = frame.where(frame.played_at >= since)
    if before is not None:
        frame = frame.where(frame.played_at < before)
    return frame


def read_listens_schema() -> str:
    """LISTEN_FIELDS as a Spark DDL schema."""
    spark_types = {"string": "string", "int64": "long", "timestamp": "timestamp"}
    return ", ".join(f"{name} {spark_types[kind]}" for name, kind in LISTEN_FIELDS.items())


def read_users(
    spark: SparkSession, database: Database[dict[str, Any]], users: list[str] | None = None
) -> DataFrame:
    """``(user_id, timezone)`` for every linked user (or those of ``users``)."""
    query = {} if users is None else {"_id": {"$in": users}}
    rows = [
        (str(user["_id"]), str(user.get("timezone") or "UTC"))
        for user in database[Collection.USERS].find(query, {"timezone": 1})
    ]
    return spark.createDataFrame(rows, "user_id string, timezone string")


def read_memberships(
    spark: SparkSession, database: Database[dict[str, Any]], group: str | None = None
) -> DataFrame:
    """``(group_id, user_id)`` for every member of every group (or of ``group``)."""
    return spark.createDataFrame(
        membership_pairs(database, group), "group_id string, user_id string"
    )


def membership_pairs(
    database: Database[dict[str, Any]], group: str | None = None
) -> list[tuple[str, str]]:
    """:func:`read_memberships` as plain pairs, which need no Spark."""
    query = {} if group is None else {"_id": group}
    return [
        (str(found["_id"]), str(member))
        for found in database[Collection.GROUPS].find(query, {"members": 1})
        for member in found.get("members", [])
    ]


def read_documents(
    spark: SparkSession,
    database: Database[dict[str, Any]],
    collection: Collection,
    query: dict[str, Any] | None = None,
) -> DataFrame | None:
    """Stored documents (without ``_id``) as a DataFrame, or None when there are none.

    They go through JSON so that Spark infers the nested arrays of documents that aggregate
    collections hold.
    """
    from bson import json_util

    documents = [
        json_util.dumps(document, json_options=json_util.RELAXED_JSON_OPTIONS)
        for document in database[collection].find(query or {}, {"_id": 0})
    ]
    if not documents:
        return None
    return spark.read.json(spark.sparkContext.parallelize(documents))


def summaries_schema() -> pa.Schema:
    """What rollups (and the discoveries and streaks of the days after) read back from stored
    ``user_daily`` documents and month and year ``user_rollups``: the additive figures and the
    full counts, not the top tens (rollups rank the full counts again).

    One schema for both: a day has ``day`` and ``streak``, a rollup ``period``,
    ``active_days`` and ``longest_streak`` (and a month ``day_minutes``); what a document
    lacks reads as null.
    """
    import pyarrow as pa

    plays = pa.field("plays", pa.int64())
    names = [("track_name", pa.string()), ("artist_name", pa.string())]
    return pa.schema(
        [
            ("user_id", pa.string()),
            ("day", pa.string()),
            ("period", pa.string()),
            ("plays", pa.int64()),
            ("minutes", pa.float64()),
            ("active_days", pa.int64()),
            ("new_tracks", pa.int64()),
            ("new_artists", pa.int64()),
            ("streak", pa.int64()),
            ("longest_streak", pa.int64()),
            ("hours", pa.list_(pa.int64())),
            (
                "day_minutes",
                pa.list_(pa.struct([("day", pa.string()), ("minutes", pa.float64())])),
            ),
            ("track_counts", pa.list_(pa.struct([("track_key", pa.string()), *names, plays]))),
            ("artist_counts", pa.list_(pa.struct([("artist_name", pa.string()), plays]))),
            (
                "album_counts",
                pa.list_(
                    pa.struct([("album_name", pa.string()), ("artist_name", pa.string()), plays])
                ),
            ),
        ]
    )


def summaries_table(
    database: Database[dict[str, Any]], collection: Collection, queries: list[dict[str, Any]]
) -> pa.Table:
    """Stored user days or rollups matching any of ``queries`` (which must not overlap), with
    :func:`summaries_schema`.

    Through pymongoarrow with an explicit schema, not JSON and schema inference as
    :func:`read_documents` does: these are thousands of documents with nested arrays. An
    Arrow table, so a run can read it while the JVM starts.
    """
    import pyarrow as pa
    from pymongoarrow.api import Schema, find_arrow_all

    schema = summaries_schema()
    wanted = Schema({field.name: field.type for field in schema})
    # No projection (pymongoarrow reads only the schema's fields anyway): the documents are
    # mostly the counts read here, and the local server projects slower than it sends
    # (measured in bench/bench_aggregate.py; bench/RESULTS.md).
    tables = [
        find_arrow_all(
            database[collection],
            query,
            schema=wanted,
            projection=None,
        )
        .select(schema.names)
        .cast(schema)
        for query in queries
    ]
    return pa.concat_tables(tables) if tables else schema.empty_table()
