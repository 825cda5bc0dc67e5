"""One task's slice of a micro-batch against the real MongoDB and GCS servers, without Spark:
what a first attempt and a re-run store, and how many round trips that costs."""

from __future__ import annotations

import pytest
from pymongo import monitoring
from pymongo.errors import ServerSelectionTimeoutError

from auxcord.clients import gcs_client, mongo_client
from auxcord.events import ListenEvent
from auxcord.names import RAW_LISTENS_PREFIX, Collection, Topic
from auxcord.settings import Settings
from devtools.stack import free_port
from streaming.batch import Sink, SliceWriter
from streaming.job import BatchWriter
from streaming.kafka_source import one_partition_batch
from streaming.parse import ParsedBatch, parse_batch, parsed_schema
from streaming.sinks import SliceTag, ensure_indexes, store_listens, unique_listens
from tests.streaming.helpers import assert_exactly_once, listen

BOTH: frozenset[Sink] = frozenset({"mongodb", "gcs"})


def parsed(settings: Settings, events: list[ListenEvent], first_offset: int = 0) -> ParsedBatch:
    topic = settings.topic(Topic.LISTENS)
    batch = one_partition_batch(topic, [event.to_json() for event in events], first_offset)
    return parse_batch(batch, {topic: ListenEvent}, parsed_schema())


class ListensCommands(monitoring.CommandListener):
    """The names of the commands sent to the ``listens`` collection."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command.get(event.command_name) == Collection.LISTENS:
            self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_a_first_attempt_learns_what_is_stored_from_the_insert_alone(
    stream_settings: Settings,
) -> None:
    events = [listen(n) for n in range(300)]
    commands = ListensCommands()
    with mongo_client(stream_settings, event_listeners=[commands]) as client:
        db = client[stream_settings.mongodb_database]
        ensure_indexes(db)
        # A hundred of them were stored by another slice: re-sent events, an import overlapping
        # live polling.
        table, documents = unique_listens(parsed(stream_settings, events[:100]), set())
        store_listens(db, table, documents, SliceTag("run", 0, 0), rerun=False)
        commands.names.clear()
        table, documents = unique_listens(parsed(stream_settings, events), set())
        fresh = store_listens(db, table, documents, SliceTag("run", 1, 0), rerun=False)
    assert sorted(fresh["event_id"].to_pylist()) == sorted(e.event_id for e in events[100:])
    assert commands.names == ["insert"], "one round trip, and no lookup of the duplicates"


def test_a_rerun_claims_what_its_earlier_attempt_stored(stream_settings: Settings) -> None:
    events = [listen(n) for n in range(300)]
    chunks = [parsed(stream_settings, events[at : at + 100], at) for at in (0, 100, 200)]
    other = SliceWriter(stream_settings, SliceTag("run", 0, 0), BOTH, rerun=False)
    other.add(parsed(stream_settings, events[:50], 500))
    assert other.finish()["new_listens"] == 50
    other.close()
    tag = SliceTag("run", 1, 0)
    # The first attempt stores two chunks in MongoDB and dies before it writes GCS.
    first = SliceWriter(stream_settings, tag, BOTH, rerun=False)
    first.add(chunks[0])
    first.add(chunks[1])
    first.close()
    again = SliceWriter(stream_settings, tag, BOTH, rerun=True)
    for chunk in chunks:
        again.add(chunk)
    result = again.finish()
    again.close()
    assert (result["listens"], result["new_listens"]) == (300, 250)
    assert_exactly_once(stream_settings, {event.event_id for event in events})


def test_a_failed_mongodb_write_fails_the_slice_before_gcs(stream_settings: Settings) -> None:
    away = stream_settings.model_copy(
        update={"mongodb_uri": f"mongodb://127.0.0.1:{free_port()}/auxcord?directConnection=true"}
    )
    writer = SliceWriter(away, SliceTag("run", 0, 0), BOTH, rerun=False)
    writer.add(parsed(stream_settings, [listen(n) for n in range(10)]))
    with pytest.raises(ServerSelectionTimeoutError):
        writer.finish()
    writer.close()
    blobs = gcs_client(stream_settings).list_blobs(
        stream_settings.gcs_bucket, prefix=RAW_LISTENS_PREFIX
    )
    assert not list(blobs), "nothing reaches GCS that MongoDB did not take"


def test_only_a_query_s_first_batch_may_be_a_rerun(test_settings: Settings) -> None:
    writer = BatchWriter(test_settings, "run")
    # Spark re-runs an uncommitted batch only as the query starts, from its checkpoint.
    assert writer.may_have_run(7)
    writer.last_batch = 7
    assert not writer.may_have_run(8)
    assert writer.may_have_run(7), "a batch id seen before is a re-run, whatever Spark says"
