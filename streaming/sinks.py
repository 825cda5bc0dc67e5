"""The streaming job's sinks: MongoDB listens, now-playing and dead letters, and raw Parquet in GCS.

Spark re-runs a micro-batch that was started but not committed, with exactly the same records,
so every sink here is safe to run twice for the same batch:

- ``listens`` is keyed by event id, and a duplicate insert is "already stored". Each document
  remembers the slice of the stream that first stored it (``ingest``: stream run, batch id and
  Kafka partition range, see :class:`SliceTag`).
- GCS receives only the listens that this slice stored first, including those it stored in an
  earlier attempt of itself, so a re-sent event (a producer retry, an export overlapping live
  polling) never reaches Parquet twice. Object names come from the same tag, so a re-run
  overwrites its own objects instead of adding new ones.
- ``now_playing`` holds one document per user, replaced only by a newer state.
- Dead letters are keyed by their Kafka coordinates.
"""

from __future__ import annotations

import io
import logging
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from auxcord.names import Collection, raw_listens_partition

if TYPE_CHECKING:
    import pyarrow as pa
    from google.cloud.storage import Bucket
    from pymongo.collection import Collection as MongoCollection
    from pymongo.database import Database

    from streaming.parse import ParsedBatch

log = logging.getLogger(__name__)

_DUPLICATE_KEY = 11000
_INSERT_CHUNK = 10_000
_UPLOAD_THREADS = 8
NOW_PLAYING_GRACE = timedelta(minutes=10)
"""How long a state outlives its track's expected end (or a pause) before it counts as stale."""


def ensure_indexes(db: Database[dict[str, Any]]) -> None:
    """The indexes the sinks and the dashboard's reads rely on (registered in
    :mod:`auxcord.indexes`); cheap when they exist."""
    from auxcord.indexes import STREAMING
    from auxcord.indexes import ensure_indexes as ensure_registered

    ensure_registered(db, *STREAMING)


def insert_new(
    collection: MongoCollection[dict[str, Any]], documents: list[dict[str, Any]]
) -> set[int]:
    """Insert ``documents`` (with deterministic ``_id``), returning the indexes that already
    existed. Insert-and-ignore-duplicates is idempotent and about 3x faster than upserts."""
    from pymongo.errors import BulkWriteError

    duplicates: set[int] = set()
    for begin in range(0, len(documents), _INSERT_CHUNK):
        chunk = documents[begin : begin + _INSERT_CHUNK]
        try:
            collection.insert_many(chunk, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            other = [error for error in errors if error.get("code") != _DUPLICATE_KEY]
            if other:
                raise
            duplicates.update(begin + error["index"] for error in errors)
    return duplicates


def unique_listens(parsed: ParsedBatch, seen: set[str]) -> tuple[pa.Table, list[dict[str, Any]]]:
    """The valid listens of a parsed batch not in ``seen``, each event id once, as a flat table
    and as documents (same order). ``seen`` gains their ids."""
    rows = []
    for index, listen in enumerate(parsed.listens):
        if listen is not None and listen["event_id"] not in seen:
            seen.add(listen["event_id"])
            rows.append(index)
    documents = [dict(parsed.listens[index]) for index in rows]  # type: ignore[arg-type]
    import pyarrow as pa

    table = pa_table_from_struct(parsed.records.column("listen").take(pa.array(rows, pa.int64())))
    return table, documents


def pa_table_from_struct(column: pa.Array | pa.ChunkedArray) -> pa.Table:
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return pa.Table.from_struct_array(column)


def store_listens(
    db: Database[dict[str, Any]],
    listens: pa.Table,
    documents: list[dict[str, Any]],
    tag: SliceTag,
    *,
    rerun: bool,
) -> pa.Table:
    """Store listens (as ``documents``, row for row) in MongoDB; return the rows of those this
    slice stored first.

    The bulk insert's duplicate-key errors name the listens already stored. On a slice's first
    attempt none of them can be its own, so that answer is complete: one round trip per chunk,
    no lookups. Only a ``rerun`` (the batch or the task may have run before) asks MongoDB which
    duplicates an earlier attempt of this same slice stored.
    """
    import pyarrow as pa

    ingest = str(tag)
    for document in documents:
        document["_id"] = document["event_id"]
        document["ingest"] = ingest
    collection = db[Collection.LISTENS]
    duplicates = insert_new(collection, documents)
    if not duplicates:
        return listens
    ours = (
        _stored_by(collection, [documents[i]["_id"] for i in duplicates], ingest)
        if rerun
        else set()
    )
    keep = [
        index
        for index in range(len(documents))
        if index not in duplicates or documents[index]["_id"] in ours
    ]
    return listens.take(pa.array(keep, pa.int64()))


def _stored_by(
    collection: MongoCollection[dict[str, Any]], ids: list[str], ingest: str
) -> set[str]:
    """Which of ``ids`` the slice ``ingest`` stored. One lookup per id: the local MongoDB
    server answers a large ``$in`` in time proportional to the list, far slower than this."""
    ours = set()
    for event_id in ids:
        stored = collection.find_one({"_id": event_id}, {"ingest": 1})
        if stored is not None and stored.get("ingest") == ingest:
            ours.add(event_id)
    return ours


@dataclass(frozen=True)
class SliceTag:
    """One task's slice of one micro-batch: the stream's run, the batch and the task.

    A re-run of the batch reads the same records into the same slices, so the tag (and the
    object names built from it) come out the same; two slices of one batch never share one.
    """

    run_id: str
    batch_id: int
    task: int

    def __str__(self) -> str:
        return f"{self.run_id}-{self.batch_id:010d}-{self.task:03d}"


def raw_object_name(played_at: datetime, tag: SliceTag) -> str:
    """``raw/listens/dt=…/hour=…/part-TAG.parquet``: the same name on every re-run."""
    return f"{raw_listens_partition(played_at)}/part-{tag}.parquet"


def write_raw_listens(bucket: Bucket, listens: pa.Table, tag: SliceTag) -> list[str]:
    """Write ``listens`` as Parquet, one object per UTC day and hour; returns the object names.

    Uploads run on a few threads: a backfill spread over many hours means many small objects,
    and each is one round trip.
    """
    import pyarrow.parquet as pq

    rows_of: dict[str, list[int]] = defaultdict(list)
    for index, played_at in enumerate(listens["played_at"].to_pylist()):
        rows_of[raw_object_name(played_at.astimezone(UTC), tag)].append(index)

    def upload(name: str) -> None:
        buffer = io.BytesIO()
        pq.write_table(listens.take(rows_of[name]), buffer, compression="zstd")
        bucket.blob(name).upload_from_string(
            buffer.getvalue(), content_type="application/vnd.apache.parquet"
        )

    if rows_of:
        with ThreadPoolExecutor(max_workers=min(_UPLOAD_THREADS, len(rows_of))) as pool:
            list(pool.map(upload, rows_of))
    return sorted(rows_of)


def store_now_playing(db: Database[dict[str, Any]], parsed: pa.Table) -> int:
    """Keep each user's newest state; an older state never replaces a newer one."""
    import pyarrow.compute as pc
    from pymongo import UpdateOne
    from pymongo.errors import BulkWriteError

    rows = parsed.filter(pc.is_valid(parsed["now_playing"]))
    newest: dict[str, dict[str, Any]] = {}
    for state in pa_table_from_struct(rows["now_playing"]).to_pylist():
        held = newest.get(state["user_id"])
        if held is None or state["observed_at"] > held["observed_at"]:
            newest[state["user_id"]] = state
    if not newest:
        return 0
    updates = []
    for user_id, state in newest.items():
        state["expires_at"] = now_playing_expiry(state)
        # The filter misses when the stored state is as new or newer, and the upsert's insert
        # then hits the user's _id: a duplicate key, which means "keep what is there".
        updates.append(
            UpdateOne(
                {"_id": user_id, "observed_at": {"$lt": state["observed_at"]}},
                {"$set": state},
                upsert=True,
            )
        )
    try:
        db[Collection.NOW_PLAYING].bulk_write(updates, ordered=False)
    except BulkWriteError as exc:
        if any(e.get("code") != _DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
            raise
    return len(updates)


def now_playing_expiry(state: dict[str, Any]) -> datetime:
    """When a state stops meaning "listening now": the track's expected end, plus grace."""
    observed: datetime = state["observed_at"]
    remaining_ms = 0
    if state.get("is_playing") and state.get("duration_ms") is not None:
        remaining_ms = max(0, state["duration_ms"] - (state.get("progress_ms") or 0))
    return observed + timedelta(milliseconds=remaining_ms) + NOW_PLAYING_GRACE


def store_dead_letters(db: Database[dict[str, Any]], parsed: pa.Table, batch_id: int) -> int:
    """Record every record that failed parsing, with its reason and raw bytes; returns how many."""
    import pyarrow.compute as pc
    from bson import Binary

    rows = parsed.filter(pc.is_valid(parsed["error"])).drop_columns(["listen", "now_playing"])
    if rows.num_rows == 0:
        return 0
    stored_at = datetime.now(UTC)
    documents = []
    for row in rows.to_pylist():
        timestamp: datetime = row["kafka_timestamp"]
        raw: bytes | None = row["raw"]
        documents.append(
            {
                # Offsets restart when the local broker loses its data; the timestamp keeps
                # a new poison record at an old offset from being mistaken for the old one.
                "_id": f"{row['topic']}:{row['partition']}:{row['offset']}:"
                f"{int(timestamp.timestamp() * 1000)}",
                "reason": row["error"],
                "topic": row["topic"],
                "partition": row["partition"],
                "offset": row["offset"],
                "kafka_timestamp": timestamp,
                "raw": Binary(raw) if raw is not None else None,
                "raw_preview": raw[:200].decode("utf-8", "replace") if raw is not None else None,
                "batch_id": batch_id,
                "stored_at": stored_at,
            }
        )
    insert_new(db[Collection.DEAD_LETTERS], documents)
    return len(documents)
