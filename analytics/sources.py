"""Reading what the analytics jobs need from MongoDB into Spark: listens, users and groups.

The I/O edge of :mod:`analytics`; every job's transform is pure. Listens come through
pymongoarrow, so no per-document Python work happens on the way into Spark.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from auxcord.names import Collection

if TYPE_CHECKING:
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
    before: datetime | None = None,
    users: list[str] | None = None,
) -> DataFrame:
    """Stored listens (those ending before ``before``, of ``users``), with LISTEN_FIELDS."""
    import pyarrow as pa
    from pymongoarrow.api import Schema, find_arrow_all

    types = {"string": pa.string(), "int64": pa.int64(), "timestamp": pa.timestamp("ms")}
    schema = Schema({name: types[kind] for name, kind in LISTEN_FIELDS.items()})
    query: dict[str, Any] = {}
    if before is not None:
        query["played_at"] = {"$lt": before}
    if users is not None:
        query["user_id"] = {"$in": users}
    table = find_arrow_all(database[Collection.LISTENS], query, schema=schema)
    # pymongoarrow reads timestamps as naive UTC; Spark's session time zone is UTC too.
    return spark.createDataFrame(table.select(list(LISTEN_FIELDS)))


def read_raw_listens(
    spark: SparkSession, bucket: Bucket, *, before: datetime | None = None
) -> DataFrame:
    """Listens from the raw Parquet the streaming job writes to GCS (the data lake), from
    every ``dt=`` partition before ``before``'s day (inclusive), with LISTEN_FIELDS."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from auxcord.names import RAW_LISTENS_PREFIX

    last_day = before.date().isoformat() if before is not None else None
    tables = []
    for blob in bucket.list_blobs(prefix=f"{RAW_LISTENS_PREFIX}/dt="):
        day = blob.name.removeprefix(f"{RAW_LISTENS_PREFIX}/dt=")[:10]
        if last_day is None or day <= last_day:
            tables.append(pq.read_table(io.BytesIO(blob.download_as_bytes())))
    fields = list(LISTEN_FIELDS)
    if not tables:
        return spark.createDataFrame([], read_listens_schema())
    table = pa.concat_tables(tables, promote_options="default").select(fields)
    frame = spark.createDataFrame(table)
    if before is not None:
        frame = frame.where(frame.played_at < before)
    return frame


def read_listens_schema() -> str:
    """LISTEN_FIELDS as a Spark DDL schema."""
    spark_types = {"string": "string", "int64": "long", "timestamp": "timestamp"}
    return ", ".join(f"{name} {spark_types[kind]}" for name, kind in LISTEN_FIELDS.items())


def read_users(spark: SparkSession, database: Database[dict[str, Any]]) -> DataFrame:
    """``(user_id, timezone)`` for every linked user."""
    rows = [
        (str(user["_id"]), str(user.get("timezone") or "UTC"))
        for user in database[Collection.USERS].find({}, {"timezone": 1})
    ]
    return spark.createDataFrame(rows, "user_id string, timezone string")


def read_memberships(
    spark: SparkSession, database: Database[dict[str, Any]], group: str | None = None
) -> DataFrame:
    """``(group_id, user_id)`` for every member of every group (or of ``group``)."""
    query = {} if group is None else {"_id": group}
    pairs = [
        (str(found["_id"]), str(member))
        for found in database[Collection.GROUPS].find(query, {"members": 1})
        for member in found.get("members", [])
    ]
    return spark.createDataFrame(pairs, "group_id string, user_id string")


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
