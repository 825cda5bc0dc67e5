"""Reading listens and groups, running the recommendations job, and storing the run.

The I/O edge of :mod:`analytics.recommend`: everything else there is pure. Listens come from
MongoDB (the serving copy the streaming job writes) through pymongoarrow, so no per-document
Python work happens on the way into Spark.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from analytics.recommend.job import RecommendationRun, recommend, write_run
from auxcord.clients import mongo_database
from auxcord.errors import AuxcordError
from auxcord.names import Collection
from auxcord.settings import Settings

if TYPE_CHECKING:
    from pymongo.database import Database
    from pyspark.sql import DataFrame, SparkSession

LISTEN_COLUMNS = (
    "user_id",
    "track_id",
    "played_at",
    "item_type",
    "track_name",
    "artist_name",
    "album_name",
    "album_image_url",
)


def read_listens(spark: SparkSession, database: Database[dict[str, Any]]) -> DataFrame:
    """Every stored listen, with the columns recommendations use."""
    import pyarrow as pa
    from pymongoarrow.api import Schema, find_arrow_all

    schema = Schema({
        "user_id": pa.string(), "track_id": pa.string(), "played_at": pa.timestamp("ms"),
        "item_type": pa.string(), "track_name": pa.string(), "artist_name": pa.string(),
        "album_name": pa.string(), "album_image_url": pa.string(),
    })  # fmt: skip
    table = find_arrow_all(database[Collection.LISTENS], {}, schema=schema)
    return spark.createDataFrame(table.select(list(LISTEN_COLUMNS)))


def read_memberships(spark: SparkSession, database: Database[dict[str, Any]]) -> DataFrame:
    """``(group_id, user_id)`` for every member of every group."""
    pairs = [
        (str(group["_id"]), str(member))
        for group in database[Collection.GROUPS].find({}, {"members": 1})
        for member in group.get("members", [])
    ]
    return spark.createDataFrame(pairs, "group_id string, user_id string")


def run_recommendations(
    settings: Settings,
    *,
    spark: SparkSession | None = None,
    n: int = 20,
    seed: int = 42,
    now: datetime | None = None,
) -> RecommendationRun:
    """Recommend for every group member and store the run (replacing a same-day run)."""
    from auxcord.spark import build_spark_session

    database = mongo_database(settings)
    session = spark or build_spark_session(settings, "auxcord-recommendations")
    memberships = read_memberships(session, database)
    if memberships.isEmpty():
        raise AuxcordError("no groups yet: create a group on the dashboard, then recommend")
    run = recommend(read_listens(session, database), memberships, n=n, seed=seed, now=now)
    write_run(database, run)
    return run
