"""``auxcord stream``: one Spark Structured Streaming query from Kafka to GCS and MongoDB.

The query reads both topics and hands each micro-batch to :class:`BatchWriter`; its tasks parse
every record in Arrow (:mod:`streaming.parse`) and write the idempotent sinks of
:mod:`streaming.sinks` from the executors (:mod:`streaming.batch`). Offsets live in Spark's
checkpoint; the sinks make a re-run batch harmless, so every play is stored exactly once.
"""

from __future__ import annotations

import logging
import signal
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auxcord.clients import ensure_topics, mongo_database
from auxcord.names import Collection, Topic
from auxcord.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, Row, SparkSession
    from pyspark.sql.streaming.query import StreamingQuery

    from streaming.batch import Sink

log = logging.getLogger(__name__)

QUERY_NAME = "auxcord-stream"
RUN_ID_FILE = "auxcord-run-id"


def kafka_records(spark: SparkSession, settings: Settings) -> DataFrame:
    """The Kafka records of both topics as a streaming DataFrame of Kafka columns."""
    from streaming.kafka_source import KAFKA_COLUMNS, SOURCE_NAME, KafkaDataSource

    topics = ",".join(settings.topic(topic) for topic in Topic)
    if settings.stream_kafka_format == "kafka":
        reader = (
            spark.readStream.format("kafka")
            .option("kafka.bootstrap.servers", settings.kafka_bootstrap)
            .option("kafka.security.protocol", settings.kafka_security_protocol)
            .option("subscribe", topics)
            .option("startingOffsets", "earliest")
            .option("maxOffsetsPerTrigger", str(settings.stream_max_rows_per_trigger))
        )
    else:
        spark.dataSource.register(KafkaDataSource)
        reader = (
            spark.readStream.format(SOURCE_NAME)
            .option("bootstrap", settings.kafka_bootstrap)
            .option("security_protocol", settings.kafka_security_protocol)
            .option("topics", topics)
            .option("tasks", str(settings.stream_tasks))
            .option("maxRowsPerTrigger", str(settings.stream_max_rows_per_trigger))
        )
    return reader.load().select(*KAFKA_COLUMNS.fieldNames())


@dataclass
class BatchResult:
    """What one micro-batch stored, for the log line and the pipeline status."""

    batch_id: int
    records: int = 0
    listens: int = 0
    new_listens: int = 0
    now_playing: int = 0
    dead_letters: int = 0
    objects: int = 0
    newest_record: datetime | None = None
    seconds: float = 0.0

    def add(self, counts: BatchResult | Row) -> None:
        """Add another result's counts (a slice's row, or a batch into the totals)."""
        for name in ("records", "listens", "new_listens", "now_playing", "dead_letters"):
            setattr(self, name, getattr(self, name) + counts[name])
        self.objects += counts["objects"]
        newest = counts["newest_record"]
        if newest is not None and (self.newest_record is None or newest > self.newest_record):
            self.newest_record = newest

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)


class BatchWriter:
    """The ``foreachBatch`` function: each task parses and stores its slice of the batch
    (:class:`streaming.batch.SliceWriter`); the driver adds up the counts and reports them."""

    def __init__(
        self,
        settings: Settings,
        run_id: str,
        sinks: frozenset[Sink] = frozenset({"mongodb", "gcs"}),
    ) -> None:
        self.settings = settings
        self.run_id = run_id
        self.sinks = sinks
        self.db = mongo_database(settings)
        self.totals = BatchResult(batch_id=-1)
        self.last_batch: int | None = None
        """The last batch this writer ran (None before the first)."""
        status = self.db[Collection.PIPELINE_STATUS].find_one({"_id": "stream"}) or {}
        self.partition_ends: dict[tuple[str, int], tuple[int, int]] = {
            (item["topic"], item["partition"]): (item["end"], item["batch_id"])
            for item in status.get("partition_ends", [])
        }
        """(topic, partition) -> (the offset after the last record stored, by which batch)."""

    def __call__(self, records: DataFrame, batch_id: int) -> None:
        from streaming.batch import SLICE_RESULT, store_slices

        started = time.perf_counter()
        rerun = self.may_have_run(batch_id)
        self.last_batch = batch_id
        store = store_slices(self.settings, self.run_id, batch_id, self.sinks, rerun=rerun)
        # Spark's built-in Kafka source makes a task per partition; this caps it the same way.
        slices = (
            records.coalesce(self.settings.stream_tasks).mapInArrow(store, SLICE_RESULT).collect()
        )
        result = BatchResult(batch_id=batch_id, seconds=time.perf_counter() - started)
        self._check_offsets(batch_id, slices)
        for row in slices:
            result.add(row)
        self._report(result)

    def may_have_run(self, batch_id: int) -> bool:
        """Whether ``batch_id`` may have been attempted before, in part.

        Spark re-runs an uncommitted batch only when a query starts (from its checkpoint's
        offset log), and a failed batch stops the query. So a query's first batch may be a
        re-run, and every later one is new: its slices need not ask MongoDB which duplicate
        listens they stored themselves, because they stored none yet.
        """
        return self.last_batch is None or batch_id <= self.last_batch

    def _check_offsets(self, batch_id: int, slices: list[Row]) -> None:
        """Report a partition whose offsets went back: the broker lost data (a restart of the
        in-memory local broker). The source has already read it again from its start."""
        for row in (offset_range for task in slices for offset_range in task["ranges"]):
            key = (row["topic"], row["partition"])
            end, by_batch = self.partition_ends.get(key, (0, -1))
            if by_batch < batch_id and row["first_offset"] < end:
                message = (
                    f"Kafka offsets of {row['topic']}[{row['partition']}] went back: the stream "
                    f"had stored up to offset {end}, and the broker now holds offsets from "
                    f"{row['first_offset']}. The broker lost its data (was it restarted?). "
                    "Reading on from its new records; none of them is skipped."
                )
                log.warning(message)
                self.db[Collection.PIPELINE_STATUS].update_one(
                    {"_id": "stream"},
                    {
                        "$push": {
                            "offset_resets": {
                                "$each": [{"at": datetime.now(UTC), "message": message}],
                                "$slice": -20,
                            }
                        }
                    },
                    upsert=True,
                )
            self.partition_ends[key] = (row["last_offset"] + 1, batch_id)

    def _report(self, result: BatchResult) -> None:
        self.totals.batch_id = result.batch_id
        self.totals.add(result)
        self.totals.seconds += result.seconds
        if result.records:
            log.info(
                "stream batch %d: %d records, %d listens (%d new), %d now-playing, "
                "%d dead letters, %d objects, %.2f s",
                result.batch_id,
                result.records,
                result.listens,
                result.new_listens,
                result.now_playing,
                result.dead_letters,
                result.objects,
                result.seconds,
            )
        if result.dead_letters:
            log.warning(
                "stream batch %d: %d records could not be parsed; see the %s collection",
                result.batch_id,
                result.dead_letters,
                Collection.DEAD_LETTERS,
            )
        self.db[Collection.PIPELINE_STATUS].update_one(
            {"_id": "stream"},
            {
                "$set": {
                    "run_id": self.run_id,
                    "batch_id": result.batch_id,
                    "batch_records": result.records,
                    "batch_seconds": result.seconds,
                    "updated_at": datetime.now(UTC),
                    "partition_ends": [
                        {"topic": topic, "partition": partition, "end": end, "batch_id": batch}
                        for (topic, partition), (end, batch) in self.partition_ends.items()
                    ],
                    **({"newest_record": result.newest_record} if result.newest_record else {}),
                }
            },
            upsert=True,
        )


def stream_run_id(settings: Settings, checkpoint: str) -> str:
    """The id of this checkpoint's run, made once and kept beside the checkpoint.

    It names GCS objects and tags stored listens, so a new checkpoint (batch ids counting from
    0 again) can never overwrite or re-claim what an earlier run stored.
    """
    if checkpoint.startswith("gs://"):
        bucket_name, _, prefix = checkpoint.removeprefix("gs://").partition("/")
        from auxcord.clients import gcs_client

        blob = gcs_client(settings).bucket(bucket_name).blob(f"{prefix.rstrip('/')}/{RUN_ID_FILE}")
        if blob.exists():
            return str(blob.download_as_text()).strip()
        run_id = uuid.uuid4().hex[:12]
        blob.upload_from_string(run_id)
        return run_id
    path = Path(checkpoint.removeprefix("file://")) / RUN_ID_FILE
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:12]
    path.write_text(run_id)
    return run_id


def start_stream(
    spark: SparkSession,
    settings: Settings,
    *,
    available_now: bool = False,
    sinks: frozenset[Sink] = frozenset({"mongodb", "gcs"}),
) -> tuple[StreamingQuery, BatchWriter]:
    """Start the query; it runs in the background until stopped (or drained, ``available_now``)."""
    from streaming.sinks import ensure_indexes

    ensure_topics(settings)
    writer = BatchWriter(settings, stream_run_id(settings, settings.stream_checkpoint), sinks)
    ensure_indexes(writer.db)
    stream = (
        kafka_records(spark, settings)
        .writeStream.queryName(QUERY_NAME)
        .foreachBatch(writer)
        .option("checkpointLocation", settings.stream_checkpoint)
    )
    if available_now:
        stream = stream.trigger(availableNow=True)
    else:
        stream = stream.trigger(
            processingTime=f"{int(settings.stream_trigger_seconds * 1000)} milliseconds"
        )
    return stream.start(), writer


def run_stream(settings: Settings, *, available_now: bool = False) -> BatchResult:
    """Run the streaming application until stopped (Ctrl-C, SIGTERM) or, with ``available_now``,
    until it has drained what Kafka holds; returns the totals of what it stored."""
    from auxcord.spark import build_spark_session

    spark = build_spark_session(settings, QUERY_NAME)
    query, writer = start_stream(spark, settings, available_now=available_now)
    # SIGTERM (docker stop, systemd) stops the query like Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        query.awaitTermination()
    except KeyboardInterrupt:
        log.info("stopping the stream; an unfinished batch re-runs on the next start")
        query.stop()
    finally:
        spark.stop()
    return writer.totals
