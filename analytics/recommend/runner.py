"""Running the recommendations job on what MongoDB holds, and storing the run.

The I/O edge of :mod:`analytics.recommend`: everything else there is pure. Listens come from
MongoDB (the serving copy the streaming job writes), read by :mod:`analytics.sources`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from analytics.recommend.job import (
    FallbackReason,
    RecommendationRun,
    recommend,
    run_id_of,
    write_run,
)
from analytics.sources import read_listens, read_memberships
from auxcord.clients import mongo_database
from auxcord.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def run_recommendations(
    settings: Settings,
    *,
    spark: SparkSession | None = None,
    n: int = 20,
    seed: int = 42,
    now: datetime | None = None,
) -> RecommendationRun:
    """Recommend for every group member and store the run (replacing a same-day run).

    Too little data is not an error: with no groups the run is stored empty, with its reason,
    so a fresh install's scheduled runs succeed until there is something to recommend.
    """
    from auxcord.spark import build_spark_session

    database = mongo_database(settings)
    session = spark or build_spark_session(settings, "auxcord-recommendations")
    memberships = read_memberships(session, database)
    if memberships.isEmpty():
        generated_at = now or datetime.now(UTC)
        run = RecommendationRun(
            run_id=run_id_of(generated_at),
            generated_at=generated_at,
            evaluation=None,
            fallback_reason=FallbackReason.NO_GROUPS,
        )
    else:
        run = recommend(read_listens(session, database), memberships, n=n, seed=seed, now=now)
    write_run(database, run)
    log.info(
        "recommendations stored: run %s, %d users, %s",
        run.run_id,
        len(run.documents),
        "ALS" if run.fallback_reason is None else f"popularity ({run.fallback_reason.message})",
    )
    return run
