"""What the batch DAGs share besides the jobs: which days a run is for, retries, and the
records of failed and successful tasks in ``pipeline_status`` that ``/admin`` shows.

``auxcord_daily`` runs on a data-interval timetable whose interval is one UTC day, so a run's
day is its ``data_interval_start``: the scheduled run at midnight, a backfill's run and a
manual run (Airflow infers the last complete interval) all say which day they are for, and
``airflow backfill create --from-date A --to-date B`` runs exactly the days A to B. A run's
``conf`` may name a range instead (``{"first": "2026-11-01", "last": "2026-11-30"}``), which is
how the demo and a person re-aggregating from Airflow's UI ask for several days at once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from auxcord.clients import mongo_database
from auxcord.errors import AuxcordError
from auxcord.names import Collection
from auxcord.settings import Settings, get_settings

log = logging.getLogger(__name__)

DAILY_AGGREGATES_ASSET = "auxcord_daily_aggregates"
"""The Airflow asset ``auxcord_daily`` updates and ``auxcord_recommendations`` is scheduled on."""
RETRIES = 2


def days_to_aggregate(context: Mapping[str, Any]) -> tuple[date, date]:
    """The local days ``(first, last)`` a run of ``auxcord_daily`` aggregates: its conf's
    range if given; else the day of its data interval and the day before it; else (a manual
    run with no interval) yesterday in UTC and the day before.

    Days are the listeners' local days. When the UTC day D ends, the local day D is still
    running west of UTC (until 12:00 UTC the next day at UTC-12), so a run that took D alone
    would count only the morning of those listeners' D and never come back for its evening.
    Each run therefore takes D-1 too, which has ended everywhere by then: every local day is
    aggregated once more after it is complete.
    """
    conf = _conf(context)
    if conf.get("first") or conf.get("last"):
        first = _day(conf.get("first") or conf.get("last"), "first")
        last = _day(conf.get("last") or conf.get("first"), "last")
        if last < first:
            raise AuxcordError(f"conf: last ({last}) is before first ({first})")
        return first, last
    start = context.get("data_interval_start") or context.get("logical_date")
    day = start.astimezone(UTC).date() if start else datetime.now(UTC).date() - timedelta(1)
    return day - timedelta(days=1), day


def run_settings(context: Mapping[str, Any]) -> Settings:
    """The settings a run works with: the deployment's, or with another MongoDB when its conf
    names one (``{"mongodb_uri": ...}``: a staging copy, a restored backup). Failure and
    success records always go to the deployment's own ``pipeline_status``."""
    settings = get_settings()
    uri = _conf(context).get("mongodb_uri")
    if not uri:
        return settings
    if not str(uri).startswith(("mongodb://", "mongodb+srv://")):
        raise AuxcordError("conf: mongodb_uri must start with mongodb:// or mongodb+srv://")
    return settings.model_copy(update={"mongodb_uri": str(uri)})


def _conf(context: Mapping[str, Any]) -> Mapping[str, Any]:
    run = context.get("dag_run")
    conf = getattr(run, "conf", None) or {}
    return conf if isinstance(conf, Mapping) else {}


def _day(value: object, key: str) -> date:
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise AuxcordError(f"conf: {key} expects a date as YYYY-MM-DD, got {value!r}") from None


def batch_defaults() -> dict[str, Any]:
    """``default_args`` of every batch DAG: bounded retries, and the failure and success
    records. A failed run never blocks the next one (no ``depends_on_past``)."""
    return {
        "retries": RETRIES,
        "retry_delay": timedelta(seconds=get_settings().airflow_retry_delay_s),
        "on_failure_callback": record_failure,
        "on_success_callback": record_success,
    }


def _describe(context: Mapping[str, Any]) -> dict[str, Any]:
    instance = context.get("task_instance") or context.get("ti")
    return {
        "at": datetime.now(UTC),
        "dag_id": getattr(instance, "dag_id", "?"),
        "task_id": getattr(instance, "task_id", "?"),
        "run_id": getattr(instance, "run_id", "?"),
        "try_number": getattr(instance, "try_number", None),
    }


def record_failure(context: Mapping[str, Any]) -> None:
    """Log a task that failed for good (its retries spent) and keep it in ``pipeline_status``
    under its DAG, for the admin page."""
    record = _describe(context)
    record["message"] = (
        f"{record['dag_id']}: task {record['task_id']} of run {record['run_id']} failed "
        f"after {record['try_number']} tries: {context.get('exception')}"
    )
    log.error(record["message"])
    _store(record["dag_id"], "last_failure", record)


def record_success(context: Mapping[str, Any]) -> None:
    """Keep a task's success beside the last failure, so a recovered job reads as such."""
    record = _describe(context)
    _store(record["dag_id"], "last_success", record)


def _store(dag_id: str, field: str, record: dict[str, Any]) -> None:
    mongo_database(get_settings())[Collection.PIPELINE_STATUS].update_one(
        {"_id": dag_id}, {"$set": {field: record}}, upsert=True
    )
