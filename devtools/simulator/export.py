"""Spotify data exports written from a simulated user's ground truth, for import tests and benches.

Two formats, as Spotify delivers them:

- :func:`write_extended_zip`: the Extended Streaming History zip, ``Spotify Extended Streaming
  History/Streaming_History_Audio_<years>_<n>.json`` (plus the video file and read-me Spotify
  includes), every play of the user to the second, with podcasts and local files.
- :func:`write_legacy_files`: the older account-data ``StreamingHistory_music_<n>.json`` and
  ``StreamingHistory_podcast_<n>.json``, to the minute and without ids.

Like the real fixture, the rows include plays under 30 s, podcast episodes, and (Extended only)
rows auxcord must not count: private-session plays (``incognito_mode``) and rows without any
metadata. Those extra rows are added beside the ground truth, never taken from it, so the
plays an import should store are exactly the ground truth's plays of 30 s or more.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

from devtools.simulator.model import World

EXTENDED_DIR = "Spotify Extended Streaming History"
INCOGNITO_EVERY = 41
"""Every 41st play is followed by a private-session play of the same track."""
NO_METADATA_EVERY = 97
"""Every 97th play is followed by a row whose track metadata is all null."""

_NULL_FIELDS = (
    "master_metadata_track_name",
    "master_metadata_album_artist_name",
    "master_metadata_album_album_name",
    "spotify_track_uri",
    "episode_name",
    "episode_show_name",
    "spotify_episode_uri",
    "audiobook_title",
    "audiobook_uri",
    "audiobook_chapter_uri",
    "audiobook_chapter_title",
)


@dataclass(frozen=True)
class ExportSummary:
    """What an export holds, beside the ground truth it came from."""

    paths: list[Path]
    plays: int
    """Ground-truth plays written (every length)."""
    rows: int
    """Rows written, extra rows included."""
    incognito: int
    no_metadata: int


def _seconds(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _minute(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%d %H:%M")


def extended_row(play: dict[str, Any], country: str) -> dict[str, Any]:
    """One ground-truth play as an Extended Streaming History row (fields in Spotify's order)."""
    row: dict[str, Any] = {
        "ts": _seconds(play["played_at_ms"]),
        "platform": "android",
        "ms_played": play["ms_played"],
        "conn_country": country,
        **dict.fromkeys(_NULL_FIELDS),
    }
    if play["item_type"] == "episode":
        row["episode_name"] = play["track_name"]
        row["episode_show_name"] = play["artist_name"]
        row["spotify_episode_uri"] = f"spotify:episode:{play['track_id']}"
    else:
        row["master_metadata_track_name"] = play["track_name"]
        row["master_metadata_album_artist_name"] = play["artist_name"]
        row["master_metadata_album_album_name"] = play["album_name"]
        if play["is_local"]:
            parts = (play["artist_name"], play["album_name"], play["track_name"])
            seconds = play["duration_ms"] // 1000
            row["spotify_track_uri"] = (
                "spotify:local:" + ":".join(quote_plus(part) for part in parts) + f":{seconds}"
            )
        else:
            row["spotify_track_uri"] = f"spotify:track:{play['track_id']}"
    finished = play["ms_played"] >= play["duration_ms"]
    row.update(
        {
            "reason_start": "trackdone",
            "reason_end": "trackdone" if finished else "fwdbtn",
            "shuffle": False,
            "skipped": not finished,
            "offline": False,
            "offline_timestamp": play["started_at_ms"] // 1000,
            "incognito_mode": False,
        }
    )
    return row


def extended_rows(
    world: World, user_id: str, until: datetime, since: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """Every row of the user's Extended export (plays ending in ``[since, until]``), in time
    order, extra rows included."""
    country = world.by_id[user_id].country
    plays = world.ground_truth(int(until.timestamp() * 1000), {user_id})
    if since is not None:
        plays = [play for play in plays if play["played_at_ms"] >= since.timestamp() * 1000]
    for number, play in enumerate(plays, start=1):
        row = extended_row(play, country)
        yield row
        if number % INCOGNITO_EVERY == 0 and play["item_type"] == "track":
            private = dict(row, incognito_mode=True, ms_played=max(30_000, play["ms_played"]))
            private["ts"] = _seconds(play["played_at_ms"] + 1_000)
            yield private
        if number % NO_METADATA_EVERY == 0:
            empty = dict(row, **dict.fromkeys(_NULL_FIELDS), ms_played=45_000)
            empty["ts"] = _seconds(play["played_at_ms"] + 2_000)
            yield empty


def write_extended_zip(
    world: World,
    user_id: str,
    until: datetime,
    path: Path,
    *,
    since: datetime | None = None,
    rows_per_file: int = 10_000,
) -> ExportSummary:
    """Write the user's Extended Streaming History zip to ``path``, split like Spotify's."""
    rows = plays = incognito = no_metadata = 0
    chunk: list[dict[str, Any]] = []
    number = 0
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:

        def flush() -> None:
            nonlocal number
            first, last = chunk[0]["ts"][:4], chunk[-1]["ts"][:4]
            name = f"{EXTENDED_DIR}/Streaming_History_Audio_{first}-{last}_{number}.json"
            archive.writestr(name, json.dumps(chunk, indent=2, ensure_ascii=False))
            chunk.clear()
            number += 1

        for row in extended_rows(world, user_id, until, since):
            rows += 1
            if row["incognito_mode"]:
                incognito += 1
            elif row["master_metadata_track_name"] is None and row["episode_name"] is None:
                no_metadata += 1
            else:
                plays += 1
            chunk.append(row)
            if len(chunk) >= rows_per_file:
                flush()
        if chunk:
            flush()
        archive.writestr(f"{EXTENDED_DIR}/Streaming_History_Video_2020-2026.json", "[]")
        archive.writestr(f"{EXTENDED_DIR}/ReadMeFirst_ExtendedStreamingHistory.pdf", b"%PDF-1.4")
    return ExportSummary([path], plays, rows, incognito, no_metadata)


def write_legacy_files(
    world: World, user_id: str, until: datetime, directory: Path, *, rows_per_file: int = 10_000
) -> ExportSummary:
    """Write the user's account-data ``StreamingHistory_{music,podcast}_<n>.json`` files."""
    directory.mkdir(parents=True, exist_ok=True)
    music: list[dict[str, Any]] = []
    podcasts: list[dict[str, Any]] = []
    for play in world.ground_truth(int(until.timestamp() * 1000), {user_id}):
        end = _minute(play["played_at_ms"])
        if play["item_type"] == "episode":
            podcasts.append(
                {
                    "endTime": end,
                    "podcastName": play["artist_name"],
                    "episodeName": play["track_name"],
                    "msPlayed": play["ms_played"],
                }
            )
        else:
            music.append(
                {
                    "endTime": end,
                    "artistName": play["artist_name"],
                    "trackName": play["track_name"],
                    "msPlayed": play["ms_played"],
                }
            )
    paths = []
    for kind, rows in (("music", music), ("podcast", podcasts)):
        for number, start in enumerate(range(0, len(rows), rows_per_file)):
            path = directory / f"StreamingHistory_{kind}_{number}.json"
            path.write_text(
                json.dumps(rows[start : start + rows_per_file], indent=2, ensure_ascii=False),
                encoding="utf-8",
            )
            paths.append(path)
    total = len(music) + len(podcasts)
    return ExportSummary(paths, total, total, 0, 0)
