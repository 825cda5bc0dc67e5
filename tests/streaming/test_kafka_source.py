"""The Python Data Source for Kafka: offset planning, and watermarks read from the real broker."""

from __future__ import annotations

from auxcord.names import Topic
from auxcord.settings import Settings
from streaming.kafka_source import (
    KafkaStreamReader,
    OffsetRange,
    WatermarkReader,
    cap_rows,
    following,
    plan_slices,
    topic_of,
)
from tests.streaming.helpers import listen, produce_listens


def test_cap_rows_advances_every_partition_in_proportion() -> None:
    start = {"t": {"0": 100, "1": 0, "2": 50}}
    end = {"t": {"0": 1100, "1": 3000, "2": 50}}
    capped = cap_rows(start, end, 400)
    taken = {p: capped["t"][p] - start["t"][p] for p in start["t"]}
    assert sum(taken.values()) <= 400
    assert taken == {"0": 100, "1": 300, "2": 0}
    assert cap_rows(start, end, 10_000) == end, "a backlog under the limit is read whole"


def test_cap_rows_counts_partitions_new_to_the_offsets() -> None:
    capped = cap_rows({"t": {}}, {"t": {"0": 10, "1": 10}}, 10)
    assert capped == {"t": {"0": 5, "1": 5}}


def test_a_topic_created_anew_is_read_from_its_start() -> None:
    start = {"t@old": {"0": 500, "1": 700}, "u@same": {"0": 5}}
    latest = {"t@new": {"0": 20, "1": 0}, "u@same": {"0": 9}}
    end = following(start, latest)
    assert end == {"t@new": {"0": 20, "1": 0}, "u@same": {"0": 9}}
    source = KafkaStreamReader({"bootstrap": "unused:1", "topics": "t,u"})
    ranges = {
        (r.topic, r.partition): (r.start, r.end)
        for kafka_slice in source.partitions(start, end)
        for r in kafka_slice.ranges
    }
    assert ranges == {("t", 0): (0, 20), ("u", 0): (5, 9)}


def test_small_batches_are_one_task_and_large_ones_spread_evenly() -> None:
    small = [OffsetRange("t", p, 0, 100) for p in range(4)]
    assert [len(s.ranges) for s in plan_slices(small, tasks=2)] == [4]
    large = [OffsetRange("t", 0, 0, 9_000), OffsetRange("t", 1, 0, 5_000)]
    large += [OffsetRange("t", 2, 0, 4_000), OffsetRange("t", 3, 100, 100 + 3_000)]
    slices = plan_slices(large, tasks=2)
    assert sorted(sum(r.rows for r in s.ranges) for s in slices) == [9_000, 12_000]
    assert plan_slices(list(reversed(large)), tasks=2) == slices, "the same ranges, the same plan"
    assert plan_slices([], tasks=2) == []


def test_watermarks_are_the_true_end_of_each_partition(stream_settings: Settings) -> None:
    sent = produce_listens(stream_settings, (listen(n) for n in range(1_234)))
    topic = stream_settings.topic(Topic.LISTENS)
    reader = WatermarkReader({"bootstrap": stream_settings.kafka_bootstrap}, [topic])
    first = reader.read()
    [key] = first
    assert topic_of(key) == topic and "@" in key, "offsets carry the topic's id"
    assert sum(first[key].values()) == sent
    assert set(first[key]) == {str(p) for p in range(Topic.LISTENS.partitions)}
    produce_listens(stream_settings, (listen(n) for n in range(1_234, 1_300)))
    assert sum(reader.read()[key].values()) == 1_300, "a second read sees new records"
