"""A Kafka source for Spark Structured Streaming, written with PySpark's Python Data Source API.

The official connector (spark-sql-kafka) is a Maven jar that cannot be fetched here, so the local
stack reads Kafka through this source; clusters that have the jar switch to the built-in
``kafka`` format with ``AUXCORD_STREAM_KAFKA_FORMAT=kafka``. Both give the same columns
(:data:`KAFKA_COLUMNS`), so everything downstream is shared.

Offsets are ``{"topic@topic_id": {"partition": next_offset}}``. Spark keeps them in its
checkpoint and hands each micro-batch a fixed ``[start, end)`` range per partition, so a re-run
batch reads exactly the same records: the basis of the job's exactly-once sinks. The topic id
changes when a topic is created anew (the local broker keeps topics in memory, so a restart
does that), and then the new topic is read from its first record instead of from an offset
that meant something else.

The end of each partition comes from the high watermark that a Fetch response carries, never from
``end_offsets()``: the local broker (Tansu) answers that with the start of the last record batch,
and a reader trusting it would stall short of the end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyspark.sql import types as T
from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition
from pyspark.sql.streaming.datasource import (
    ReadAllAvailable,
    ReadLimit,
    ReadMaxRows,
    SupportsTriggerAvailableNow,
)

if TYPE_CHECKING:
    import pyarrow as pa
    from kafka import KafkaConsumer

log = logging.getLogger(__name__)

SOURCE_NAME = "auxcord_kafka"

KAFKA_COLUMNS = T.StructType(
    [
        T.StructField("key", T.BinaryType()),
        T.StructField("value", T.BinaryType()),
        T.StructField("topic", T.StringType()),
        T.StructField("partition", T.IntegerType()),
        T.StructField("offset", T.LongType()),
        T.StructField("timestamp", T.TimestampType()),
        T.StructField("timestampType", T.IntegerType()),
    ]
)
"""The columns of Spark's built-in ``kafka`` source, which this source reproduces."""

Offsets = dict[str, dict[str, int]]

_WATERMARK_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class OffsetRange:
    """The records ``[start, end)`` of one topic partition."""

    topic: str
    partition: int
    start: int
    end: int

    @property
    def rows(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class KafkaSlice(InputPartition):
    """One Spark task: one or more offset ranges, read one after the other."""

    ranges: tuple[OffsetRange, ...]


SMALL_BATCH_ROWS = 5_000
"""A batch this small is read by one task: a task's fixed cost (its sinks' round trips) would
outweigh what running in parallel saves, and freshness depends on short batches."""


def plan_slices(ranges: list[OffsetRange], tasks: int) -> list[KafkaSlice]:
    """Group offset ranges into at most ``tasks`` slices of similar size (one if the batch is
    small). The grouping depends only on the ranges, so a re-run batch gets the same slices."""
    if not ranges:
        return []
    if sum(r.rows for r in ranges) <= SMALL_BATCH_ROWS:
        tasks = 1
    groups: list[list[OffsetRange]] = [[] for _ in range(min(tasks, len(ranges)))]
    for offset_range in sorted(ranges, key=lambda r: (-r.rows, r.topic, r.partition)):
        min(groups, key=lambda group: sum(r.rows for r in group)).append(offset_range)
    return [
        KafkaSlice(tuple(sorted(group, key=lambda r: (r.topic, r.partition))))
        for group in groups
        if group
    ]


def _consumer(options: dict[str, str], **overrides: Any) -> KafkaConsumer:
    from kafka import KafkaConsumer

    config: dict[str, Any] = {
        "bootstrap_servers": options["bootstrap"].split(","),
        "security_protocol": options.get("security_protocol", "PLAINTEXT"),
        "enable_auto_commit": False,
        "group_id": None,
        # An offset the broker no longer has is an error we report, never a silent jump.
        "auto_offset_reset": "none",
        "request_timeout_ms": 15_000,
    }
    config.update(overrides)
    return KafkaConsumer(**config)


class KafkaDataSource(DataSource):
    """``spark.readStream.format("auxcord_kafka")`` with options ``bootstrap``, ``topics``
    (comma-separated), ``maxRowsPerTrigger``, ``tasks`` (how many tasks a batch is read by at
    most: the cluster's cores) and ``security_protocol``."""

    @classmethod
    def name(cls) -> str:
        return SOURCE_NAME

    def schema(self) -> T.StructType:
        return KAFKA_COLUMNS

    def streamReader(self, schema: T.StructType) -> KafkaStreamReader:
        return KafkaStreamReader(dict(self.options))


class KafkaStreamReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    """Plans offset ranges on the driver; :meth:`read` fetches them in the executors."""

    def __init__(self, options: dict[str, str]) -> None:
        # Spark hands data source options over with their keys lower-cased.
        options = {key.lower(): value for key, value in options.items()}
        self.options = options
        self.topics = [topic for topic in options["topics"].split(",") if topic]
        self.max_rows = int(options.get("maxrowspertrigger", "0"))
        self.tasks = max(1, int(options.get("tasks", "2")))
        self._watermarks: WatermarkReader | None = None
        self._available_now_target: Offsets | None = None

    @property
    def watermarks(self) -> WatermarkReader:
        if self._watermarks is None:
            self._watermarks = WatermarkReader(self.options, self.topics)
        return self._watermarks

    def initialOffset(self) -> Offsets:
        # A new query reads every partition from its first record: nothing before it is lost.
        return {}

    def getDefaultReadLimit(self) -> ReadLimit:
        return ReadMaxRows(self.max_rows) if self.max_rows > 0 else ReadAllAvailable()

    def prepareForTriggerAvailableNow(self) -> None:
        self._available_now_target = self.watermarks.read()

    def latestOffset(self, start: Offsets, limit: ReadLimit) -> Offsets:
        latest = self._available_now_target or self.watermarks.read()
        end = following(start, latest)
        if isinstance(limit, ReadMaxRows):
            return cap_rows(start, end, limit.max_rows)
        if self._available_now_target is not None and self.max_rows > 0:
            # Spark passes ReadAllAvailable under availableNow, but a drain must still come in
            # bounded batches (as Spark's own Kafka source does with maxOffsetsPerTrigger).
            return cap_rows(start, end, self.max_rows)
        return end

    def reportLatestOffset(self) -> Offsets | None:
        return self.watermarks.last

    def partitions(self, start: Offsets, end: Offsets) -> Sequence[KafkaSlice]:
        ranges = []
        for key, ends in end.items():
            topic = topic_of(key)
            for partition, stop in ends.items():
                begin = start.get(key, {}).get(partition, 0)
                if begin > stop:
                    # The broker lost data (the local one keeps it in memory): read what it
                    # holds now from its start, and say so loudly.
                    log.warning(
                        "Kafka offsets went back on %s[%s]: the stream was at %d and the broker "
                        "now ends at %d (a broker restart?). Reading from offset 0 so no new "
                        "record is skipped.",
                        topic,
                        partition,
                        begin,
                        stop,
                    )
                    begin = 0
                if stop > begin:
                    ranges.append(OffsetRange(topic, int(partition), begin, stop))
        return plan_slices(ranges, self.tasks)

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        if not isinstance(partition, KafkaSlice):
            raise TypeError(f"not a Kafka slice: {partition!r}")
        return read_slice(self.options, partition)


def topic_of(key: str) -> str:
    """The topic name in an offsets key ``topic@topic_id``."""
    return key.partition("@")[0]


def following(start: Offsets, latest: Offsets) -> Offsets:
    """The end offsets: the broker's latest, keeping partitions the broker did not report.

    A topic that the broker now reports under a new id replaces the old one, whose offsets
    belong to records that no longer exist.
    """
    current_key = {topic_of(key): key for key in latest}
    end: Offsets = {}
    for key, partitions in start.items():
        current = current_key.get(topic_of(key), key)
        if current != key:
            log.warning(
                "Kafka topic %s was created anew (the broker lost its data); reading the new "
                "topic from its first record",
                topic_of(key),
            )
            continue
        end[key] = dict(partitions)
    for key, partitions in latest.items():
        end.setdefault(key, {}).update(partitions)
    return end


def cap_rows(start: Offsets, end: Offsets, max_rows: int) -> Offsets:
    """Shrink ``end`` so at most ``max_rows`` records lie between it and ``start``.

    Every partition advances in proportion to its backlog, so a busy partition never starves
    the others.
    """
    backlog = {
        (topic, partition): stop - start.get(topic, {}).get(partition, 0)
        for topic, partitions in end.items()
        for partition, stop in partitions.items()
    }
    total = sum(max(rows, 0) for rows in backlog.values())
    if total <= max_rows:
        return end
    capped: Offsets = {topic: dict(partitions) for topic, partitions in end.items()}
    for (topic, partition), rows in backlog.items():
        if rows > 0:
            share = max(1, rows * max_rows // total)
            capped[topic][partition] = start.get(topic, {}).get(partition, 0) + share
    return capped


class WatermarkReader:
    """Reads each partition's high watermark (its next offset) from real Fetch responses.

    Each read uses a new consumer: a long-lived one may still have a fetch in flight from
    before the read, whose answer carries an older watermark, and a drain
    (``--available-now``) that trusted it would stop short.
    """

    def __init__(self, options: dict[str, str], topics: list[str]) -> None:
        self.options = options
        self.topics = topics
        self.last: Offsets | None = None

    def read(self) -> Offsets:
        """Every partition's high watermark; partitions the broker does not answer for are left
        out (the caller keeps their previous offsets)."""
        from kafka import TopicPartition
        from kafka.errors import OffsetOutOfRangeError

        consumer = _consumer(self.options, fetch_max_wait_ms=10)
        try:
            partitions = [
                TopicPartition(topic, partition)
                for topic in self.topics
                for partition in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            # kafka-python keeps topic ids from metadata responses (v10+) on its cluster.
            cluster = consumer._client.cluster
            keys = {
                tp.topic: f"{tp.topic}@{cluster.topic_id(tp.topic)}"
                if cluster.topic_id(tp.topic)
                else tp.topic
                for tp in partitions
            }
            known = self.last or {}
            consumer.assign(partitions)
            for tp in partitions:
                # Fetch from the last watermark, so only new records cross the wire.
                consumer.seek(tp, known.get(keys[tp.topic], {}).get(str(tp.partition), 0))
            deadline = time.monotonic() + _WATERMARK_TIMEOUT_S
            while time.monotonic() < deadline and any(
                consumer.highwater(tp) is None for tp in partitions
            ):
                try:
                    consumer.poll(timeout_ms=50, max_records=1)
                except OffsetOutOfRangeError as exc:
                    for tp in exc.args[0] if exc.args and isinstance(exc.args[0], dict) else ():
                        consumer.seek(tp, 0)
            watermarks: Offsets = {key: {} for key in keys.values()}
            for tp in partitions:
                highwater = consumer.highwater(tp)
                if highwater is None:
                    log.warning("Kafka did not report the end of %s[%d]", tp.topic, tp.partition)
                    continue
                watermarks[keys[tp.topic]][str(tp.partition)] = highwater
        finally:
            consumer.close()
        self.last = watermarks
        return watermarks


def read_slice(options: dict[str, str], kafka_slice: KafkaSlice) -> Iterator[pa.RecordBatch]:
    """Yield the records of a slice's offset ranges as Arrow batches of Kafka columns.

    All its partitions are fetched together, so a small batch costs one round trip, not one
    per partition.
    """
    from kafka import TopicPartition

    ends = {TopicPartition(r.topic, r.partition): r.end for r in kafka_slice.ranges}
    positions = {TopicPartition(r.topic, r.partition): r.start for r in kafka_slice.ranges}
    consumer = _consumer(options, max_poll_records=10_000, fetch_max_bytes=16 * 1024 * 1024)
    try:
        consumer.assign(list(ends))
        for tp, start in positions.items():
            consumer.seek(tp, start)
        idle_since = time.monotonic()
        while any(positions[tp] < end for tp, end in ends.items()):
            fetched = consumer.poll(timeout_ms=200)
            records = [
                record
                for tp, batch in fetched.items()
                for record in batch
                if record.offset < ends[tp]
            ]
            for tp, batch in fetched.items():
                if batch:
                    positions[tp] = max(positions[tp], batch[-1].offset + 1)
                    if positions[tp] >= ends[tp]:
                        consumer.pause(tp)
            if not records:
                if time.monotonic() - idle_since > _WATERMARK_TIMEOUT_S * 3:
                    behind = {f"{tp.topic}[{tp.partition}]": positions[tp] for tp in ends}
                    raise RuntimeError(
                        f"Kafka stopped answering while reading offsets {behind} of this batch"
                    )
                continue
            idle_since = time.monotonic()
            yield kafka_record_batch(
                [record.key for record in records],
                [record.value for record in records],
                [record.topic for record in records],
                [record.partition for record in records],
                [record.offset for record in records],
                [record.timestamp for record in records],
                [record.timestamp_type for record in records],
            )
    finally:
        consumer.close()


def kafka_record_batch(
    keys: Sequence[bytes | None],
    values: Sequence[bytes | None],
    topics: Sequence[str],
    partitions: Sequence[int],
    offsets: Sequence[int],
    timestamps_ms: Sequence[int],
    timestamp_types: Sequence[int],
) -> pa.RecordBatch:
    """Kafka records as one Arrow batch of :data:`KAFKA_COLUMNS` (what a task receives)."""
    import pyarrow as pa

    return pa.RecordBatch.from_arrays(
        [
            pa.array(keys, pa.binary()),
            pa.array(values, pa.binary()),
            pa.array(topics, pa.string()),
            pa.array(partitions, pa.int32()),
            pa.array(offsets, pa.int64()),
            pa.array([ms * 1000 for ms in timestamps_ms], pa.timestamp("us", "UTC")),
            pa.array(timestamp_types, pa.int32()),
        ],
        names=KAFKA_COLUMNS.fieldNames(),
    )


def one_partition_batch(topic: str, values: Sequence[bytes], first_offset: int) -> pa.RecordBatch:
    """``values`` as consecutive records of partition 0 of ``topic``, stamped now: records as
    a task receives them, for tests and the sinks' benchmark."""
    count = len(values)
    now_ms = int(time.time() * 1000)
    offsets = range(first_offset, first_offset + count)
    return kafka_record_batch(
        [None] * count, values, [topic] * count, [0] * count, offsets, [now_ms] * count, [0] * count
    )
