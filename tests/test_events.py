"""The event model: JSON and Spark round trips, deterministic ids, and bad events with reasons."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from auxcord.errors import InvalidEvent
from auxcord.events import ListenEvent, NowPlayingEvent, listen_event_id

PLAYED_AT = datetime(2026, 3, 29, 0, 59, 59, 987_654, tzinfo=UTC)


def listen(**overrides: Any) -> ListenEvent:
    fields: dict[str, Any] = {
        "user_id": "alice",
        "track_id": "4uLU6hMCjMI75M1A2tKUQC",
        "track_name": "Ça plane pour moi 🎸 <b>&amp;",
        "artist_name": "Plastic Bertrand",
        "artist_id": "2Jd8h7F7yT0hIuGY0CtJ6C",
        "album_name": "AN1",
        "album_id": "0a9J1lmQKCj0mR2Ptg9XyS",
        "duration_ms": 183_000,
        "played_at": PLAYED_AT,
        "source": "poll",
        "context": {"type": "playlist", "uri": "spotify:playlist:37i9dQZF1DXcBWIGoYBM5M"},
    }
    fields.update(overrides)
    return ListenEvent(**fields)


def test_listen_round_trips_through_json_with_ms_precision() -> None:
    event = listen()
    wire = json.loads(event.to_json())
    assert wire["played_at"] == "2026-03-29T00:59:59.987Z"
    assert wire["schema_version"] == 1
    parsed = ListenEvent.from_json(event.to_json())
    assert parsed == event
    assert parsed.played_at == PLAYED_AT.replace(microsecond=987_000)


def test_played_at_in_another_zone_is_normalised_to_utc() -> None:
    paris = timezone(timedelta(hours=2))
    event = listen(played_at=datetime(2026, 3, 29, 2, 59, 59, 987_000, tzinfo=paris))
    assert event.played_at == PLAYED_AT.replace(microsecond=987_000)
    assert event.event_id == listen().event_id


def test_same_play_from_two_sources_and_precisions_has_one_id() -> None:
    from_poll = listen(source="poll")
    from_export = listen(source="import", played_at=PLAYED_AT.replace(microsecond=0))
    assert from_poll.event_id == from_export.event_id
    assert from_poll.event_id == listen_event_id("alice", from_poll.track_key, PLAYED_AT)


def test_different_plays_have_different_ids() -> None:
    ids = {
        listen().event_id,
        listen(user_id="bob").event_id,
        listen(track_id="7GhIk7Il098yCjg4BQjzvb").event_id,
        listen(played_at=PLAYED_AT + timedelta(seconds=1)).event_id,
    }
    assert len(ids) == 4


def test_local_files_are_identified_by_their_names() -> None:
    one = listen(track_id=None, is_local=True, track_name="Demo", artist_name="Me")
    same = listen(track_id=None, is_local=True, track_name="DEMO", artist_name="me")
    other = listen(track_id=None, is_local=True, track_name="Demo 2", artist_name="Me")
    assert one.track_key == "local:me|demo"
    assert one.event_id == same.event_id != other.event_id


def test_listen_event_matches_its_spark_schema(spark: Any) -> None:
    from pyspark.sql import functions as F

    event = listen()
    schema = ListenEvent.spark_schema()
    assert schema.fieldNames() == list(ListenEvent.model_fields)
    frame = spark.createDataFrame([(event.to_json().decode(),)], "value string")
    row = frame.select(F.from_json("value", schema).alias("e")).select("e.*").first()
    assert row is not None
    as_dict = row.asDict(recursive=True)
    assert as_dict["played_at"].replace(tzinfo=UTC) == event.played_at
    as_dict["played_at"] = event.played_at
    assert ListenEvent.from_dict(as_dict) == event


def test_now_playing_round_trips_and_has_a_spark_schema() -> None:
    state = NowPlayingEvent(
        user_id="alice",
        state="track_changed",
        observed_at=PLAYED_AT,
        is_playing=True,
        playing_type="track",
        track_id="4uLU6hMCjMI75M1A2tKUQC",
        track_name="x",
        progress_ms=1_000,
        duration_ms=183_000,
        started_at=PLAYED_AT - timedelta(seconds=1),
    )
    assert NowPlayingEvent.from_json(state.to_json()) == state
    assert "observed_at" in NowPlayingEvent.spark_schema().fieldNames()


def _wire(**changes: Any) -> bytes:
    document = json.loads(listen().to_json())
    for key, value in changes.items():
        if value is ...:
            del document[key]
        else:
            document[key] = value
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff not json", "Invalid JSON"),
        (_wire(user_id=...), "user_id: is required"),
        (_wire(duration_ms="long"), "duration_ms: Input should be a valid integer"),
        (_wire(duration_ms=-5), "duration_ms: Input should be greater than or equal to 0"),
        (_wire(played_at="2026-03-29T00:59:59"), "played_at: must be timezone-aware"),
        (
            _wire(played_at="1999-01-01T00:00:00Z"),
            "played_at: 1999-01-01T00:00:00+00:00 is outside",
        ),
        (_wire(played_at="2999-01-01T00:00:00Z"), "is outside the plausible range"),
        (_wire(track_name="x" * 5_000), "track_name: String should have at most 1000 characters"),
        (_wire(track_name=""), "track_name: String should have at least 1 character"),
        (_wire(source="radio"), "source: Input should be 'poll', 'nowplaying' or 'import'"),
        (_wire(schema_version=2), "schema_version: unknown schema version 2"),
        (_wire(colour="red"), "colour: is not a known field"),
        (_wire(event_id="0" * 32), "does not match the play it describes"),
    ],
)
def test_bad_events_are_rejected_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        ListenEvent.from_json(raw)
    assert reason in caught.value.reason
    assert "\n" not in caught.value.reason


def test_naive_datetimes_are_rejected_in_python_too() -> None:
    with pytest.raises(InvalidEvent, match="played_at: must be timezone-aware"):
        ListenEvent.from_dict({**listen().model_dump(), "played_at": datetime(2026, 1, 1)})
