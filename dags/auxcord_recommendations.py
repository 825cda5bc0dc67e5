"""Daily recommendations from the group's own listening (Spark ML, implicit ALS).

Thin on purpose: the task calls ``analytics.recommend.runner`` and nothing heavy is imported
while Airflow parses this file. It runs at 03:30 UTC, after the nightly aggregates.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import dag, task


@dag(
    schedule="30 3 * * *",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["auxcord", "recommendations"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
)
def auxcord_recommendations() -> None:
    @task
    def recommend() -> dict[str, object]:
        from analytics.recommend.runner import run_recommendations
        from auxcord.settings import get_settings

        run = run_recommendations(get_settings())
        return {
            "run_id": run.run_id,
            "users": len(run.documents),
            "als_hit_rate": run.evaluation.als.hit_rate,
        }

    recommend()


auxcord_recommendations()
