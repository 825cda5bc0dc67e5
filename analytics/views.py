"""SparkSQL views over what MongoDB holds, for ``auxcord sql`` and SQL-written reports.

``listens`` (music and podcasts, UTC), ``users`` (user_id, timezone), ``memberships``
(group_id, user_id), ``user_daily`` and ``group_daily`` (the stored aggregates).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from analytics.sources import read_listens, read_memberships, read_users
from auxcord.clients import mongo_database
from auxcord.names import Collection
from auxcord.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

VIEWS = ("listens", "users", "memberships", "user_daily", "group_daily")


def register_views(spark: SparkSession, settings: Settings) -> None:
    """Register every view in :data:`VIEWS` as a temporary view of ``spark``."""
    from bson import json_util

    database = mongo_database(settings)
    read_listens(spark, database).createOrReplaceTempView("listens")
    read_users(spark, database).createOrReplaceTempView("users")
    read_memberships(spark, database).createOrReplaceTempView("memberships")
    for collection in (Collection.USER_DAILY, Collection.GROUP_DAILY):
        # Nested arrays of documents: JSON lets Spark infer their schema.
        documents = [
            json_util.dumps(document, json_options=json_util.RELAXED_JSON_OPTIONS)
            for document in database[collection].find({}, {"_id": 0})
        ]
        if documents:
            frame = spark.read.json(spark.sparkContext.parallelize(documents))
        else:
            frame = spark.createDataFrame([], "day string")
        frame.createOrReplaceTempView(str(collection))
