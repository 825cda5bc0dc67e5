"""Spotify JSON to events: good items parse, malformed ones give a reason, states change right."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from auxcord.errors import InvalidEvent
from producers.parse import (
    NOTHING,
    listen_from_play_history,
    playback_from_currently_playing,
    state_change,
)

TRACK = {
    "id": "4uLU6hMCjMI75M1A2tKUQC",
    "name": "Song",
    "duration_ms": 200_000,
    "type": "track",
    "is_local": False,
    "artists": [{"id": "2Jd8h7F7yT0hIuGY0CtJ6C", "name": "Band"}],
    "album": {
        "id": "0a9J1lmQKCj0mR2Ptg9XyS",
        "name": "Album",
        "images": [{"url": "http://img/1.svg", "width": 300, "height": 300}],
    },
}


def test_play_history_item_becomes_a_listen() -> None:
    event = listen_from_play_history(
        "u1", {"track": TRACK, "played_at": "2026-11-20T10:00:00.123Z", "context": None}
    )
    assert event.track_id == TRACK["id"] and event.album_image_url == "http://img/1.svg"
    assert event.played_at == datetime(2026, 11, 20, 10, 0, 0, 123_000, tzinfo=UTC)
    assert event.source == "poll"


def test_local_file_has_no_id_but_is_kept() -> None:
    local = {**TRACK, "id": None, "is_local": True, "album": {"id": None, "name": "Local"}}
    event = listen_from_play_history("u1", {"track": local, "played_at": "2026-11-20T10:00:00Z"})
    assert event.track_id is None and event.is_local


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ("nope", "not an object"),
        ({"track": None, "played_at": "2026-11-20T10:00:00Z"}, "track: missing or null"),
        ({"track": TRACK, "played_at": "yesterday"}, "is not an ISO 8601 time"),
        ({"track": TRACK, "played_at": "1970-01-01T00:00:00Z"}, "outside the plausible range"),
        ({"track": {**TRACK, "name": None}, "played_at": "2026-11-20T10:00:00Z"}, "track_name"),
        (
            {"track": {**TRACK, "duration_ms": -1}, "played_at": "2026-11-20T10:00:00Z"},
            "duration_ms",
        ),
    ],
)
def test_malformed_items_are_rejected_with_a_reason(item: Any, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        listen_from_play_history("u1", item)


def _playing(item_id: str | None, is_playing: bool = True, kind: str = "track") -> Any:
    item = None if item_id is None else {**TRACK, "id": item_id}
    return playback_from_currently_playing(
        {
            "is_playing": is_playing,
            "progress_ms": 1_000,
            "item": item,
            "currently_playing_type": kind,
        }
    )


def test_state_changes() -> None:
    a, b = _playing("a"), _playing("b")
    assert state_change(NOTHING, a) == "started"
    assert state_change(a, _playing("a")) is None
    assert state_change(a, b) == "track_changed"
    assert state_change(a, _playing("a", is_playing=False)) == "paused"
    assert state_change(_playing("a", is_playing=False), a) == "resumed"
    assert state_change(a, playback_from_currently_playing(None)) == "stopped"
    ad = _playing(None, kind="ad")
    assert ad.playing_type == "ad"
    assert state_change(a, ad) == "track_changed"


@pytest.mark.parametrize(
    "payload",
    [{"is_playing": "yes"}, {"progress_ms": 5}, {"is_playing": True, "progress_ms": -3}, [1, 2]],
)
def test_malformed_currently_playing_is_rejected(payload: Any) -> None:
    with pytest.raises(InvalidEvent):
        playback_from_currently_playing(payload)
