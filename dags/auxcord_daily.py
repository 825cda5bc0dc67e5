"""Daily aggregates: the local days a UTC day ended, user and group statistics, then rollups.

Thin on purpose: the task calls the ``aggregate_range`` job of ``analytics.jobs`` and nothing
heavy is imported while Airflow parses this file. The timetable's data interval is one UTC
day, so each run says which day it is for (``analytics.pipeline_status.days_to_aggregate``):
the scheduled run just after midnight aggregates the local day that ended and the one before
it (still running west of UTC when the previous run came), and ``airflow backfill create
--dag-id auxcord_daily --from-date A --to-date B --max-active-runs 1`` runs the days A-1 to B
(``auxcord backfill --from A-1 --to B`` does the same range in one Spark application and
stores the same documents). ``catchup=False``: a new deployment runs the last day only;
history is a backfill's business. Each success updates the ``auxcord_daily_aggregates`` asset,
which schedules the recommendations.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import Asset, CronDataIntervalTimetable, dag, get_current_context, task

from analytics.pipeline_status import DAILY_AGGREGATES_ASSET, batch_defaults


@dag(
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    # One run at a time, and one aggregate task at a time across runs (a backfill's runs
    # included): a day builds on the days stored before it. A second scheduler started by
    # mistake respects both, since both are checked in the metadata database.
    max_active_runs=1,
    max_consecutive_failed_dag_runs=0,  # a failed night never pauses the next ones
    tags=["auxcord", "aggregates"],
    default_args=batch_defaults(),
)
def auxcord_daily() -> None:
    @task(outlets=[Asset(DAILY_AGGREGATES_ASSET)], max_active_tis_per_dag=1)
    def aggregate() -> dict[str, object]:
        from analytics.jobs import run_job
        from analytics.pipeline_status import days_to_aggregate, run_settings

        context = get_current_context()
        first, last = days_to_aggregate(context)
        return run_job("aggregate_range", run_settings(context), first=first, last=last)

    aggregate()


auxcord_daily()
