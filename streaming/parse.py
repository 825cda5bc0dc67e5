"""Parse and validate Kafka records into events, batch by batch, in Arrow.

Validation is :meth:`ListenEvent.from_json` itself, the rule the producers checked before
sending: one definition, so the stream and the producers cannot disagree about what a valid
event is. It runs inside ``mapInArrow`` on the executors, a record batch at a time, and a record
that fails becomes a dead letter carrying its reason instead of stopping the stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyspark.sql.types import (
    BinaryType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from auxcord.errors import InvalidEvent
from auxcord.events import ListenEvent, NowPlayingEvent

if TYPE_CHECKING:
    import pyarrow as pa

    from auxcord.events import _Event


def nullable(schema: StructType) -> StructType:
    """``schema`` with every field nullable, nested ones too.

    A row carries either a listen or a now-playing state, so the other struct is null; Arrow
    refuses a null struct whose fields are declared non-null.
    """
    fields = []
    for item in schema.fields:
        data_type = (
            nullable(item.dataType) if isinstance(item.dataType, StructType) else item.dataType
        )
        fields.append(StructField(item.name, data_type, nullable=True))
    return StructType(fields)


PARSED_COLUMNS = StructType(
    [
        StructField("topic", StringType()),
        StructField("partition", IntegerType()),
        StructField("offset", LongType()),
        StructField("kafka_timestamp", TimestampType()),
        StructField("error", StringType()),
        StructField("raw", BinaryType()),
        StructField("listen", nullable(ListenEvent.spark_schema())),
        StructField("now_playing", nullable(NowPlayingEvent.spark_schema())),
    ]
)
"""One row per Kafka record: either an event (``listen`` or ``now_playing``) or a dead letter
(``error`` with the ``raw`` bytes)."""

MAX_RAW_BYTES = 64 * 1024
"""A dead letter keeps at most this much of the record: enough to see what was wrong."""


def parsed_schema() -> pa.Schema:
    """:data:`PARSED_COLUMNS` as an Arrow schema."""
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(PARSED_COLUMNS, timezone="UTC")


@dataclass(frozen=True)
class ParsedBatch:
    """One batch of parsed records: :data:`PARSED_COLUMNS`, and each row's listen as a dict."""

    records: pa.RecordBatch
    listens: list[dict[str, Any] | None]
    """The listen of each row (``None`` where there is none), as validated: MongoDB documents
    are built from these, which is cheaper than reading them back out of Arrow."""


def parse_batch(
    batch: pa.RecordBatch, event_of_topic: dict[str, type[_Event]], schema: pa.Schema
) -> ParsedBatch:
    """Validate every record of one Arrow batch of Kafka columns."""
    import pyarrow as pa

    topics = batch.column("topic").to_pylist()
    values = batch.column("value").to_pylist()
    errors: list[str | None] = []
    raws: list[bytes | None] = []
    listens: list[dict[str, Any] | None] = []
    now_playing: list[dict[str, Any] | None] = []
    for topic, value in zip(topics, values, strict=True):
        event_type = event_of_topic.get(topic)
        listen = playing = None
        error: str | None = None
        if event_type is None:
            error = f"unexpected topic {topic!r}"
        elif value is None:
            error = "empty message (no value)"
        else:
            try:
                event = event_type.from_json(value)
            except InvalidEvent as exc:
                error = _describe_invalid(exc.reason)
            else:
                if isinstance(event, ListenEvent):
                    listen = event.model_dump()
                else:
                    playing = event.model_dump()
        errors.append(error)
        raws.append(value[:MAX_RAW_BYTES] if error is not None and value is not None else None)
        listens.append(listen)
        now_playing.append(playing)
    records = pa.RecordBatch.from_arrays(
        [
            batch.column("topic"),
            batch.column("partition"),
            batch.column("offset"),
            batch.column("timestamp"),
            pa.array(errors, pa.string()),
            pa.array(raws, pa.binary()),
            pa.array(listens, schema.field("listen").type),
            pa.array(now_playing, schema.field("now_playing").type),
        ],
        schema=schema,
    )
    return ParsedBatch(records, listens)


def _describe_invalid(reason: str) -> str:
    """Say first whether the record was JSON at all: the most useful fact about poison."""
    if "Invalid JSON" in reason or "json_invalid" in reason:
        return f"not JSON: {reason}"
    return f"failed validation: {reason}"
