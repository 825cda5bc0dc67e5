"""Running the recommendations job on what MongoDB holds, and storing the run.

The I/O edge of :mod:`analytics.recommend`: everything else there is pure. Listens come from
MongoDB (the serving copy the streaming job writes), read by :mod:`analytics.sources`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from analytics.recommend.job import RecommendationRun, recommend, write_run
from analytics.sources import read_listens, read_memberships
from auxcord.clients import mongo_database
from auxcord.errors import AuxcordError
from auxcord.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


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
