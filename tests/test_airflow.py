"""Airflow for real: the local stack's Airflow, its own scheduler running the DAG files.

Airflow starts once for this module, against the session's test stack, with a MongoDB
database of its own holding four friends' plays over the last five days. Every wait polls
Airflow's REST API (or MongoDB) for a result; nothing sleeps for a guessed time. The tests run
in file order: the scheduled run, the demo's schedule (``auxcord_today``), a run that fails for
good, a backfill after it (a failed run must not stop later ones), then ``down``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from analytics.jobs import aggregate_range
from analytics.pipeline_status import RETRIES
from api.airflow import FINISHED, AirflowClient, AirflowError, DagRun
from auxcord.accounts import AccountStore
from auxcord.clients import mongo_client, mongo_database
from auxcord.names import Collection
from auxcord.settings import Settings
from auxcord.tokens import TokenCipher
from devtools import airflow
from devtools.stack import AIRFLOW_SERVICES, LocalStack, free_port
from tests.analytics.test_daily import GROUPS, TRACKS, ZONES, play

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

pytestmark = pytest.mark.stack

T = TypeVar("T")
DATABASE = "auxcord_airflow_tests"
YESTERDAY = datetime.now(UTC).date() - timedelta(days=1)
BACKFILL = (YESTERDAY - timedelta(days=3), YESTERDAY - timedelta(days=1))
RUN_TIMEOUT_S = 480.0
"""A bound, not an expectation: a run takes 30 to 90 s here, a Spark start included."""


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float = RUN_TIMEOUT_S) -> T:
    """Poll ``probe`` until it returns something; fail naming ``what`` after ``timeout_s``.
    An API call that times out (SQLite's one writer, a busy machine) is asked again."""
    deadline = time.monotonic() + timeout_s
    last_error: AirflowError | None = None
    while time.monotonic() < deadline:
        try:
            found = probe()
        except AirflowError as exc:
            last_error = exc
            found = None
        if found is not None:
            return found
        time.sleep(1)
    raise AssertionError(f"gave up waiting for {what} after {timeout_s:.0f} s ({last_error})")


def seed(settings: Settings) -> None:
    """Four friends in four time zones, a play every 25 minutes over the last five UTC days."""
    database = mongo_database(settings)
    for user, zone in ZONES.items():
        database[Collection.USERS].insert_one({"_id": user, "display_name": user, "timezone": zone})
    for group, members in GROUPS.items():
        database[Collection.GROUPS].insert_one({"_id": group, "name": group, "members": members})
    from auxcord.events import ListenEvent

    start = datetime.combine(YESTERDAY - timedelta(days=4), datetime.min.time(), UTC)
    documents = [
        ListenEvent.from_dict(
            {
                **play(
                    user,
                    TRACKS[(n * (i + 3)) % len(TRACKS)],
                    start + n * timedelta(minutes=25),
                    180_000,
                ),
                "source": "poll",
            }
        ).to_document()
        for i, user in enumerate(ZONES)
        for n in range(5 * 24 * 60 // 25)
    ]
    database[Collection.LISTENS].insert_many(documents)


@pytest.fixture(scope="module")
def airflow_settings(stack_settings: Settings) -> Iterator[Settings]:
    """The session stack plus Airflow (started here, once), tasks on a database of their own,
    retries a second apart."""
    settings = stack_settings.model_copy(
        update={
            "mongodb_uri": stack_settings.mongodb_uri.replace("/auxcord?", f"/{DATABASE}?"),
            "airflow_retry_delay_s": 1.0,
            "admin_users": ["cy"],
        }
    )
    with mongo_client(settings) as client:
        client.drop_database(DATABASE)
    seed(settings)
    stack = LocalStack(settings)
    try:
        stack.up()
        yield settings
    finally:
        stack.down(only=AIRFLOW_SERVICES)
        with mongo_client(settings) as client:
            client.drop_database(DATABASE)


@pytest.fixture(scope="module")
def client(airflow_settings: Settings) -> Iterator[AirflowClient]:
    with AirflowClient(airflow_settings, timeout_s=60) as rest:
        rest.set_paused("auxcord_daily", False)
        yield rest


def finished(rest: AirflowClient, dag_id: str, run_id: str) -> DagRun | None:
    run = rest.run(dag_id, run_id)
    return run if run.state in FINISHED else None


def days_stored(settings: Settings, collection: Collection, days: list[date]) -> list[Any]:
    wanted = {"day": {"$in": [day.isoformat() for day in days]}}
    found = mongo_database(settings)[collection].find(wanted)
    return sorted(found, key=lambda doc: doc["_id"])


def test_the_scheduler_runs_the_last_day_when_the_dag_is_unpaused(
    airflow_settings: Settings, client: AirflowClient
) -> None:
    # The recommendations listen for the aggregates' asset from now on (a paused DAG's
    # asset events are not queued); they are paused again once one run of them is due.
    client.set_paused("auxcord_recommendations", False)

    # catchup=False: unpausing queues the last complete day only, not every day since 2024.
    def scheduled() -> DagRun | None:
        runs = [run for run in client.runs("auxcord_daily") if run.run_type == "scheduled"]
        return runs[0] if runs and runs[0].state in FINISHED else None

    run = wait_for("the scheduled run", scheduled)
    assert run.state == "success", run
    assert run.logical_date is not None and run.logical_date.date() == YESTERDAY
    assert [r.run_type for r in client.runs("auxcord_daily")].count("scheduled") == 1
    users = days_stored(airflow_settings, Collection.USER_DAILY, [YESTERDAY])
    assert {doc["user_id"] for doc in users} == set(ZONES)
    groups = days_stored(airflow_settings, Collection.GROUP_DAILY, [YESTERDAY])
    assert {doc["group_id"] for doc in groups} == set(GROUPS)
    status = mongo_database(airflow_settings)[Collection.PIPELINE_STATUS].find_one(
        {"_id": "auxcord_daily"}
    )
    assert status is not None and status["last_success"]["run_id"] == run.run_id
    # The run updated the aggregates' asset, which started the recommendations after it.
    events = wait_for(
        "the run's asset events",
        lambda: client.get("/api/v2/assets/events", source_run_id=run.run_id)["asset_events"],
    )
    assert [event["name"] for event in events] == ["auxcord_daily_aggregates"]

    def follower() -> DagRun | None:
        runs = client.runs("auxcord_recommendations")
        return next((r for r in runs if r.run_type == "asset_triggered"), None)

    recommendations = wait_for("the recommendations after the aggregates", follower)
    client.set_paused("auxcord_recommendations", True)
    emitted = datetime.fromisoformat(events[0]["timestamp"])
    assert recommendations.start is None or recommendations.start >= emitted


def test_the_scheduler_starts_the_demos_runs_of_the_days_still_running(
    airflow_settings: Settings, client: AirflowClient
) -> None:
    # What the demo's schedule stores comes from this run alone.
    database = mongo_database(airflow_settings)
    database[Collection.USER_DAILY].delete_many({"day": YESTERDAY.isoformat()})
    database[Collection.GROUP_DAILY].delete_many({"day": YESTERDAY.isoformat()})
    client.set_paused("auxcord_today", False)

    # Nobody triggers it: unpaused, the scheduler starts its run on the two-minute schedule.
    def scheduled() -> DagRun | None:
        runs = [run for run in client.runs("auxcord_today") if run.run_type == "scheduled"]
        return runs[0] if runs and runs[0].state in FINISHED else None

    try:
        run = wait_for("auxcord_today's scheduled run", scheduled)
    finally:
        client.set_paused("auxcord_today", True)
    assert run.state == "success", run
    # The UTC day it ran on and the day either side: yesterday is among them.
    path = f"/api/v2/dags/auxcord_today/dagRuns/{run.run_id}/taskInstances/aggregate"
    summary = client.get(f"{path}/xcomEntries/return_value")["value"]
    assert (summary["first"], summary["last"]) == (
        YESTERDAY.isoformat(),
        (YESTERDAY + timedelta(days=2)).isoformat(),
    ), summary
    users = days_stored(airflow_settings, Collection.USER_DAILY, [YESTERDAY])
    assert {doc["user_id"] for doc in users} == set(ZONES)
    groups = days_stored(airflow_settings, Collection.GROUP_DAILY, [YESTERDAY])
    assert {doc["group_id"] for doc in groups} == set(GROUPS)


def test_a_failing_task_is_retried_then_recorded_and_shown_on_admin(
    airflow_settings: Settings, client: AirflowClient
) -> None:
    from cli.webserver import serve_in_thread
    from tests.api.world import World, browser

    closed = free_port()  # nothing listens there: MongoDB is "stopped" for this run
    conf = {
        "first": YESTERDAY.isoformat(),
        "mongodb_uri": f"mongodb://127.0.0.1:{closed}/auxcord?directConnection=true",
    }
    run = client.trigger("auxcord_daily", conf)
    run = wait_for("the failing run", lambda: finished(client, "auxcord_daily", run.run_id))
    assert run.state == "failed"
    assert client.task_tries("auxcord_daily", run.run_id, "aggregate") == RETRIES + 1

    status = mongo_database(airflow_settings)[Collection.PIPELINE_STATUS].find_one(
        {"_id": "auxcord_daily"}
    )
    assert status is not None
    failure = status["last_failure"]
    assert failure["run_id"] == run.run_id and failure["try_number"] == RETRIES + 1
    assert f"MongoDB at 127.0.0.1:{closed} does not answer" in failure["message"]

    accounts = AccountStore(
        mongo_database(airflow_settings), TokenCipher(airflow_settings.secret_key_value())
    )
    accounts.link(
        user_id="cy",
        display_name="Cy",
        country=None,
        timezone="UTC",
        client_id="auxcord-local",
        token_info={"access_token": "a", "refresh_token": "r", "expires_in": 3600},
    )
    with serve_in_thread(airflow_settings, "127.0.0.1", free_port()) as base:
        site = World(settings=airflow_settings, base=base, first=YESTERDAY, last=YESTERDAY)
        with browser(site, "cy") as web:
            page = web.get("/admin").text
    assert f"127.0.0.1:{closed} does not answer" in page, "the failure record is on /admin"
    assert 'id="airflow-runs"' in page and run.run_id in page, "so is Airflow's last run"
    assert f'href="{airflow_settings.airflow_url}/' in page, "with a link to Airflow's UI"


@pytest.mark.timeout(RUN_TIMEOUT_S * 3)
def test_airflow_backfill_stores_what_auxcord_backfill_stores(
    airflow_settings: Settings, client: AirflowClient, spark: SparkSession
) -> None:
    first, last = BACKFILL
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    # What the demo suggests: Airflow's own command, through `auxcord airflow`.
    created = auxcord(
        airflow_settings,
        "airflow",
        "backfill",
        "create",
        "--dag-id",
        "auxcord_daily",
        "--from-date",
        first.isoformat(),
        "--to-date",
        last.isoformat(),
        "--max-active-runs",
        "1",
    )
    assert created.returncode == 0, created.stderr[-2000:]

    def backfilled() -> list[DagRun] | None:
        runs = [run for run in client.runs("auxcord_daily") if run.run_type == "backfill"]
        done = len(runs) == len(days) and all(run.state in FINISHED for run in runs)
        return runs if done else None

    runs = wait_for("the backfill's runs", backfilled, RUN_TIMEOUT_S * len(days))
    assert [run.state for run in runs] == ["success"] * len(days)
    # /admin's last run is the one that started last, not the failed run of today before it.
    newest = client.last_run("auxcord_daily")
    assert newest is not None and newest.run_id == runs[-1].run_id, newest
    assert sorted(run.logical_date.date() for run in runs if run.logical_date) == days
    by_airflow = {
        name: days_stored(airflow_settings, name, days)
        for name in (Collection.USER_DAILY, Collection.GROUP_DAILY)
    }

    # What `auxcord backfill --from A-1 --to B` runs, on a copy of the same plays (in this
    # process's Spark session, which the test run starts anyway).
    copy = airflow_settings.model_copy(
        update={"mongodb_uri": airflow_settings.mongodb_uri.replace(DATABASE, DATABASE + "_cli")}
    )
    with mongo_client(copy) as mongo:
        mongo.drop_database(DATABASE + "_cli")
    try:
        seed(copy)
        # Each Airflow run also takes the day before its own (the local day that ended last).
        aggregate_range(copy, first=first - timedelta(days=1), last=last, spark=spark)
        by_cli = {name: days_stored(copy, name, days) for name in by_airflow}
    finally:
        with mongo_client(copy) as mongo:
            mongo.drop_database(DATABASE + "_cli")
    assert by_cli[Collection.USER_DAILY], "the days have plays"
    assert by_airflow == by_cli


def auxcord(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from cli.main import main; main()", *args],
        env={**os.environ, **settings.as_environment()},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_stack_down_leaves_no_airflow_process(airflow_settings: Settings) -> None:
    home = str(airflow.airflow_home(airflow_settings))
    stack = LocalStack(airflow_settings)
    assert len(_processes_of(home)) >= len(AIRFLOW_SERVICES)
    stack.down(only=AIRFLOW_SERVICES)
    assert _processes_of(home) == []
    states = {status.name: status.running for status in stack.status()}
    assert not any(states[name] for name in AIRFLOW_SERVICES)
    assert states["mongodb"], "the rest of the stack runs on"


def _processes_of(home: str) -> list[int]:
    """Live processes whose environment names this Airflow home, or that work in it: its
    servers, LocalExecutor's workers, tasks and their Spark drivers alike (the api-server
    retitles itself over its environment, so its working directory gives it away)."""
    needle = f"AIRFLOW_HOME={home}\0".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if "\nState:\tZ" in (proc / "status").read_text():
                continue
            cwd = os.readlink(proc / "cwd").removesuffix(" (deleted)")
            if needle in (proc / "environ").read_bytes() or cwd.startswith(home):
                found.append(int(proc.name))
        except OSError:
            continue
    return found
