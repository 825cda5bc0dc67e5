"""Parsing Kafka records: good events become rows, anything else a dead letter with a reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa

from auxcord.events import ListenEvent, NowPlayingEvent
from streaming.parse import parse_batch, parsed_schema
from tests.streaming.helpers import listen, now_playing

TOPICS = {"l": ListenEvent, "n": NowPlayingEvent}


def kafka_batch(records: list[tuple[str, bytes | None]]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "key": pa.array([None] * len(records), pa.binary()),
            "value": pa.array([value for _, value in records], pa.binary()),
            "topic": [topic for topic, _ in records],
            "partition": pa.array([0] * len(records), pa.int32()),
            "offset": pa.array(range(len(records)), pa.int64()),
            "timestamp": pa.array([datetime.now(UTC)] * len(records), pa.timestamp("us", "UTC")),
        }
    )


def test_valid_events_become_typed_rows() -> None:
    play = listen(3)
    state = now_playing("user1", datetime(2026, 5, 1, 12, tzinfo=UTC), "t1")
    parsed = parse_batch(
        kafka_batch([("l", play.to_json()), ("n", state.to_json())]), TOPICS, parsed_schema()
    ).records.to_pylist()
    assert parsed[0]["error"] is None and parsed[0]["now_playing"] is None
    assert ListenEvent.from_dict(parsed[0]["listen"]) == play
    assert parsed[1]["listen"] is None
    assert NowPlayingEvent.from_dict(parsed[1]["now_playing"]) == state


def test_every_kind_of_poison_gets_its_reason_and_raw_bytes() -> None:
    good = listen(1).to_json()
    wrong_version = json.loads(good)
    wrong_version["schema_version"] = 9
    forged = json.loads(good)
    forged["event_id"] = "0" * 32
    records: list[tuple[str, bytes | None]] = [
        ("l", b"\x00\xffnot json"),
        ("l", b'{"user_id": "u1"}'),
        ("l", json.dumps(wrong_version).encode()),
        ("l", json.dumps(forged).encode()),
        ("l", None),
        ("elsewhere", good),
        ("n", good),
        ("l", good),
    ]
    parsed = parse_batch(kafka_batch(records), TOPICS, parsed_schema())
    rows = parsed.records.to_pylist()
    reasons = [row["error"] for row in rows]
    assert reasons[0].startswith("not JSON")
    assert "track_name: is required" in reasons[1]
    assert "unknown schema version 9" in reasons[2]
    assert "does not match the play" in reasons[3]
    assert reasons[4] == "empty message (no value)"
    assert reasons[5] == "unexpected topic 'elsewhere'"
    assert reasons[6].startswith("failed validation: state: is required")
    assert reasons[7] is None and rows[7]["listen"]["event_id"] == listen(1).event_id
    assert [row["raw"] for row in rows[:4]] == [value for _, value in records[:4]]
    assert all(row["listen"] is None for row in rows[:7])
    assert parsed.listens[:7] == [None] * 7 and parsed.listens[7] == rows[7]["listen"]
