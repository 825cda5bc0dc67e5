"""The streaming job against Tansu, SecantusDB, fake-gcs-server and Spark in local mode."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from auxcord.clients import mongo_database
from auxcord.names import Collection, Topic
from auxcord.settings import Settings
from devtools.stack import LocalStack, free_port
from streaming.job import start_stream
from tests.streaming.helpers import (
    assert_exactly_once,
    listen,
    now_playing,
    produce,
    produce_listens,
    wait_for,
)

if TYPE_CHECKING:
    from pymongo.database import Database
    from pyspark.sql import SparkSession


def drain(spark: SparkSession, settings: Settings) -> None:
    query, _ = start_stream(spark, settings, available_now=True)
    query.awaitTermination(timeout=300)
    assert query.exception() is None


def test_poison_is_dead_lettered_and_the_query_keeps_running(
    spark: SparkSession, stream_settings: Settings
) -> None:
    good = [listen(n) for n in range(400)]
    poison = [
        b"not json at all",
        b'{"user_id": 7}',
        b"[]",
        json.dumps({"schema_version": 2}).encode(),
    ]
    messages = [(event.user_id.encode(), event.to_json()) for event in good]
    for index, value in enumerate(poison):
        messages.insert(index * 97, (b"user1", value))
    produce(stream_settings, Topic.LISTENS, messages)
    db = mongo_database(stream_settings)
    query, _ = start_stream(spark, stream_settings)
    try:
        wait_for(
            lambda: (
                db[Collection.LISTENS].count_documents({}) == 400
                and db[Collection.DEAD_LETTERS].count_documents({}) == 4
            ),
            120,
            "the good listens and the dead letters",
        )
        assert query.isActive
        later = [listen(n) for n in range(400, 450)]
        produce_listens(stream_settings, later)
        wait_for(lambda: db[Collection.LISTENS].count_documents({}) == 450, 60, "later listens")
        assert query.isActive, "poison did not stop the stream"
    finally:
        query.stop()
    letters = list(db[Collection.DEAD_LETTERS].find())
    assert sorted(bytes(letter["raw"]) for letter in letters) == sorted(poison)
    by_raw = {bytes(letter["raw"]): letter for letter in letters}
    assert by_raw[b"not json at all"]["reason"].startswith("not JSON")
    assert "user_id: Input should be a valid string" in by_raw[b'{"user_id": 7}']["reason"]
    assert (
        "unknown schema version 2" in by_raw[json.dumps({"schema_version": 2}).encode()]["reason"]
    )
    for letter in letters:
        assert letter["topic"] == stream_settings.topic(Topic.LISTENS)
        assert letter["partition"] in range(Topic.LISTENS.partitions) and letter["offset"] >= 0
    assert_exactly_once(stream_settings, {event.event_id for event in good + later})


def test_now_playing_keeps_the_newest_state(spark: SparkSession, stream_settings: Settings) -> None:
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)

    def send(*states: tuple[str, int, str]) -> None:
        produce(
            stream_settings,
            Topic.NOW_PLAYING,
            (
                (user.encode(), now_playing(user, base + timedelta(seconds=s), track).to_json())
                for user, s, track in states
            ),
        )

    # Within one batch, out of order.
    send(("ana", 10, "newest"), ("ana", 5, "older"), ("ben", 3, "only"))
    drain(spark, stream_settings)
    # In a later batch, an older state arrives late.
    send(("ana", 1, "late and old"), ("ben", 4, "newer"))
    drain(spark, stream_settings)
    states = {
        doc["_id"]: doc for doc in mongo_database(stream_settings)[Collection.NOW_PLAYING].find()
    }
    assert states["ana"]["track_name"] == "newest"
    assert states["ben"]["track_name"] == "newer"
    # A playing state expires after the rest of its track plus grace, so stale ones drop out.
    assert states["ben"]["expires_at"] == base + timedelta(
        seconds=4, milliseconds=199_000, minutes=10
    )


SMALL_ARROW_BATCHES = {
    # A micro-batch reaches its task in Arrow batches of 100 records, so it is stored in ten
    # inserts, and most of its time is spent part-way through them.
    "PYSPARK_SUBMIT_ARGS": "--conf spark.sql.execution.arrow.maxRecordsPerBatch=100 pyspark-shell"
}


def start_stream_process(settings: Settings, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "from cli.main import main; main()", "stream", *args],
        env={**os.environ, **settings.as_environment(), **SMALL_ARROW_BATCHES},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # SIGKILL reaches Spark's JVM and Python workers too
    )


def batch_in_flight(db: Database[dict[str, Any]], checkpoint: Path) -> int | None:
    """A batch that has stored listens in MongoDB but that Spark has not committed yet."""
    newest = db[Collection.LISTENS].find_one({}, {"ingest": 1}, sort=[("ingest", -1)])
    if newest is None:
        return None
    batch = int(newest["ingest"].split("-")[1])  # run-batch-task, see SliceTag
    return None if (checkpoint / "commits" / str(batch)).exists() else batch


def test_exactly_once_through_sigkill_mid_batch(stream_settings: Settings) -> None:
    settings = stream_settings.model_copy(update={"stream_max_rows_per_trigger": 1_000})
    events = [listen(n, users=50, spacing_s=0.2) for n in range(4_000)]
    produce_listens(settings, events)
    db = mongo_database(settings)
    checkpoint = Path(settings.stream_checkpoint)
    first = start_stream_process(settings)
    in_flight: list[int] = []
    try:
        # Kill while a batch is being written: some of its listens are stored, perhaps all,
        # its GCS objects may be half there, and Spark has not committed it. The re-run must
        # find the listens this batch stored itself and put them in GCS.
        def caught() -> bool:
            batch = batch_in_flight(db, checkpoint)
            if batch is not None:
                os.killpg(first.pid, signal.SIGKILL)
                in_flight.append(batch)
            return batch is not None or first.poll() is not None

        wait_for(caught, 300, "a batch part-way through")
        assert in_flight, first.stderr.read().decode()[-3000:] if first.stderr else ""
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert not (checkpoint / "commits" / str(in_flight[0])).exists(), "killed before the commit"
    assert 0 < db[Collection.LISTENS].count_documents({}) < len(events)
    second = start_stream_process(settings, "--available-now")
    _, stderr = second.communicate(timeout=600)
    assert second.returncode == 0, stderr.decode()[-3000:]
    assert_exactly_once(settings, {event.event_id for event in events})


@pytest.fixture
def private_kafka(
    stream_settings: Settings, tmp_path: Path
) -> Iterator[tuple[Settings, LocalStack]]:
    """``stream_settings`` on a Kafka broker of this test's own, which it may restart without
    disturbing the session's shared one."""
    settings = stream_settings.model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{free_port()}", "data_dir": tmp_path / "kafka"}
    )
    stack = LocalStack(settings, airflow=False)
    # Only the broker: MongoDB and GCS stay the session's.
    stack.services = tuple(service for service in stack.services if service.name == "kafka")
    stack.up()
    try:
        yield settings, stack
    finally:
        stack.down()


def test_broker_restart_is_reported_and_new_data_still_flows(
    spark: SparkSession,
    private_kafka: tuple[Settings, LocalStack],
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream_settings, broker = private_kafka
    # The reset is logged just after its batch's listens are stored, so the level is set for
    # the whole test, and the test waits for the record of it, not only for the listens.
    caplog.set_level(logging.WARNING, logger="streaming.job")
    before = [listen(n) for n in range(300)]
    produce_listens(stream_settings, before)
    db = mongo_database(stream_settings)
    query, _ = start_stream(spark, stream_settings)
    try:
        wait_for(lambda: db[Collection.LISTENS].count_documents({}) == 300, 120, "first listens")
        # It comes back empty, and starting it creates the topics anew.
        broker.down()
        broker.up()
        # Fewer records than before the restart, so their offsets are all "old" ones.
        after = [listen(n) for n in range(10_000, 10_120)]
        produce_listens(stream_settings, after)
        wait_for(lambda: db[Collection.LISTENS].count_documents({}) == 420, 120, "listens after")
        wait_for(
            lambda: bool(
                (db[Collection.PIPELINE_STATUS].find_one({"_id": "stream"}) or {}).get(
                    "offset_resets"
                )
            ),
            60,
            "the reset to be reported",
        )
        assert query.isActive
    finally:
        query.stop()
    assert "went back" in caplog.text and "was it restarted?" in caplog.text
    status = db[Collection.PIPELINE_STATUS].find_one({"_id": "stream"})
    assert status is not None and status["offset_resets"], (
        "the reset is on record for the admin page"
    )
    assert_exactly_once(stream_settings, {event.event_id for event in before + after})
