"""The DAG folder parses in Airflow 3 without errors and without importing heavy libraries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from analytics.jobs import JOBS, run_job
from analytics.pipeline_status import days_to_aggregate
from auxcord.errors import AuxcordError
from auxcord.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent

_PARSE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
heavy = sorted(m for m in ("pyspark", "pymongoarrow", "pandas") if m in sys.modules)
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()},
                  "dags": sorted(bag.dag_ids), "heavy": heavy,
                  "tasks": {d: sorted(bag.dags[d].task_ids) for d in bag.dag_ids},
                  "retries": {d: bag.dags[d].default_args.get("retries") for d in bag.dag_ids},
                  "catchup": {d: bag.dags[d].catchup for d in bag.dag_ids},
                  "max_active_runs": {d: bag.dags[d].max_active_runs for d in bag.dag_ids},
                  "timetable": {d: type(bag.dags[d].timetable).__name__ for d in bag.dag_ids},
                  "outlets": sorted(o.name for o in bag.dags["auxcord_daily"].tasks[0].outlets),
                  "scheduled_on": sorted(
                      a.name for a in bag.dags["auxcord_recommendations"].timetable
                      .asset_condition.objects),
                  "callbacks": {d: bool(bag.dags[d].default_args.get("on_failure_callback"))
                                for d in bag.dag_ids}}))
"""


def test_dag_folder_imports_cleanly_and_lightly(tmp_path: Path) -> None:
    environment = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        "PYTHONPATH": str(ROOT),
    }
    result = subprocess.run(
        [sys.executable, "-c", _PARSE, str(ROOT / "dags")],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["errors"] == {}
    assert set(report["dags"]) == {"auxcord_daily", "auxcord_today", "auxcord_recommendations"}
    assert report["tasks"]["auxcord_daily"] == ["aggregate"]
    assert report["retries"]["auxcord_daily"] == 2
    assert report["tasks"]["auxcord_recommendations"] == ["recommend"]
    assert report["retries"]["auxcord_recommendations"] == 2
    # The demo's two-minute schedule: the next run comes soon anyway.
    assert report["tasks"]["auxcord_today"] == ["aggregate"]
    assert report["retries"]["auxcord_today"] == 0
    assert report["heavy"] == [], "DAG files must not import Spark or pandas at parse time"
    # A fresh install runs the last day, not every night since the start date.
    assert set(report["catchup"].values()) == {False}
    assert set(report["max_active_runs"].values()) == {1}
    # One run per UTC day as its data interval: a backfill's dates are the days it runs.
    assert report["timetable"]["auxcord_daily"] == "CronDataIntervalTimetable"
    # The recommendations follow the aggregates through the asset the daily task updates.
    assert report["outlets"] == report["scheduled_on"] == ["auxcord_daily_aggregates"]
    assert all(report["callbacks"].values())


def test_a_run_aggregates_its_data_interval_day_or_the_range_its_conf_names() -> None:

    scheduled = {
        "data_interval_start": datetime(2026, 3, 8, tzinfo=UTC),
        "logical_date": datetime(2026, 3, 8, tzinfo=UTC),
    }
    # The UTC day's local day, and the day before it, which has only now ended everywhere.
    assert days_to_aggregate(scheduled) == (date(2026, 3, 7), date(2026, 3, 8))
    ranged = {
        **scheduled,
        "dag_run": SimpleNamespace(conf={"first": "2026-02-01", "last": "2026-02-28"}),
    }
    assert days_to_aggregate(ranged) == (date(2026, 2, 1), date(2026, 2, 28))
    one = {"dag_run": SimpleNamespace(conf={"first": "2026-02-03"})}
    assert days_to_aggregate(one) == (date(2026, 2, 3), date(2026, 2, 3))
    # A manual run with no logical date and no interval: the last complete UTC day.
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    assert days_to_aggregate({"logical_date": None}) == (yesterday - timedelta(1), yesterday)
    with pytest.raises(AuxcordError, match="conf: first expects a date"):
        days_to_aggregate({"dag_run": SimpleNamespace(conf={"first": "March"})})
    with pytest.raises(AuxcordError, match="before first"):
        days_to_aggregate(
            {"dag_run": SimpleNamespace(conf={"first": "2026-02-03", "last": "2026-02-01"})}
        )


def test_jobs_are_named_once_and_an_unknown_name_is_one_clear_error() -> None:

    assert set(JOBS) == {"aggregate_range", "reaggregate_after_import", "recommend"}
    with pytest.raises(AuxcordError, match="no batch job 'aggregate'; the jobs are"):
        run_job("aggregate", load_settings())
