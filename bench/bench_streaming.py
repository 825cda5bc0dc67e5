"""Streaming: Kafka to GCS and MongoDB throughput, beside the two limits that bound it.

In one run, on the same listens (50 users, the last day; 100k by default):

1. a plain kafka-python consumer draining the topic (the Kafka read limit);
2. MongoDB's own bulk-insert rate for the same documents (``insert_many(ordered=False)`` of
   10k-document chunks from one client: the write the sink does, and the local server's
   single-writer limit), into a bare collection, for reference;
3. ``auxcord stream --available-now`` into GCS alone;
4. ``--repeats`` pairs of: the indexed bulk-insert rate (into a collection with the indexes
   ``listens`` has, made by the stream's own ``ensure_indexes``), and the stream into GCS and
   MongoDB, back to back on fresh databases, alternating which goes first. On a shared machine
   the absolute rates drift; the ratio within a pair is the figure, and the spread over the
   pairs says how far to trust it;
5. latency from Kafka append to visible in MongoDB (a change stream) at a steady 1,000
   events/s, with the stream running continuously (``--latency-seconds 0`` skips it);
6. peak RSS of the streaming application (driver, JVM and Python workers).

Targets (issues 9 and 21): GCS alone ≥ 10,000 events/s; both sinks ≥ 0.70 times MongoDB's indexed
bulk-insert rate; p95 latency ≤ 3 s. Stream rates are end to end: from starting the query to
the last batch committed, after a warm-up run on 5k events of another topic (a running job's
Python workers are warm; Spark start-up is excluded).

Needs the local stack: `auxcord stack up` first (or set the AUXCORD_* variables).

    .venv/bin/python bench/bench_streaming.py [--events 100000] [--repeats 3] [--latency-seconds 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from auxcord.clients import (
    ensure_bucket,
    ensure_topics,
    kafka_consumer,
    kafka_producer,
    mongo_client,
    mongo_database,
)
from auxcord.events import ListenEvent
from auxcord.names import Collection, Topic
from auxcord.settings import Settings, get_settings
from auxcord.spark import build_spark_session
from streaming.batch import Sink
from streaming.job import start_stream
from streaming.sinks import ensure_indexes

_STARTS = 5


def make_events(count: int, start: datetime, spacing: timedelta) -> list[ListenEvent]:
    return [
        ListenEvent(
            event_id="",
            album_image_url=None,
            user_id=f"bench-user{n % 50}",
            track_id=f"track{n % 4999}",
            track_name=f"Track {n % 4999}",
            artist_name=f"Artist {n % 401}",
            artist_id=f"artist{n % 401}",
            album_name=f"Album {n % 1201}",
            album_id=f"album{n % 1201}",
            duration_ms=200_000,
            played_at=start + spacing * n,
            source="poll",
        )
        for n in range(count)
    ]


def produce(settings: Settings, events: list[ListenEvent]) -> float:
    producer = kafka_producer(settings)
    began = time.perf_counter()
    for event in events:
        producer.send(
            settings.topic(Topic.LISTENS), key=event.user_id.encode(), value=event.to_json()
        )
    producer.flush()
    producer.close()
    return len(events) / (time.perf_counter() - began)


def kafka_drain_rate(settings: Settings, count: int) -> float:
    from kafka import TopicPartition

    consumer = kafka_consumer(settings, max_poll_records=10_000)
    name = settings.topic(Topic.LISTENS)
    consumer.assign([TopicPartition(name, p) for p in range(Topic.LISTENS.partitions)])
    began = time.perf_counter()
    seen = 0
    while seen < count:
        for records in consumer.poll(timeout_ms=1_000).values():
            seen += len(records)
    rate = seen / (time.perf_counter() - began)
    consumer.close()
    return rate


def mongo_insert_rate(settings: Settings, events: list[ListenEvent], indexes: bool) -> float:
    database = mongo_database(settings)
    collection = database[Collection.LISTENS]
    collection.drop()
    if indexes:
        ensure_indexes(database)
    documents = [dict(event.to_document(), ingest="bench") for event in events]
    began = time.perf_counter()
    for start in range(0, len(documents), 10_000):
        collection.insert_many(documents[start : start + 10_000], ordered=False)
    rate = len(documents) / (time.perf_counter() - began)
    collection.drop()
    return rate


def stream_rate(spark, settings: Settings, sinks: frozenset[Sink], count: int) -> float:  # type: ignore[no-untyped-def]
    """Events per second of one available-now run over ``count`` events.

    On a loaded machine Spark sometimes gives up on the Kafka source's Python process before
    the query reads anything (it waits a fixed 10 s for it to connect back); that start is
    tried again, untimed, since nothing was read or written.
    """
    from pyspark.errors import StreamingQueryException

    for attempt in range(_STARTS):
        began = time.perf_counter()
        query, writer = start_stream(spark, settings, available_now=True, sinks=sinks)
        try:
            query.awaitTermination()
        except StreamingQueryException as exc:
            if "failed to connect back" not in str(exc) or writer.totals.records:
                raise
            print(f"the query's start failed ({attempt + 1} of {_STARTS}); starting again")
            continue
        elapsed = time.perf_counter() - began
        assert writer.totals.listens == count, f"stored {writer.totals.listens} of {count}"
        return count / elapsed
    raise RuntimeError(f"the query failed to start {_STARTS} times")


def slice_rate(settings: Settings, events: list[ListenEvent]) -> float:
    """Events per second through one task's sinks alone, without Spark: the Kafka records in
    Arrow batches of 10k (as Spark hands them to the task), parsed and stored by a
    :class:`SliceWriter`. What the sinks cost beside the server's own insert rate."""
    from streaming.batch import SliceWriter
    from streaming.kafka_source import one_partition_batch
    from streaming.parse import parse_batch, parsed_schema
    from streaming.sinks import SliceTag

    topic = settings.topic(Topic.LISTENS)
    batches = [
        one_partition_batch(
            topic, [event.to_json() for event in events[start : start + 10_000]], start
        )
        for start in range(0, len(events), 10_000)
    ]
    ensure_indexes(mongo_database(settings))
    schema = parsed_schema()
    began = time.perf_counter()
    writer = SliceWriter(
        settings, SliceTag("bench", 0, 0), frozenset({"mongodb", "gcs"}), rerun=False
    )
    for batch in batches:
        writer.add(parse_batch(batch, {topic: ListenEvent}, schema))
    result = writer.finish()
    writer.close()
    assert result["new_listens"] == len(events), result
    return len(events) / (time.perf_counter() - began)


def sink_pairs(base: Settings, events: list[ListenEvent], repeats: int, workdir: Path) -> None:
    """``--sinks-only``: pairs of (indexed bulk insert, one task's sinks), no Spark."""
    for repeat in range(repeats):
        sinks = fresh(base, f"sinks{repeat}", workdir)
        bulk = fresh(base, f"bulkidx{repeat}", workdir)
        if repeat % 2 == 0:
            indexed = mongo_insert_rate(bulk, events, True)
            sliced = slice_rate(sinks, events)
        else:
            sliced = slice_rate(sinks, events)
            indexed = mongo_insert_rate(bulk, events, True)
        print(
            f"pair {repeat + 1}: indexed bulk insert {indexed:,.0f} docs/s, "
            f"the sinks without Spark {sliced:,.0f} events/s, ratio {sliced / indexed:.2f}",
            flush=True,
        )


def process_tree_rss_mb(root: int) -> float:
    """Resident memory of ``root`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            continue
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total / 1e6


def latency(spark, settings: Settings, seconds: int, rate: int) -> list[float]:  # type: ignore[no-untyped-def]
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    query, _ = start_stream(spark, settings)
    stop = threading.Event()

    def watch() -> None:
        with mongo_database(settings)[Collection.LISTENS].watch(
            [{"$match": {"operationType": "insert"}}], max_await_time_ms=50
        ) as changes:
            while not stop.is_set():
                change = changes.try_next()
                if change is not None and change["documentKey"]["_id"] in sent_at:
                    latencies.append(time.time() - sent_at[change["documentKey"]["_id"]])

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    time.sleep(5)  # the first micro-batches pay for Python worker start-up
    producer = kafka_producer(settings, linger_ms=0)
    start = datetime.now(UTC) - timedelta(hours=1)
    events = make_events(seconds * rate, start, timedelta(milliseconds=500))
    began = time.perf_counter()
    for index, event in enumerate(events):
        due = began + index / rate
        if (pause := due - time.perf_counter()) > 0:
            time.sleep(pause)
        sent_at[event.event_id] = time.time()
        producer.send(
            settings.topic(Topic.LISTENS), key=event.user_id.encode(), value=event.to_json()
        )
    producer.flush()
    deadline = time.monotonic() + 60
    while len(latencies) < len(events) and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    watcher.join()
    query.stop()
    return sorted(latencies)


def fresh(base: Settings, label: str, workdir: Path) -> Settings:
    tag = f"{os.getpid()}{label}"
    settings = base.model_copy(
        update={
            "kafka_topic_prefix": f"bench{tag}.",
            "gcs_bucket": f"auxcord-bench-{tag}",
            "mongodb_uri": base.mongodb_uri.replace("/auxcord?", f"/bench_{tag}?"),
            "stream_checkpoint_dir": str(workdir / label),
        }
    )
    ensure_topics(settings)
    ensure_bucket(settings)
    return settings


def paired_ratios(  # type: ignore[no-untyped-def]
    spark, base: Settings, data: Settings, events: list[ListenEvent], repeats: int, workdir: Path
) -> list[tuple[float, float]]:
    """``repeats`` pairs of (indexed bulk-insert rate, both-sinks stream rate), each pair back
    to back on fresh databases, the first of the pair alternating to cancel drift."""
    pairs = []
    for repeat in range(repeats):
        both = fresh(base, f"both{repeat}", workdir).model_copy(
            update={"kafka_topic_prefix": data.kafka_topic_prefix}
        )

        def bulk(number: int = repeat) -> float:
            return mongo_insert_rate(fresh(base, f"bulkidx{number}", workdir), events, True)

        def stream(settings: Settings = both) -> float:
            return stream_rate(spark, settings, frozenset({"mongodb", "gcs"}), len(events))

        if repeat % 2 == 0:
            indexed = bulk()
            streamed = stream()
        else:
            streamed = stream()
            indexed = bulk()
        print(
            f"pair {repeat + 1}: indexed bulk insert {indexed:,.0f} docs/s, "
            f"stream into GCS + MongoDB {streamed:,.0f} events/s, ratio {streamed / indexed:.2f}",
            flush=True,
        )
        pairs.append((indexed, streamed))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-seconds", type=int, default=30)
    parser.add_argument("--latency-rate", type=int, default=1_000)
    parser.add_argument(
        "--sinks-only",
        action="store_true",
        help="Only pairs of (indexed bulk insert, one task's sinks without Spark).",
    )
    args = parser.parse_args()
    base = get_settings()
    workdir = Path(tempfile.mkdtemp(prefix="bench-streaming-"))
    events = make_events(args.events, datetime.now(UTC) - timedelta(days=1), timedelta(seconds=0.8))
    if args.sinks_only:
        sink_pairs(base, events, args.repeats, workdir)
        return
    data = fresh(base, "data", workdir)
    print(f"producing {args.events:,} listens: {produce(data, events):,.0f} events/s", flush=True)
    kafka_rate = kafka_drain_rate(data, args.events)
    mongo_rate = mongo_insert_rate(fresh(base, "bulk", workdir), events, indexes=False)
    spark = build_spark_session(base, "bench-streaming")
    peak = [0.0]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.5):
            peak[0] = max(peak[0], process_tree_rss_mb(os.getpid()))

    threading.Thread(target=sample, daemon=True).start()
    # Warm up Python workers and the JIT on a small topic of its own, as a running job is.
    warm = fresh(base, "warmup", workdir)
    produce(warm, events[:5_000])
    stream_rate(spark, warm, frozenset({"mongodb", "gcs"}), 5_000)
    # Every stream run reads the same topic through a checkpoint and a database of its own.
    gcs_only = data.model_copy(update={"stream_checkpoint_dir": str(workdir / "gcs-only")})
    gcs_rate = stream_rate(spark, gcs_only, frozenset({"gcs"}), args.events)
    print(f"stream into GCS alone: {gcs_rate:,.0f} events/s", flush=True)
    pairs = paired_ratios(spark, base, data, events, args.repeats, workdir)
    latencies = (
        latency(spark, fresh(base, "latency", workdir), args.latency_seconds, args.latency_rate)
        if args.latency_seconds
        else []
    )
    sampling.set()
    spark.stop()
    with mongo_client(base) as client:
        for name in client.list_database_names():
            if name.startswith(f"bench_{os.getpid()}"):
                client.drop_database(name)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    ratios = sorted(streamed / indexed for indexed, streamed in pairs)
    print(f"kafka-python consumer drain:           {kafka_rate:>10,.0f} events/s")
    print(f"MongoDB bulk insert, bare collection:  {mongo_rate:>10,.0f} docs/s")
    print(f"stream into GCS alone:                 {gcs_rate:>10,.0f} events/s  (target ≥ 10,000)")
    print(f"  ratio to the Kafka drain:            {gcs_rate / kafka_rate:>10.2f}")
    for number, (indexed, streamed) in enumerate(pairs, 1):
        print(
            f"pair {number}: MongoDB indexed bulk insert {indexed:>8,.0f} docs/s, "
            f"stream into GCS + MongoDB {streamed:>8,.0f} events/s: ratio {streamed / indexed:.2f}"
        )
    print(
        f"ratio stream / indexed bulk insert:    median {statistics.median(ratios):.2f}, "
        f"range {ratios[0]:.2f} to {ratios[-1]:.2f} over {len(ratios)} pairs  (target ≥ 0.70)"
    )
    if latencies:
        print(
            f"latency Kafka → MongoDB at {args.latency_rate:,}/s ({len(latencies):,} events): "
            f"p50 {pct(0.5):.2f} s, p95 {pct(0.95):.2f} s, p99 {pct(0.99):.2f} s"
            "  (target p95 ≤ 3 s)"
        )
    print(f"peak RSS of the streaming application: {peak[0]:>10,.0f} MB")


if __name__ == "__main__":
    main()
