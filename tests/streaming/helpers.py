"""Building events, producing them, and reading back what the stream stored."""

from __future__ import annotations

import io
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq

from auxcord.clients import gcs_client, kafka_producer, mongo_database
from auxcord.events import ListenEvent, NowPlayingEvent
from auxcord.names import RAW_LISTENS_PREFIX, Collection, Topic
from auxcord.settings import Settings

RECENT = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=6)


def listen(number: int, users: int = 20, spacing_s: float = 0.25) -> ListenEvent:
    """Play ``number`` of a synthetic history: plays a quarter-second apart, in the last hours."""
    return ListenEvent(
        user_id=f"user{number % users}",
        track_id=f"track{number % 997}",
        track_name=f"Track {number % 997}",
        artist_name=f"Artist {number % 89}",
        artist_id=f"artist{number % 89}",
        album_name="Album",
        album_id="album1",
        duration_ms=180_000,
        played_at=RECENT + timedelta(seconds=number * spacing_s),
        source="poll",
    )


def now_playing(user: str, observed_at: datetime, track: str) -> NowPlayingEvent:
    return NowPlayingEvent(
        user_id=user,
        state="track_changed",
        observed_at=observed_at,
        is_playing=True,
        playing_type="track",
        track_id=track,
        track_name=track,
        artist_name="Someone",
        progress_ms=1_000,
        duration_ms=200_000,
    )


def produce(settings: Settings, topic: Topic, messages: Iterable[tuple[bytes, bytes]]) -> int:
    producer = kafka_producer(settings)
    sent = 0
    for key, value in messages:
        producer.send(settings.topic(topic), key=key, value=value)
        sent += 1
    producer.flush()
    producer.close()
    return sent


def produce_listens(settings: Settings, events: Iterable[ListenEvent]) -> int:
    return produce(
        settings, Topic.LISTENS, ((event.user_id.encode(), event.to_json()) for event in events)
    )


def stored_listen_ids(settings: Settings) -> list[str]:
    return [doc["_id"] for doc in mongo_database(settings)[Collection.LISTENS].find({}, {"_id": 1})]


def raw_parquet_ids(settings: Settings) -> list[str]:
    """Every event id in the raw Parquet objects, duplicates included."""
    ids: list[str] = []
    for blob in gcs_client(settings).list_blobs(settings.gcs_bucket, prefix=RAW_LISTENS_PREFIX):
        table = pq.read_table(io.BytesIO(blob.download_as_bytes()))
        ids.extend(table["event_id"].to_pylist())
    return ids


def assert_exactly_once(settings: Settings, expected: set[str]) -> None:
    """MongoDB and the raw Parquet in GCS each hold exactly ``expected``, once each."""
    stored = stored_listen_ids(settings)
    assert len(stored) == len(set(stored)) and set(stored) == expected
    parquet = raw_parquet_ids(settings)
    doubled = [event_id for event_id, n in Counter(parquet).items() if n > 1]
    assert not doubled, f"{len(doubled)} events are twice in GCS"
    assert set(parquet) == expected


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.2)
