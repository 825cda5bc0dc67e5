"""Recommendations from the group's own listening (Spark ML, implicit ALS), after the aggregates.

Thin on purpose: the task calls the ``recommend`` job of ``analytics.jobs`` and nothing heavy is
imported while Airflow parses this file. It is scheduled on the ``auxcord_daily_aggregates``
asset, so it runs when a day's aggregates succeeded, not at a guessed clock time; a failed
aggregate run leaves the last recommendations in place.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import Asset, dag, get_current_context, task

from analytics.pipeline_status import DAILY_AGGREGATES_ASSET, batch_defaults


@dag(
    schedule=[Asset(DAILY_AGGREGATES_ASSET)],
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    max_consecutive_failed_dag_runs=0,
    tags=["auxcord", "recommendations"],
    default_args=batch_defaults(),
)
def auxcord_recommendations() -> None:
    @task
    def recommend() -> dict[str, object]:
        from analytics.jobs import run_job
        from analytics.pipeline_status import run_settings

        return run_job("recommend", run_settings(get_current_context()))

    recommend()


auxcord_recommendations()
