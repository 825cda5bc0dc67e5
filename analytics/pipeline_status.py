"""What the nightly DAGs need besides the jobs: which day a run is for, and failure records.

Airflow 3's cron timetable gives a run ``data_interval_start == data_interval_end ==
logical_date`` (the moment it is scheduled), and manual runs may have no logical date at all,
so the day to aggregate is derived here, explicitly: the UTC day before the run's moment.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from auxcord.clients import mongo_database
from auxcord.names import Collection
from auxcord.settings import get_settings

log = logging.getLogger(__name__)


def day_to_aggregate(context: Mapping[str, Any]) -> date:
    """The day a nightly run aggregates: the day before its logical date (or before now)."""
    moment = context.get("logical_date") or context.get("data_interval_end") or datetime.now(UTC)
    return (moment.astimezone(UTC) - timedelta(days=1)).date()


def record_failure(dag_id: str, context: Mapping[str, Any]) -> None:
    """Log a failed task loudly and keep it in ``pipeline_status`` for the admin page."""
    instance = context.get("task_instance")
    error = context.get("exception")
    message = f"{dag_id}: task {getattr(instance, 'task_id', '?')} failed: {error}"
    log.error(message)
    mongo_database(get_settings())[Collection.PIPELINE_STATUS].update_one(
        {"_id": dag_id},
        {"$set": {"last_failure": {"at": datetime.now(UTC), "message": message}}},
        upsert=True,
    )
