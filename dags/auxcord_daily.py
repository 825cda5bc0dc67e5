"""Nightly aggregates: yesterday's user and group statistics for every group.

Thin on purpose: the task calls ``analytics.aggregate`` and nothing heavy is imported while
Airflow parses this file. ``catchup=True`` fills missed nights, and ``airflow backfill create
--dag-id auxcord_daily --from-date A --to-date B`` queues past ones (``auxcord backfill`` does a
range in one Spark application instead).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import dag, get_current_context, task


def _failed(context: dict[str, object]) -> None:
    from analytics.pipeline_status import record_failure

    record_failure("auxcord_daily", context)


@dag(
    schedule="0 2 * * *",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=True,
    max_active_runs=1,
    tags=["auxcord", "aggregates"],
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "on_failure_callback": _failed,
    },
)
def auxcord_daily() -> None:
    @task
    def aggregate() -> dict[str, object]:
        from analytics.aggregate import aggregate_days
        from analytics.pipeline_status import day_to_aggregate
        from auxcord.settings import get_settings

        day = day_to_aggregate(get_current_context())
        result = aggregate_days(get_settings(), day, day)
        return {
            "day": day.isoformat(),
            "user_days": result.user_days,
            "group_days": result.group_days,
        }

    aggregate()


auxcord_daily()
