"""Spotify (the simulator) to MongoDB and GCS: pollers, Kafka and Spark together."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from auxcord.clients import ensure_bucket, mongo_database
from auxcord.events import ListenEvent
from auxcord.names import Collection, Topic
from auxcord.settings import Settings
from streaming.job import start_stream
from tests.producers.test_pollers import (
    SPEED,
    PollWorld,
    drain,
    expected_ids,
    finish_and_compare,
    poll_world_at,
    start_poller,
)
from tests.streaming.helpers import raw_parquet_ids, stored_listen_ids, wait_for

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def test_every_play_reaches_mongodb_and_gcs_exactly_once(
    spark: SparkSession, test_settings: Settings, tmp_path: Path
) -> None:
    with poll_world_at(test_settings, SPEED, poller_id="e2e-poller") as polled:
        settings = polled.settings.model_copy(
            update={
                "gcs_bucket": f"auxcord-e2e-{tmp_path.name.lower()}"[:60],
                "stream_checkpoint_dir": str(tmp_path / "checkpoint"),
                "stream_trigger_seconds": 0.5,
            }
        )
        ensure_bucket(settings)
        world = PollWorld(polled.sim, settings)
        start_ms = world.sim.clock.now_ms()
        started = datetime.fromtimestamp(start_ms / 1000, UTC)
        listens = mongo_database(settings)[Collection.LISTENS]
        query, _ = start_stream(spark, settings)
        try:
            poller = start_poller(settings)
            try:
                # Until plays that finished after the start have gone all the way through.
                wait_for(
                    lambda: (
                        listens.count_documents({"played_at": {"$gt": started}}) >= 50
                        or poller.poll() is not None
                        or not query.isActive
                    ),
                    180,
                    "fifty new plays in MongoDB",
                )
                assert query.exception() is None, query.exception()
                if poller.poll() is not None:
                    raise AssertionError(f"the poller died: {poller.communicate()[1][-2000:]!r}")
            finally:
                poller.terminate()
                # Reading its stderr while it stops: a full pipe would keep it from exiting.
                poller.communicate(timeout=30)
            finish_and_compare(world, start_ms, at_least=50)
            on_kafka = {ListenEvent.from_json(v).event_id for v in drain(settings, Topic.LISTENS)}
            wait_for(
                lambda: set(stored_listen_ids(settings)) == on_kafka, 120, "the stream to catch up"
            )
            assert query.isActive
        finally:
            query.stop()
        truth = expected_ids(world.sim.ground_truth())
    stored = stored_listen_ids(settings)
    assert len(stored) == len(set(stored)), "MongoDB holds each play once"
    assert set(stored) <= truth, "MongoDB holds only plays that happened"
    parquet = raw_parquet_ids(settings)
    assert sorted(parquet) == sorted(stored), "GCS holds exactly the plays MongoDB holds, once each"
    # The live feed reached MongoDB too: one current state per simulated user who played.
    playing = mongo_database(settings)[Collection.NOW_PLAYING]
    assert {doc["_id"] for doc in playing.find()} <= set(world.sim.user_ids)
    assert playing.count_documents({}) >= 1
