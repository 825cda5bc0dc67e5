"""What Airflow costs in the local stack: start to ready, idle memory and CPU, and the
scheduler's overhead on one daily run.

- **Start to ready**: ``LocalStack.up`` of Airflow's four processes until its health report
  shows each healthy; cold (a new AIRFLOW_HOME: ``airflow db migrate`` included) and warm
  (the same home after ``down``).
- **Idle**: resident memory and CPU of every process in Airflow's process groups (servers,
  LocalExecutor's workers, log servers), summed, over ``--idle`` seconds with nothing to run.
- **Overhead**: a day of five friends (on top of two weeks already aggregated) as a DAG run
  that Airflow's scheduler runs (from the REST API's trigger to the run's end) against
  ``auxcord aggregate --date D`` for the same day, alternately, ``--runs`` times each; and
  where the DAG run's time goes, from the timestamps Airflow records for the run and its task
  (trigger to queued, queued to running, the task's scheduling, queueing and start, the task
  itself, and its end to the run's end).

    .venv/bin/python bench/bench_airflow.py [--runs 2] [--idle 60]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from bench_stack import group_usage, timed_up  # run as bench/bench_airflow.py

from analytics.jobs import aggregate_range
from api.airflow import FINISHED, AirflowClient, AirflowError
from auxcord.clients import mongo_database
from auxcord.events import ListenEvent
from auxcord.names import Collection
from auxcord.settings import Settings
from devtools.stack import AIRFLOW_SERVICES, LocalStack, settings_on_free_ports

USERS = {
    "ana": "America/New_York",
    "ben": "Europe/Berlin",
    "cy": "UTC",
    "dee": "Asia/Tokyo",
    "eve": "Australia/Sydney",
}
DAYS = 14


def seed(settings: Settings, last: date) -> None:
    """Five friends in one group, a play every 4 minutes over ``DAYS`` UTC days to ``last``."""
    database = mongo_database(settings)
    for user, zone in USERS.items():
        database[Collection.USERS].insert_one({"_id": user, "display_name": user, "timezone": zone})
    database[Collection.GROUPS].insert_one(
        {"_id": "friends", "name": "Friends", "members": list(USERS)}
    )
    start = datetime.combine(last - timedelta(days=DAYS - 1), datetime.min.time(), UTC)
    documents = []
    for i, user in enumerate(USERS):
        for n in range(DAYS * 24 * 60 // 4):
            track = (n * (i + 3)) % 200
            documents.append(
                ListenEvent.from_dict(
                    {
                        "user_id": user,
                        "track_id": f"t{track}",
                        "track_name": f"Track {track}",
                        "artist_name": f"Artist {track % 23}",
                        "album_name": f"Album {track % 41}",
                        "album_image_url": None,
                        "duration_ms": 200_000,
                        "ms_played": None,
                        "played_at": start + n * timedelta(minutes=4),
                        "item_type": "track",
                        "source": "poll",
                    }
                ).to_document()
            )
    database[Collection.LISTENS].insert_many(documents)


STEPS = {
    "queued": "trigger to run queued",
    "scheduled": "run queued to running (scheduler)",
    "task_scheduled": "run running to task scheduled",
    "task_queued": "task scheduled to queued (executor)",
    "task_started": "task queued to started (worker)",
    "task": "task start to end (the job, Spark start included)",
    "run_end": "task end to run end",
}
"""The parts of one DAG run, from the timestamps Airflow records (in order)."""


def dag_run_s(client: AirflowClient, day: date) -> tuple[float, dict[str, float]]:
    """Trigger to end (this process' clock) of one ``auxcord_daily`` run for ``day``, and its
    parts (:data:`STEPS`) from the run's and its task's timestamps."""
    triggered = datetime.now(UTC)
    started = time.perf_counter()
    run = client.trigger("auxcord_daily", {"first": day.isoformat(), "last": day.isoformat()})
    while run.state not in FINISHED:
        time.sleep(0.5)
        with contextlib.suppress(AirflowError):  # a call starved on a loaded machine: ask again
            run = client.run("auxcord_daily", run.run_id)
    total = time.perf_counter() - started
    if run.state != "success" or run.duration_s is None:
        raise SystemExit(f"the DAG run {run.run_id} ended {run.state}")
    path = f"/api/v2/dags/auxcord_daily/dagRuns/{run.run_id}"
    body, task = client.get(path), client.get(f"{path}/taskInstances/aggregate")
    moments = [
        triggered,
        *(
            datetime.fromisoformat(value)
            for value in (
                body["queued_at"],
                body["start_date"],
                task["scheduled_when"],
                task["queued_when"],
                task["start_date"],
                task["end_date"],
                body["end_date"],
            )
        ),
    ]
    parts = {
        step: (later - earlier).total_seconds()
        for step, earlier, later in zip(STEPS, moments[:-1], moments[1:], strict=True)
    }
    return total, parts


def cli_aggregate_s(settings: Settings, day: date) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from cli.main import main; main()",
            "aggregate",
            "--date",
            day.isoformat(),
        ],
        env={**os.environ, **settings.as_environment()},
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle measurement")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="auxcord-bench-airflow-") as folder:
        settings = settings_on_free_ports(Path(folder))
        LocalStack(settings, airflow=False).up()
        stack = LocalStack(settings)
        try:
            cold = timed_up(stack)
            stack.down(only=AIRFLOW_SERVICES)
            warm = timed_up(stack)
            print(
                f"Airflow start to ready: cold {cold:.1f} s (db migrate included), "
                f"warm {warm:.1f} s"
            )
            airflow_pids = [
                status.pid
                for status in stack.status()
                if status.name in AIRFLOW_SERVICES and status.pid is not None
            ]
            time.sleep(10)  # let start-up work (first DAG parse) settle before measuring idle
            _, cpu_before = group_usage(airflow_pids)
            time.sleep(args.idle)
            rss_after, cpu_after = group_usage(airflow_pids)
            print(
                f"Airflow idle: RSS {rss_after:.0f} MB over its processes, CPU "
                f"{(cpu_after - cpu_before) / args.idle:.3f} cores "
                f"(mean over {args.idle:.0f} s)"
            )

            day = datetime.now(UTC).date() - timedelta(days=1)
            seed(settings, day)
            aggregate_range(settings, first=day - timedelta(days=DAYS - 1), last=day - timedelta(1))
            dag_total: list[float] = []
            dag_parts: list[dict[str, float]] = []
            cli: list[float] = []
            with AirflowClient(settings, timeout_s=30) as client:
                client.set_paused("auxcord_daily", False)
                # Unpausing queues the last complete day (catchup=False): let that run finish
                # first, or the first measured run waits in the queue behind it. The scheduler
                # may create it a moment after the unpause: wait for it to exist.
                while True:
                    with contextlib.suppress(AirflowError):
                        last = client.last_run("auxcord_daily")
                        if last is not None and last.state in FINISHED:
                            break
                    time.sleep(1)
                for _ in range(args.runs):
                    total, parts = dag_run_s(client, day)
                    dag_total.append(total)
                    dag_parts.append(parts)
                    cli.append(cli_aggregate_s(settings, day))
            print(f"one daily run ({len(USERS)} friends, ~{24 * 60 // 4} plays each that day):")
            print(f"  auxcord aggregate --date {day}:  {_each(cli)}")
            print(f"  DAG run, trigger to end:         {_each(dag_total)}")
            for step, label in STEPS.items():
                print(f"    {label}: {_each([parts[step] for parts in dag_parts])}")
        finally:
            stack.down()


def _each(seconds: list[float]) -> str:
    runs = ", ".join(f"{value:.1f}" for value in seconds)
    return f"median {statistics.median(seconds):.1f} s ({runs})"


if __name__ == "__main__":
    main()
