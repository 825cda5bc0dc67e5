"""``make demo``: every component built so far, on the local stack and a simulated friend group.

Each component that lands adds its step here, so one command always shows the whole pipeline.
Today: the local servers and Airflow, the Spotify simulator, the web app, every simulated
friend linked through the real sign-in flow, the pollers publishing their plays and
now-playing changes to Kafka, the Spark streaming job storing them in MongoDB and GCS, the
aggregates and recommendations of the demo group as DAG runs that Airflow's scheduler starts
(the demo unpauses the DAGs and asks the REST API once for a run over the imported history;
``auxcord_today`` then re-aggregates the days still running every two minutes, and the
recommendations follow each run on the aggregates' asset), and the dashboard (live feed,
leaderboards, taste-match, recap, admin health with Airflow's last runs) for every friend.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from rich.console import Console
from rich.table import Table

from auxcord.names import Topic
from auxcord.settings import Settings
from devtools.stack import LocalStack

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)
DEMO_USERS = 5
"""One development-mode Spotify app admits five users."""
DEMO_HISTORY_DAYS = 90
"""Months of each friend's history, imported from their simulated Spotify export at start."""
DEMO_GROUP = "demo-friends"
BATCH_DAGS = ("auxcord_daily", "auxcord_today", "auxcord_recommendations")
"""The DAGs the demo unpauses: the nightly run, today's every two minutes (the nightly
schedule at demo speed, ``dags/auxcord_today.py``), and the recommendations after either."""
ASK_AGAIN_S = 10
"""How soon the demo asks again when Airflow refused or missed its call (SQLite takes one
writer at a time, and a busy scheduler can hold it for seconds)."""
DEMO_SPEED = 1.0
"""Live listening in real time from now, after the imported history: the dashboard shows today."""


def run_demo(settings: Settings, console: Console) -> None:
    """Start everything, print where it runs, and keep serving until Ctrl-C."""
    from cli.demo_history import import_on_start
    from cli.webserver import serve_in_thread
    from devtools.linking import link_simulated_users, simulated_users
    from devtools.simulator import SimulatorConfig, run_simulator_in_thread

    console.rule("[bold]auxcord demo")
    # The demo prints its own line for each of these steps; their INFO logs would repeat it.
    for name in ("devtools.stack", "producers.history", "cli.demo_history"):
        logging.getLogger(name).setLevel(logging.WARNING)
    LocalStack(settings).up(on_progress=lambda line: console.print(f"[dim]·[/dim] {line}"))
    with ExitStack() as running:
        simulator_port = urlsplit(settings.spotify_api_base).port or 18800
        simulator = running.enter_context(
            run_simulator_in_thread(
                SimulatorConfig(
                    users=DEMO_USERS,
                    days=DEMO_HISTORY_DAYS,
                    speed=DEMO_SPEED,
                    port=simulator_port,
                    listening_at_start=1,  # the live feed moves in the first minute
                )
            )
        )
        console.print(
            f"[dim]·[/dim] Spotify simulator on {simulator.url} "
            f"({DEMO_USERS} friends, {DEMO_HISTORY_DAYS} days of history, "
            f"then live in real time)"
        )
        if not settings.admin_users:
            # The self-hoster sets AUXCORD_ADMIN_USERS; in the demo the first friend is admin.
            settings = settings.model_copy(
                update={"admin_users": [simulated_users(settings)[0]["user_id"]]}
            )
        dashboard = running.enter_context(
            serve_in_thread(settings, settings.api_host, settings.api_port)
        )
        console.print(f"[dim]·[/dim] dashboard on {dashboard}/")
        linked = link_simulated_users(settings)
        console.print(f"[dim]·[/dim] linked {len(linked)} friends through Spotify sign-in")
        stop = threading.Event()
        running.callback(stop.set)
        poller = _start_pollers(settings, stop)
        console.print("[dim]·[/dim] pollers publishing plays and now-playing changes to Kafka")
        _ensure_demo_group(settings, [user.user_id for user in linked])
        console.print("[dim]·[/dim] starting Spark (10 to 20 s) to import each friend's history")
        history = import_on_start(settings, simulator, [user.user_id for user in linked], console)
        running.enter_context(_streaming(settings, before_stream=history))
        console.print("[dim]·[/dim] streaming Kafka → MongoDB listens/now_playing + GCS Parquet")
        threading.Thread(
            target=_start_batch_runs, args=(settings, stop), name="airflow-runs", daemon=True
        ).start()
        console.print(
            f"[dim]·[/dim] Airflow's scheduler runs the aggregates of group {DEMO_GROUP!r}: "
            "the imported history first (auxcord_daily), then the days still running every "
            "2 minutes (auxcord_today), each followed by the recommendations"
        )

        table = Table(title="auxcord demo: what runs where")
        table.add_column("component")
        table.add_column("where")
        table.add_row("Dashboard", f"{dashboard}/")
        table.add_row("Spotify simulator", f"{simulator.url}  (ground truth: /_sim/ground-truth)")
        table.add_row("Kafka (Tansu)", settings.kafka_bootstrap)
        table.add_row("MongoDB (SecantusDB)", settings.mongodb_uri)
        table.add_row(
            "GCS (fake-gcs-server)",
            f"{settings.storage_emulator_host}  bucket {settings.gcs_bucket}",
        )
        table.add_row(
            "Pollers",
            f"{len(linked)} users → Kafka topics "
            f"{settings.topic(Topic.LISTENS)}, {settings.topic(Topic.NOW_PLAYING)}",
        )
        table.add_row(
            "Streaming (Spark)",
            f"listens and now_playing in MongoDB, raw/listens/ in bucket {settings.gcs_bucket}, "
            f"checkpoint {settings.stream_checkpoint}",
        )
        table.add_row(
            "Airflow (UI, REST API)",
            f"{settings.airflow_url}/  login {settings.airflow_username} / "
            f"{settings.airflow_password_value()}",
        )
        table.add_row("Linked friends", ", ".join(user.display_name for user in linked))
        table.add_row("Admin (health page)", ", ".join(settings.admin_users))
        console.print(table)
        week_ago = datetime.now(UTC).date() - timedelta(days=7)
        console.print(
            f"Watch the batch runs in Airflow at {settings.airflow_url}/dags/auxcord_daily, and "
            "try a backfill of last week, one day per run:"
        )
        # One line however narrow the terminal, so that it still works when copy-pasted.
        console.print(
            f"  [bold]{_auxcord_command()} airflow backfill create --dag-id auxcord_daily "
            f"--from-date {week_ago} --to-date {week_ago + timedelta(days=6)} "
            "--max-active-runs 1[/bold]",
            soft_wrap=True,
            highlight=False,
        )
        console.print(
            f"Open {dashboard}/, press [bold]Sign in with Spotify[/bold] and pick any friend on "
            f"the simulator's page: group {DEMO_GROUP!r} shows who is listening now (live), "
            "recent listens, and after the first aggregates the leaderboards, taste-match, "
            f"recap and recommendations. {linked[0].display_name} also sees /admin. "
            "Ctrl-C ends the demo; [bold]make stack-down[/bold] stops the servers."
        )
        try:
            while poller.is_alive():
                time.sleep(1)
        except KeyboardInterrupt:
            console.print("demo stopped")


def _auxcord_command() -> str:
    """How to run this ``auxcord`` from the shell the demo was started in: its name when it is
    on PATH (an activated venv, an installed package), else its path (``make demo`` runs
    ``.venv/bin/auxcord`` without activating the venv)."""
    own = Path(sys.executable).with_name("auxcord")
    on_path = shutil.which("auxcord")
    if on_path is not None and Path(on_path).resolve() == own.resolve():
        return "auxcord"
    with contextlib.suppress(ValueError):  # another drive (Windows)
        relative = os.path.relpath(own)
        if not relative.startswith(".."):
            return relative
    return str(own)


@contextmanager
def _streaming(
    settings: Settings, *, before_stream: Callable[[SparkSession], object]
) -> Iterator[SparkSession]:
    from auxcord.spark import build_spark_session
    from streaming.job import QUERY_NAME, start_stream

    spark = build_spark_session(settings, QUERY_NAME)
    before_stream(spark)  # the history import stores its plays on the same checkpoint first
    query, _ = start_stream(spark, settings)
    try:
        yield spark
    finally:
        query.stop()
        spark.stop()


def _ensure_demo_group(settings: Settings, members: list[str]) -> None:
    """One group of every simulated friend (the dashboard will let friends make their own)."""
    from auxcord.clients import mongo_database
    from auxcord.names import Collection

    mongo_database(settings)[Collection.GROUPS].update_one(
        {"_id": DEMO_GROUP},
        {"$set": {"name": "Demo friends", "members": members, "owner": members[0]}},
        upsert=True,
    )


def _start_batch_runs(settings: Settings, stop: threading.Event) -> None:
    """Hand the batch jobs to Airflow's scheduler: unpause the DAGs, and ask through the REST
    API for one ``auxcord_daily`` run over every day that has listens (the imported history).
    From then on the scheduler starts every run: ``auxcord_today`` every two minutes,
    ``auxcord_daily`` at midnight, the recommendations after each; it retries and records a
    failed run, and the next one comes all the same. Here only a call Airflow refused or
    missed is made again (SQLite takes one writer at a time), and the history run is asked
    for again if it failed for good, until one succeeds."""
    from api.airflow import AirflowClient, DagRun
    from auxcord.clients import mongo_database
    from auxcord.names import Collection

    listens = mongo_database(settings)[Collection.LISTENS]
    history: DagRun | None = None
    to_unpause = list(BATCH_DAGS)
    with AirflowClient(settings, timeout_s=30) as airflow:
        wait = 0.0
        while not stop.wait(wait):
            wait = ASK_AGAIN_S
            try:
                if history is not None:
                    history = airflow.run(history.dag_id, history.run_id)
                    if history.state == "failed":
                        log.warning("demo: the history run %s failed; asking again", history.run_id)
                        history = None
                oldest = listens.find_one({}, sort=[("played_at", 1)])
                newest = listens.find_one({}, sort=[("played_at", -1)])
                if history is None and oldest is not None and newest is not None:
                    # Local days reach a day either side of the UTC ones.
                    first = oldest["played_at"].date() - timedelta(days=1)
                    last = newest["played_at"].date() + timedelta(days=1)
                    conf = {"first": first.isoformat(), "last": last.isoformat()}
                    history = airflow.trigger("auxcord_daily", conf)
                    log.info("demo: asked Airflow for %s (%s to %s)", history.run_id, first, last)
                while to_unpause:  # after the history run, so it is queued first
                    airflow.set_paused(to_unpause[0], False)
                    to_unpause.pop(0)
                if history is not None and history.state == "success":
                    return
            except Exception as exc:  # whatever went wrong, ask again
                log.warning("demo: Airflow did not take the call, asking again: %s", exc)


def _start_pollers(settings: Settings, stop: threading.Event) -> threading.Thread:
    from producers.poller import Poller, PollerConfig

    poller = Poller(settings, PollerConfig(speed=DEMO_SPEED), owner="demo")
    thread = threading.Thread(target=poller.run, args=(stop,), name="pollers", daemon=True)
    thread.start()
    return thread
