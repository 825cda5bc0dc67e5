"""One micro-batch, written by the executors: each task parses its Kafka records and stores them.

Writing where the records are read keeps the driver out of the data path: no collect, and while
one task waits on MongoDB another reads and parses, so the CPU work overlaps the database's.
The driver only gathers the per-slice counts this returns (:data:`SLICE_RESULT`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pyspark.sql import types as T

from auxcord.events import ListenEvent, NowPlayingEvent
from auxcord.names import Topic
from auxcord.settings import Settings

if TYPE_CHECKING:
    from datetime import datetime

    import pyarrow as pa
    from google.cloud.storage import Bucket
    from pymongo.database import Database

    from auxcord.events import _Event
    from streaming.parse import ParsedBatch
    from streaming.sinks import SliceTag

Sink = Literal["mongodb", "gcs"]

SLICE_RESULT = T.StructType(
    [
        T.StructField(
            "ranges",
            T.ArrayType(
                T.StructType(
                    [
                        T.StructField("topic", T.StringType()),
                        T.StructField("partition", T.IntegerType()),
                        T.StructField("first_offset", T.LongType()),
                        T.StructField("last_offset", T.LongType()),
                    ]
                )
            ),
        ),
        T.StructField("records", T.LongType()),
        T.StructField("listens", T.LongType()),
        T.StructField("new_listens", T.LongType()),
        T.StructField("now_playing", T.LongType()),
        T.StructField("dead_letters", T.LongType()),
        T.StructField("objects", T.LongType()),
        T.StructField("newest_record", T.TimestampType()),
        T.StructField("seconds", T.DoubleType()),
    ]
)

_WRITES_AHEAD = 2
"""Parsed batches that may wait for the MongoDB writer (each at most Arrow's batch size)."""

# Python workers are reused across tasks, so clients (and their connection pools) are too.
_clients: dict[str, tuple[Database[dict[str, Any]], Bucket]] = {}


def _clients_for(settings: Settings) -> tuple[Database[dict[str, Any]], Bucket]:
    from auxcord.clients import gcs_bucket, mongo_database

    key = f"{settings.mongodb_uri}|{settings.storage_emulator_host}|{settings.gcs_bucket}"
    if key not in _clients:
        _clients[key] = (mongo_database(settings), gcs_bucket(settings))
    return _clients[key]


def store_slices(
    settings: Settings, run_id: str, batch_id: int, sinks: frozenset[Sink], *, rerun: bool
) -> Callable[[Iterable[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The ``mapInArrow`` function that parses and stores one task's records.

    ``rerun``: the driver cannot rule out that this batch ran before (see
    :meth:`streaming.job.BatchWriter.may_have_run`); a retried task counts as a re-run too.
    """

    def store(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa
        from pyspark import TaskContext

        from streaming.parse import parse_batch, parsed_schema
        from streaming.sinks import SliceTag

        started = time.perf_counter()
        schema = parsed_schema()
        event_of_topic: dict[str, type[_Event]] = {
            settings.topic(Topic.LISTENS): ListenEvent,
            settings.topic(Topic.NOW_PLAYING): NowPlayingEvent,
        }
        context = TaskContext.get()
        # A re-run batch is planned into the same slices in the same order, so the task's
        # partition id names the same slice again.
        task = context.partitionId() if context is not None else 0
        # A retried task may have stored part of its slice. (Its stage is never retried as a
        # whole: reading, coalescing and writing a batch has no shuffle to lose.)
        retried = context is not None and context.attemptNumber() > 0
        writer = SliceWriter(
            settings, SliceTag(run_id, batch_id, task), sinks, rerun=rerun or retried
        )
        try:
            for batch in batches:
                if batch.num_rows:
                    writer.add(parse_batch(batch, event_of_topic, schema))
            if writer.records:
                result = writer.finish()
                result["seconds"] = time.perf_counter() - started
                yield pa.RecordBatch.from_pylist([result], schema=_slice_result_schema())
        finally:
            writer.close()

    return store


def _slice_result_schema() -> pa.Schema:
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(SLICE_RESULT, timezone="UTC")


class SliceWriter:
    """Stores one task's slice of a micro-batch, a parsed Arrow table at a time.

    Order matters for crash safety: MongoDB listens first (marking the events this slice stores
    first), then, once the slice is read, the GCS objects of exactly those events. A crash
    anywhere re-runs the whole batch, and each step is safe to repeat (see streaming.sinks).

    MongoDB writes run on one thread of their own, in order, while the task reads and parses
    the next records: the local server is the slowest step, so it should never wait for us.
    One thread, because SecantusDB livelocks on concurrent bulk inserts into one collection.
    At most :data:`_WRITES_AHEAD` tables wait for it, which bounds the slice's memory.
    """

    def __init__(
        self, settings: Settings, tag: SliceTag, sinks: frozenset[Sink], *, rerun: bool
    ) -> None:
        self.db, self.bucket = _clients_for(settings)
        self.tag = tag
        self.sinks = sinks
        self.rerun = rerun
        self.seen: set[str] = set()
        self.offsets: dict[tuple[str, int], tuple[int, int]] = {}
        self.newest: datetime | None = None
        self.records = self.listens = 0
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mongodb-sink")
        self._writes: list[Future[_Stored]] = []

    def add(self, batch: ParsedBatch) -> None:
        """Queue one parsed batch for MongoDB; waits only when the writer is far behind."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from streaming.sinks import unique_listens

        parsed = pa.Table.from_batches([batch.records])
        self._track_offsets(parsed)
        listens, documents = unique_listens(batch, self.seen)
        self.listens += listens.num_rows
        newest = pc.max(parsed["kafka_timestamp"]).as_py()
        if self.newest is None or newest > self.newest:
            self.newest = newest
        pending = [write for write in self._writes if not write.done()]
        if len(pending) >= _WRITES_AHEAD:
            wait(pending[:1])
        for write in self._writes:
            if write.done():
                write.result()  # a failed write fails the task now, not after the whole slice
        self._writes.append(self._writer.submit(self._store, parsed, listens, documents))

    def _store(
        self, parsed: pa.Table, listens: pa.Table, documents: list[dict[str, Any]]
    ) -> _Stored:
        from streaming.sinks import store_dead_letters, store_listens, store_now_playing

        if "mongodb" not in self.sinks:
            # A benchmark of the GCS sink alone: every listen is new.
            return _Stored(listens, 0, store_dead_letters(self.db, parsed, self.tag.batch_id))
        return _Stored(
            store_listens(self.db, listens, documents, self.tag, rerun=self.rerun),
            store_now_playing(self.db, parsed),
            store_dead_letters(self.db, parsed, self.tag.batch_id),
        )

    def _track_offsets(self, parsed: pa.Table) -> None:
        self.records += parsed.num_rows
        grouped = parsed.group_by(["topic", "partition"]).aggregate(
            [("offset", "min"), ("offset", "max")]
        )
        for row in grouped.to_pylist():
            key = (row["topic"], row["partition"])
            low, high = self.offsets.get(key, (row["offset_min"], row["offset_max"]))
            self.offsets[key] = (min(low, row["offset_min"]), max(high, row["offset_max"]))

    def finish(self) -> dict[str, Any]:
        """Wait for MongoDB, then write the slice's new listens to GCS; return the counts for
        the driver. A failed MongoDB write raises here, before anything reaches GCS."""
        import pyarrow as pa

        from streaming.sinks import write_raw_listens

        stored = [write.result() for write in self._writes]
        fresh = pa.concat_tables([part.fresh for part in stored]) if stored else None
        objects: list[str] = []
        if "gcs" in self.sinks and fresh is not None and fresh.num_rows:
            objects = write_raw_listens(self.bucket, fresh, self.tag)
        return {
            "ranges": [
                {"topic": topic, "partition": partition, "first_offset": low, "last_offset": high}
                for (topic, partition), (low, high) in sorted(self.offsets.items())
            ],
            "records": self.records,
            "listens": self.listens,
            "new_listens": fresh.num_rows if fresh is not None else 0,
            "now_playing": sum(part.now_playing for part in stored),
            "dead_letters": sum(part.dead_letters for part in stored),
            "objects": len(objects),
            "newest_record": self.newest,
            "seconds": 0.0,
        }

    def close(self) -> None:
        """Stop the writer thread (after finishing its queue: a task that failed part-way
        leaves nothing running behind it)."""
        self._writer.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class _Stored:
    """What MongoDB took of one parsed batch."""

    fresh: pa.Table
    """The listens this slice stored first (all of them without the MongoDB sink)."""
    now_playing: int
    dead_letters: int
