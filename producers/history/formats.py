"""Spotify export records to auxcord listens: pure functions, no I/O.

Two formats are read, detected per file from the first record's fields:

- **Extended Streaming History** (``Streaming_History_Audio_*.json``): ``ts`` (the end of the
  play, UTC, to the second), ``ms_played``, track names and ``spotify_track_uri``, podcast
  fields (``episode_name``, ``episode_show_name``, ``spotify_episode_uri``), audiobook fields,
  ``incognito_mode`` and more.
- **Account-data StreamingHistory** (``StreamingHistory*.json``): ``endTime`` (UTC, to the
  minute), ``msPlayed``, and ``artistName`` + ``trackName`` (music) or ``podcastName`` +
  ``episodeName`` (podcasts), without any ids.

Every row is either a :class:`Play` (a validated :class:`ListenEvent` of source ``import``), a
:class:`Skip` (a real row auxcord deliberately does not count) or a :class:`Reject` (a row that
is wrong, with a reason). The rules, shared with live polling:

- A play counts at 30 s or more (:data:`MIN_PLAY_MS`), like Spotify's recently-played.
- Incognito (private session) rows are skipped: Spotify keeps them out of recently-played and
  out of the listener's taste profile, so auxcord keeps them out of shared stats too.
- Podcast episodes are kept, as ``item_type="episode"``, which the analytics leave out of music
  figures. Audiobooks and rows without any track or episode metadata are skipped.
- Exports carry no track length, so ``duration_ms`` holds ``ms_played`` (a lower bound).

Legacy rows have minute precision and no track id; :class:`MinuteIndex` resolves them against
plays known to the second (see :meth:`MinuteIndex.resolve`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError

from auxcord.events import ListenEvent

MIN_PLAY_MS = 30_000
"""The shortest play that counts, as in recently-played."""

EARLIEST_PLAY = datetime(2008, 1, 1, tzinfo=UTC)
"""Spotify launched in October 2008: an earlier play is made up (and would make an import
re-aggregate years of days for nothing)."""
FUTURE_SLACK = timedelta(minutes=10)
"""How far past this server's clock a play may end: clock skew, not a day's leeway."""
_MAX_MS_PLAYED = 24 * 3600 * 1000

Format = Literal["extended", "legacy"]
EXTENDED_FIELDS = frozenset({"ts", "ms_played"})
LEGACY_FIELDS = frozenset({"endTime", "msPlayed"})
_TS_PATTERN = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
_END_TIME_PATTERN = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d")
_UNKNOWN_LEGACY = {"Unknown Artist", "Unknown Track"}


class NotAnObject:
    """Stands for a top-level array element that is not a JSON object."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __repr__(self) -> str:
        return f"<{self.kind}>"


class Nested:
    """Stands for a field value that is an array or object (export fields are all scalars)."""

    def __repr__(self) -> str:
        return "<nested value>"


Record = dict[str, Any] | NotAnObject


@dataclass(frozen=True)
class Play:
    event: ListenEvent
    minute_precision: bool = False
    """True for legacy rows: ``played_at`` is the start of the minute the play ended in."""


@dataclass(frozen=True)
class Skip:
    reason: str


@dataclass(frozen=True)
class Reject:
    reason: str
    """What was wrong, stable enough to count (no values in it)."""
    detail: str = ""
    """The offending value or pydantic's full message, for the sample."""


Outcome = Play | Skip | Reject


def detect_format(record: Record) -> Format | None:
    """Which export a record comes from, or None if it looks like neither."""
    if not isinstance(record, dict):
        return None
    keys = record.keys()
    if keys >= EXTENDED_FIELDS:
        return "extended"
    if keys >= LEGACY_FIELDS:
        return "legacy"
    return None


def parse_record(fmt: Format, user_id: str, record: Record, now: datetime) -> Outcome:
    """One export row as a play, a skip or a rejection. ``now`` bounds plausible dates."""
    if not isinstance(record, dict):
        return Reject("row is not a JSON object", repr(record))
    nested = sorted(key for key, value in record.items() if isinstance(value, Nested))
    if nested:
        return Reject("row has nested values where an export has plain ones", ", ".join(nested))
    if fmt == "extended":
        return _extended(user_id, record, now)
    return _legacy(user_id, record, now)


def _ms_played(record: dict[str, Any], field: str) -> int | Reject:
    value = record.get(field)
    if field not in record:
        return Reject(f"{field}: is required")
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        return Reject(f"{field}: not a whole number of milliseconds", repr(value)[:80])
    if not 0 <= value <= _MAX_MS_PLAYED:
        return Reject(f"{field}: outside 0 to 24 hours", repr(value))
    return int(value)


def _plausible(moment: datetime, field: str, raw: str, now: datetime) -> datetime | Reject:
    if moment < EARLIEST_PLAY:
        return Reject(f"{field}: before 2008, when Spotify started", raw)
    if moment > now + FUTURE_SLACK:
        return Reject(f"{field}: in the future", raw)
    return moment


def _ts(record: dict[str, Any], now: datetime) -> datetime | Reject:
    value = record.get("ts")
    if not isinstance(value, str) or not _TS_PATTERN.fullmatch(value):
        return Reject("ts: not a UTC time like 2023-02-25T11:20:37Z", repr(value)[:80])
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return Reject("ts: not a valid date", value)
    return _plausible(moment, "ts", value, now)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _event(fields: dict[str, Any]) -> ListenEvent | Reject:
    try:
        return ListenEvent.model_validate(fields)
    except ValidationError as exc:
        where = sorted({".".join(str(p) for p in e["loc"]) or "row" for e in exc.errors()})
        return Reject(f"invalid {', '.join(where)}", str(exc.errors()[0]["msg"])[:200])


def _extended(user_id: str, record: dict[str, Any], now: datetime) -> Outcome:
    played_at = _ts(record, now)
    if isinstance(played_at, Reject):
        return played_at
    ms = _ms_played(record, "ms_played")
    if isinstance(ms, Reject):
        return ms
    if record.get("incognito_mode") is True:
        return Skip("incognito (private session)")
    if ms < MIN_PLAY_MS:
        return Skip("under 30 s")
    common = {
        "user_id": user_id,
        "duration_ms": ms,
        "ms_played": ms,
        "played_at": played_at,
        "source": "import",
    }
    episode_uri = _text(record.get("spotify_episode_uri"))
    episode_name = _text(record.get("episode_name"))
    if episode_uri or episode_name:
        show = _text(record.get("episode_show_name"))
        if episode_name is None or show is None:
            return Reject("podcast row without episode_name or episode_show_name")
        event = _event(
            {
                **common,
                "track_id": _uri_id(episode_uri, "episode"),
                "track_name": episode_name,
                "artist_name": show,
                "album_name": show,
                "item_type": "episode",
            }
        )
    elif _text(record.get("audiobook_title")) or _text(record.get("audiobook_chapter_uri")):
        return Skip("audiobook")
    elif (track_name := _text(record.get("master_metadata_track_name"))) is not None:
        artist = _text(record.get("master_metadata_album_artist_name"))
        if artist is None:
            return Reject("master_metadata_album_artist_name: missing for a track")
        uri = record.get("spotify_track_uri")
        track_id = _uri_id(uri, "track") if isinstance(uri, str) else None
        if isinstance(uri, str) and track_id is None and not uri.startswith("spotify:local:"):
            return Reject("spotify_track_uri: not a spotify:track: URI", uri[:80])
        event = _event(
            {
                **common,
                "track_id": track_id,
                "track_name": track_name,
                "artist_name": artist,
                "album_name": _text(record.get("master_metadata_album_album_name")),
                "is_local": track_id is None,
            }
        )
    else:
        return Skip("no track or episode metadata")
    return event if isinstance(event, Reject) else Play(event)


def _uri_id(uri: str | None, kind: str) -> str | None:
    prefix = f"spotify:{kind}:"
    if uri is None or not uri.startswith(prefix) or len(uri) == len(prefix):
        return None
    return uri.removeprefix(prefix)


def _legacy(user_id: str, record: dict[str, Any], now: datetime) -> Outcome:
    value = record.get("endTime")
    if not isinstance(value, str) or not _END_TIME_PATTERN.fullmatch(value):
        return Reject("endTime: not a UTC minute like 2023-01-01 12:34", repr(value)[:80])
    try:
        minute = datetime.fromisoformat(value.replace(" ", "T") + ":00+00:00")
    except ValueError:
        return Reject("endTime: not a valid date", value)
    played_at = _plausible(minute, "endTime", value, now)
    if isinstance(played_at, Reject):
        return played_at
    ms = _ms_played(record, "msPlayed")
    if isinstance(ms, Reject):
        return ms
    if ms < MIN_PLAY_MS:
        return Skip("under 30 s")
    if "podcastName" in record or "episodeName" in record:
        name, artist = _text(record.get("episodeName")), _text(record.get("podcastName"))
        item_type = "episode"
    else:
        name, artist = _text(record.get("trackName")), _text(record.get("artistName"))
        item_type = "track"
        if name in _UNKNOWN_LEGACY and artist in _UNKNOWN_LEGACY:
            return Skip("no track or episode metadata")
    if name is None or artist is None:
        return Reject("trackName/artistName (or episodeName/podcastName): missing")
    event = _event(
        {
            "user_id": user_id,
            "track_id": None,
            "track_name": name,
            "artist_name": artist,
            "album_name": artist if item_type == "episode" else None,
            "duration_ms": ms,
            "ms_played": ms,
            "played_at": played_at,
            "source": "import",
            "item_type": item_type,
        }
    )
    return event if isinstance(event, Reject) else Play(event, minute_precision=True)


def _minute(moment: datetime) -> int:
    return int(moment.timestamp()) // 60


@dataclass(frozen=True)
class KnownPlay:
    """A play known to the second: stored already, or from this import's extended rows."""

    track_id: str | None
    played_at: datetime


class MinuteIndex:
    """Plays known to the second, by (kind, artist, track, minute), to resolve legacy rows.

    The rule: a legacy row (``endTime`` to the minute, names only) is the same play as a
    known play of the same user and kind (music or podcast) whose artist (show) and track
    (episode) names match, case-insensitively, and whose ``played_at`` falls in that very
    minute (``endTime`` is the end truncated to the minute). The earliest unclaimed match wins,
    and each known play is claimed at most once, so two legacy rows never collapse into one
    known play. A matched row takes the known play's track id (None for a local file) and exact
    second, hence its event id, and is stored once. An unmatched row keeps a name key (like a
    local file's) at the start of its minute; two plays of one track ending in the same minute
    are then one play, since the legacy format cannot tell them apart.
    """

    def __init__(self) -> None:
        self._plays: dict[tuple[str, str, str, int], list[KnownPlay]] = defaultdict(list)
        self._claimed: set[tuple[str, str | None, datetime]] = set()

    @staticmethod
    def _key(
        item_type: str, artist: str, track: str, moment: datetime
    ) -> tuple[str, str, str, int]:
        return item_type, artist.casefold(), track.casefold(), _minute(moment)

    def add(
        self, item_type: str, artist: str, track: str, track_id: str | None, played_at: datetime
    ) -> None:
        bucket = self._plays[self._key(item_type, artist, track, played_at)]
        bucket.append(KnownPlay(track_id, played_at))
        bucket.sort(key=lambda play: play.played_at)

    def resolve(self, event: ListenEvent) -> ListenEvent:
        """The legacy ``event`` as the known play it matches, or unchanged."""
        key = self._key(event.item_type, event.artist_name, event.track_name, event.played_at)
        for known in self._plays.get(key, ()):
            claim = (event.item_type, known.track_id, known.played_at)
            if claim not in self._claimed:
                self._claimed.add(claim)
                return ListenEvent.model_validate(
                    {
                        **event.model_dump(),
                        "track_id": known.track_id,
                        "is_local": known.track_id is None and event.item_type == "track",
                        "played_at": known.played_at,
                        "event_id": "",
                    }
                )
        return event


OVERLAP_SLACK = timedelta(seconds=15)
"""How far a play (to the second) may start before the one before it ended: crossfade (at most
12 s) and rounding. The largest overlap in the real 2023 export fixture is 1.2 s."""
MINUTE_SLACK = timedelta(minutes=1)
"""The same for a legacy row, whose end is truncated to the minute."""
OVERLAP_REASON = "overlaps the play before it (one person cannot hear both)"


class Overlaps:
    """Finds plays that could not have happened: one listener hears one thing at a time, so a
    play (from its end back by ``ms_played``) must not start before the previous play ended.

    Plays are added in the export's order and checked in order of their ends. A play that
    overlaps the one before it by more than :data:`OVERLAP_SLACK` (:data:`MINUTE_SLACK` for
    legacy rows) is rejected, unless it is the same play again (same kind and names, ends
    within a minute: a duplicate, which publishing counts as one). So a made-up play of hours
    that ends after real ones is refused, and an export cannot claim more listening than time
    allows. Memory: about 40 bytes per play.
    """

    def __init__(self) -> None:
        from array import array

        self._ends = array("q")
        self._lengths = array("q")
        self._identities = array("q")
        self._minute = bytearray()

    def add(self, play: Play) -> None:
        event = play.event
        self._ends.append(int(event.played_at.timestamp() * 1000))
        self._lengths.append(event.ms_played or event.duration_ms or 0)
        identity = (event.item_type, event.artist_name.casefold(), event.track_name.casefold())
        self._identities.append(hash(identity))
        self._minute.append(play.minute_precision)

    def rejected(self) -> dict[int, str]:
        """The positions (in the order added) of impossible plays, with what they overlap."""
        order = sorted(range(len(self._ends)), key=self._ends.__getitem__)
        found: dict[int, str] = {}
        previous: int | None = None
        for position in order:
            end, start = self._ends[position], self._ends[position] - self._lengths[position]
            if previous is not None:
                busy_until = self._ends[previous]
                minute = self._minute[position] or self._minute[previous]
                slack = MINUTE_SLACK if minute else OVERLAP_SLACK
                if start < busy_until - slack.total_seconds() * 1000:
                    same = self._identities[position] == self._identities[previous]
                    if not (same and end - busy_until <= MINUTE_SLACK.total_seconds() * 1000):
                        ended = datetime.fromtimestamp(busy_until / 1000, UTC)
                        found[position] = (
                            f"starts {(busy_until - start) / 1000:,.0f} s before the play "
                            f"before it ended ({ended:%Y-%m-%d %H:%M:%S}Z)"
                        )
                    continue
            previous = position
        return found

    def span(self, rejected: dict[int, str] | set[int]) -> tuple[datetime | None, datetime | None]:
        """The ends of the first and last play, leaving out ``rejected`` positions."""
        ends = [end for position, end in enumerate(self._ends) if position not in rejected]
        if not ends:
            return None, None
        return (
            datetime.fromtimestamp(min(ends) / 1000, UTC),
            datetime.fromtimestamp(max(ends) / 1000, UTC),
        )
