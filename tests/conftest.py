"""Session-wide fixtures: one local service stack and one SparkSession for the whole test run.

Starting Spark costs 10 to 20 s and the stack a second or two, so each starts once, lazily, when
a test first asks for it. The stack runs on free loopback ports with its data in a temporary
directory, so a developer's running demo is never touched.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from auxcord.clients import ensure_bucket, ensure_topics, mongo_client
from auxcord.settings import Settings, SpotifyApp, get_settings, load_settings
from devtools.simulator import RunningSimulator, SimulatorConfig, run_simulator_in_thread
from devtools.stack import LocalStack, free_port, settings_on_free_ports

if TYPE_CHECKING:
    from pymongo.database import Database
    from pyspark.sql import SparkSession

    from tests.api.world import World

_database_numbers = itertools.count()
_stream_numbers = itertools.count()

SPARK_JAVA_OPTIONS = "-XX:+UseParallelGC -XX:TieredStopAtLevel=1 -Xss16m"
"""The session's Spark JVM: the JIT's quick tier only (as short runs use, see
``build_spark_session``), whose compiles cost less than the optimising tier's on test-sized
data; and larger thread stacks, as the quick tier's frames are larger and fitting ALS recurses
through its lineage deeply enough to overflow the default 1 MB."""

SMALL_DATA_SPARK_CONF = {
    # Test data is a few thousand rows, so a query's time goes to planning and compiling, not
    # to the rows: Spark evaluates expressions interpreted instead of generating and compiling
    # Java for each (the mode Spark's own test suite runs in besides codegen), without
    # re-planning at each stage. Same results, in a fraction of the time. The session's Spark
    # and the Spark processes the tests start (imports, Airflow's tasks) use them; the
    # command-line backfill (tests/analytics/test_aggregate.py) and the streaming process
    # (tests/streaming/test_stream.py) keep Spark's defaults.
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.adaptive.enabled": "false",
}
SMALL_DATA_SUBMIT_ARGS = (
    " ".join(f"--conf {key}={value}" for key, value in SMALL_DATA_SPARK_CONF.items())
    + " pyspark-shell"
)
""":data:`SMALL_DATA_SPARK_CONF` for the Spark processes the tests start, through the variable
pyspark reads when it starts a JVM."""


def environment_of(settings: Settings) -> dict[str, str]:
    """The variables that make a subprocess read ``settings``' servers and data dir."""
    return settings.as_environment()


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings for a running local stack, started once per test session.

    The variables are exported too, so subprocesses (the CLI, Airflow, Spark workers) reach
    the same servers, and start Spark with :data:`SMALL_DATA_SUBMIT_ARGS`.
    """
    # Test data is small: a 2g heap is plenty, and keeps the test JVMs lean.
    settings = settings_on_free_ports(
        tmp_path_factory.mktemp("stack"), spark_shuffle_partitions=1, spark_driver_memory="2g"
    )
    environment = {**environment_of(settings), "PYSPARK_SUBMIT_ARGS": SMALL_DATA_SUBMIT_ARGS}
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    get_settings.cache_clear()
    # Airflow only starts for the tests that schedule something (tests/test_airflow.py).
    stack = LocalStack(settings, airflow=False)
    try:
        stack.up()
        yield settings
    finally:
        stack.down()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()


@pytest.fixture
def test_settings(stack_settings: Settings) -> Iterator[Settings]:
    """The stack's settings with a MongoDB database of this test's own, dropped afterwards."""
    name = f"auxcord_test_{os.getpid()}_{next(_database_numbers)}"
    uri = stack_settings.mongodb_uri.replace("/auxcord?", f"/{name}?")
    settings = stack_settings.model_copy(update={"mongodb_uri": uri})
    yield settings
    with mongo_client(settings) as client:
        client.drop_database(name)


@pytest.fixture
def mongo_db(test_settings: Settings) -> Iterator[Database[dict[str, Any]]]:
    """An empty MongoDB database for one test (the one ``test_settings`` names)."""
    with mongo_client(test_settings) as client:
        yield client[test_settings.mongodb_database]


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    """The one SparkSession of the test run: local[2], one shuffle partition, and the settings
    of :data:`SMALL_DATA_SPARK_CONF`."""
    from auxcord.spark import build_spark_session

    settings = load_settings(
        data_dir=tmp_path_factory.mktemp("spark"),
        spark_shuffle_partitions=1,
        spark_driver_memory="2g",
        spark_driver_java_options=SPARK_JAVA_OPTIONS,
    )
    session = build_spark_session(settings, "auxcord-tests")
    for key, value in SMALL_DATA_SPARK_CONF.items():
        session.conf.set(key, value)
    yield session
    session.stop()


@dataclass
class LinkWorld:
    sim: RunningSimulator
    settings: Settings
    base: str


def simulator_settings(
    base: Settings, sim: RunningSimulator, port: int, **overrides: object
) -> Settings:
    """``base`` pointed at ``sim`` for Spotify, with the web app's callback on ``port``."""
    return base.model_copy(
        update={
            "spotify_api_base": sim.api_base,
            "spotify_accounts_base": sim.url,
            "spotify_redirect_uri": f"http://127.0.0.1:{port}/auth/callback",
            **overrides,
        }
    )


LINK_SIMULATOR = SimulatorConfig(users=6, days=7, seed=21, speed=0.001, rate_budget=1_000)
"""The simulator of :func:`link_world`. Virtual time barely moves, so ground truth read before
a call still holds after it."""


@contextmanager
def link_world_on(sim: RunningSimulator, test_settings: Settings) -> Iterator[LinkWorld]:
    """The web app on loopback, signing in through ``sim``, on this test's MongoDB database."""
    from cli.webserver import serve_in_thread

    port = free_port()
    # Development-mode apps admit five users each: six users need two apps.
    settings = simulator_settings(
        test_settings, sim, port, spotify_extra_apps=[SpotifyApp(client_id="auxcord-local-2")]
    )
    with serve_in_thread(settings, "127.0.0.1", port) as base:
        yield LinkWorld(sim, settings, base)


@pytest.fixture
def link_world(test_settings: Settings) -> Iterator[LinkWorld]:
    """A simulator of this test's own and the web app on loopback, sharing this test's fresh
    MongoDB database."""
    with run_simulator_in_thread(LINK_SIMULATOR) as sim, link_world_on(sim, test_settings) as world:
        yield world


@pytest.fixture(scope="session")
def world(stack_settings: Settings, spark: SparkSession) -> Iterator[World]:
    """One seeded dashboard for the session (see tests.api.world): aggregating it costs a Spark
    job, so tests share it and only read from it; tests that change groups make their own."""
    # Imported here: the dashboard world pulls in Spark's Python side, which most test
    # sessions never need at start-up.
    from cli.webserver import serve_in_thread
    from tests.analytics.test_daily import FIRST, LAST
    from tests.api import world as dashboard

    name = "auxcord_dashboard_world"
    settings = stack_settings.model_copy(
        update={
            "mongodb_uri": stack_settings.mongodb_uri.replace("/auxcord?", f"/{name}?"),
            "admin_users": ["cy"],
        }
    )
    with mongo_client(settings) as client:
        client.drop_database(name)
    dashboard.seed_world(settings, spark)
    with serve_in_thread(settings, "127.0.0.1", free_port()) as base:
        yield dashboard.World(settings=settings, base=base, first=FIRST, last=LAST)
    with mongo_client(settings) as client:
        client.drop_database(name)


@pytest.fixture
def stream_settings(test_settings: Settings, tmp_path: Path) -> Settings:
    """A test's own topics, bucket, checkpoint and database, with quick micro-batches."""
    number = f"{os.getpid()}x{next(_stream_numbers)}"
    settings = test_settings.model_copy(
        update={
            "kafka_topic_prefix": f"stream{number}.",
            "gcs_bucket": f"auxcord-stream-{number}",
            "stream_checkpoint_dir": str(tmp_path / "checkpoint"),
            "stream_trigger_seconds": 0.2,
        }
    )
    ensure_topics(settings)
    ensure_bucket(settings)
    return settings
