"""Spotify JSON to auxcord events: pure functions, every malformed input a clear reason.

Spotify's answers are untrusted input: fields go missing, tracks are null, local files carry
null ids, podcasts and ads appear, and timestamps can be absurd. Each function either returns a
validated event or raises :class:`~auxcord.errors.InvalidEvent` saying what was wrong; the
poller counts and skips those and carries on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from auxcord.errors import InvalidEvent
from auxcord.events import ListenEvent, NowPlayingEvent, NowPlayingState, PlayContext


def _parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise InvalidEvent(f"played_at: expected an ISO 8601 string, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidEvent(f"played_at: {value[:40]!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise InvalidEvent("played_at: has no time zone")
    return parsed


def _first_image(album: dict[str, Any]) -> str | None:
    images = album.get("images") or []
    if images and isinstance(images[0], dict) and isinstance(images[0].get("url"), str):
        return str(images[0]["url"])
    return None


def listen_from_play_history(user_id: str, item: Any) -> ListenEvent:
    """One recently-played item as a validated listen (source ``poll``)."""
    if not isinstance(item, dict):
        raise InvalidEvent("play history item is not an object")
    track = item.get("track")
    if not isinstance(track, dict):
        raise InvalidEvent("track: missing or null")
    artists = track.get("artists")
    first = artists[0] if isinstance(artists, list) and artists else None
    artist: dict[str, Any] = first if isinstance(first, dict) else {}
    album: dict[str, Any] = track["album"] if isinstance(track.get("album"), dict) else {}
    context = item.get("context")
    fields: dict[str, Any] = {
        "user_id": user_id,
        "track_id": track.get("id"),
        "track_name": track.get("name"),
        "artist_name": artist.get("name"),
        "artist_id": artist.get("id"),
        "album_name": album.get("name"),
        "album_id": album.get("id"),
        "album_image_url": _first_image(album),
        "duration_ms": track.get("duration_ms"),
        "played_at": _parse_time(item.get("played_at")),
        "source": "poll",
        "item_type": "episode" if track.get("type") == "episode" else "track",
        "is_local": bool(track.get("is_local")),
        "context": (
            PlayContext(type=context["type"], uri=context["uri"])
            if isinstance(context, dict) and context.get("type") and context.get("uri")
            else None
        ),
    }
    return ListenEvent.from_dict(fields)


@dataclass(frozen=True)
class Playback:
    """What currently-playing showed, reduced to what a state change depends on."""

    is_playing: bool
    playing_type: str | None
    item_key: str | None
    track_id: str | None
    track_name: str | None
    artist_name: str | None
    album_name: str | None
    album_image_url: str | None
    progress_ms: int | None
    duration_ms: int | None

    @property
    def remaining_ms(self) -> int | None:
        if self.progress_ms is None or self.duration_ms is None:
            return None
        return max(0, self.duration_ms - self.progress_ms)


NOTHING = Playback(False, None, None, None, None, None, None, None, None, None)


def playback_from_currently_playing(payload: Any) -> Playback:
    """currently-playing's answer (None for 204) as a :class:`Playback`."""
    if payload is None:
        return NOTHING
    if not isinstance(payload, dict) or not isinstance(payload.get("is_playing"), bool):
        raise InvalidEvent("currently-playing: is_playing missing or not a boolean")
    item: dict[str, Any] = payload["item"] if isinstance(payload.get("item"), dict) else {}
    playing_type = payload.get("currently_playing_type")
    if playing_type not in {"track", "episode", "ad", "unknown"}:
        playing_type = "unknown"
    progress = payload.get("progress_ms")
    if progress is not None and (not isinstance(progress, int) or progress < 0):
        raise InvalidEvent(f"currently-playing: progress_ms {progress!r} is not a count of ms")
    artists = item.get("artists")
    first = artists[0] if isinstance(artists, list) and artists else None
    artist: dict[str, Any] = first if isinstance(first, dict) else {}
    show: dict[str, Any] = item["show"] if isinstance(item.get("show"), dict) else {}
    album: dict[str, Any] = item["album"] if isinstance(item.get("album"), dict) else show
    item_id, name = item.get("id"), item.get("name")
    return Playback(
        is_playing=payload["is_playing"],
        playing_type=playing_type,
        item_key=item_id or (f"{artist.get('name')}|{name}" if name else playing_type),
        track_id=item_id,
        track_name=name,
        artist_name=artist.get("name") or show.get("publisher"),
        album_name=album.get("name"),
        album_image_url=_first_image(album),
        progress_ms=progress,
        duration_ms=item.get("duration_ms") if isinstance(item.get("duration_ms"), int) else None,
    )


def state_change(previous: Playback, current: Playback) -> NowPlayingState | None:
    """How playback changed between two observations, or None if it did not."""
    if current.item_key is None or (not current.is_playing and current is NOTHING):
        return "stopped" if previous.item_key is not None else None
    if previous.item_key is None:
        return "started" if current.is_playing else None
    if current.item_key != previous.item_key:
        return "track_changed"
    if previous.is_playing and not current.is_playing:
        return "paused"
    if not previous.is_playing and current.is_playing:
        return "resumed"
    return None


def now_playing_event(
    user_id: str, state: NowPlayingState, current: Playback, observed_at: datetime
) -> NowPlayingEvent:
    """The now-playing event for a state change seen at ``observed_at``."""
    started_at = None
    if current.progress_ms is not None and state != "stopped":
        started_at = observed_at - timedelta(milliseconds=current.progress_ms)
    return NowPlayingEvent.from_dict(
        {
            "user_id": user_id,
            "state": state,
            "observed_at": observed_at.astimezone(UTC),
            "is_playing": current.is_playing and state != "stopped",
            "playing_type": current.playing_type,
            "track_id": current.track_id,
            "track_name": current.track_name,
            "artist_name": current.artist_name,
            "album_name": current.album_name,
            "album_image_url": current.album_image_url,
            "progress_ms": current.progress_ms,
            "duration_ms": current.duration_ms,
            "started_at": started_at,
        }
    )
