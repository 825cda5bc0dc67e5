"""SparkSQL views over what MongoDB holds, for ``auxcord sql`` and SQL-written reports.

``listens`` (music and podcasts, UTC), ``users`` (user_id, timezone), ``memberships``
(group_id, user_id), and the stored aggregates: ``user_daily``, ``group_daily``,
``user_rollups``, ``group_rollups`` and ``group_recaps``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from analytics.sources import read_documents, read_listens, read_memberships, read_users
from auxcord.clients import mongo_database
from auxcord.names import Collection
from auxcord.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

AGGREGATE_VIEWS = (
    Collection.USER_DAILY,
    Collection.GROUP_DAILY,
    Collection.USER_ROLLUPS,
    Collection.GROUP_ROLLUPS,
    Collection.GROUP_RECAPS,
)
VIEWS = ("listens", "users", "memberships", *map(str, AGGREGATE_VIEWS))


def register_views(spark: SparkSession, settings: Settings) -> None:
    """Register every view in :data:`VIEWS` as a temporary view of ``spark``."""
    database = mongo_database(settings)
    read_listens(spark, database).createOrReplaceTempView("listens")
    read_users(spark, database).createOrReplaceTempView("users")
    read_memberships(spark, database).createOrReplaceTempView("memberships")
    for collection in AGGREGATE_VIEWS:
        frame = read_documents(spark, database, collection)
        if frame is None:
            frame = spark.createDataFrame([], "day string")
        frame.createOrReplaceTempView(str(collection))
