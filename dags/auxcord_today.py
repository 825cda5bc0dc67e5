"""Today so far: the local days still running, aggregated again every two minutes.

``auxcord_daily`` adds a day once it has ended, so on its own today's leaderboard stays empty
until the night. This DAG is the demo's schedule, at demo speed: every two minutes Airflow's
scheduler starts a run that aggregates the local days that may still change at that moment
(the UTC day of the run, the day before it and the day after, which is "today" somewhere
between UTC-12 and UTC+14), through the same ``aggregate_range`` job as the nightly run. It does
not update the ``auxcord_daily_aggregates`` asset: recommendations come from whole days, after
``auxcord_daily``, and a fit takes longer than two minutes, so following this DAG would keep
Spark fitting without pause.

Paused when created, like every DAG here: ``auxcord demo`` unpauses it. A deployment that
wants a live "today" board may unpause it too; each run costs a Spark start. ``catchup=False``
and one run at a time: a run that outlasts two minutes is followed by the next due one, not by
the ones it missed. No retries: the next run comes two minutes later anyway, and a failed run
never stops it (``max_consecutive_failed_dag_runs=0``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import CronTriggerTimetable, dag, get_current_context, task

from analytics.pipeline_status import batch_defaults

EVERY = "*/2 * * * *"


@dag(
    schedule=CronTriggerTimetable(EVERY, timezone="UTC", run_immediately=True),
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    max_consecutive_failed_dag_runs=0,
    tags=["auxcord", "aggregates", "demo"],
    default_args={**batch_defaults(), "retries": 0},
)
def auxcord_today() -> None:
    @task(max_active_tis_per_dag=1)
    def aggregate() -> dict[str, object]:
        from analytics.jobs import run_job
        from analytics.pipeline_status import run_settings

        context = get_current_context()
        due = context.get("logical_date") or datetime.now(UTC)
        day = due.astimezone(UTC).date()
        return run_job(
            "aggregate_range",
            run_settings(context),
            first=day - timedelta(days=1),
            last=day + timedelta(days=1),
        )

    aggregate()


auxcord_today()
