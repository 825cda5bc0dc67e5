"""Reading and parsing exports, without any server: the real fixture, the rules, hostile files."""

from __future__ import annotations

import io
import json
import zipfile
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from auxcord.events import ListenEvent
from producers.history.formats import (
    MinuteIndex,
    Overlaps,
    Play,
    Reject,
    Skip,
    detect_format,
    parse_record,
)
from producers.history.reader import Limits, Sources, iter_records
from producers.history.report import ImportRefused

FIXTURE = Path(__file__).parents[2] / "../shared/fixtures/spotify-export"
REAL_EXPORT = FIXTURE.resolve() / "Streaming_History_Audio_2023.json"
NOW = datetime.now(UTC)
FUTURE = "Reject:ts: in the future"
TOO_EARLY = "Reject:ts: before 2008, when Spotify started"
NO_ARTIST = "master_metadata_album_artist_name: missing for a track"
BAD_URI = "spotify_track_uri: not a spotify:track: URI"


def outcomes(source: Path | io.BytesIO, limits: Limits | None = None) -> list[Any]:
    results = []
    with Sources(limits or Limits()) as sources:
        sources.add(source)
        for file in sources.ordered():
            fmt = None
            for record, _ in iter_records(file, sources.limits):
                fmt = fmt or detect_format(record)
                assert fmt is not None
                results.append(parse_record(fmt, "u1", record, NOW))
    return results


def kinds(results: list[Any]) -> Counter[str]:
    return Counter(
        f"play:{r.event.item_type}" if isinstance(r, Play) else f"{type(r).__name__}:{r.reason}"
        for r in results
    )


def test_the_real_export_gives_its_documented_counts() -> None:
    results = outcomes(REAL_EXPORT)
    raw = json.loads(REAL_EXPORT.read_text())
    assert len(results) == len(raw) == 1470
    counts = kinds(results)
    # The fixture's README: 782 rows of 30 s or more, 13 podcast rows (5 of them 30 s+).
    assert counts["play:track"] + counts["play:episode"] == 782
    assert counts["play:episode"] == 5
    assert counts["Skip:under 30 s"] == 1470 - 782
    plays = [r.event for r in results if isinstance(r, Play)]
    first = next(r for r in raw if r["ms_played"] >= 30_000)
    assert plays[0].played_at == datetime.fromisoformat(first["ts"].replace("Z", "+00:00"))
    assert plays[0].track_id == first["spotify_track_uri"].removeprefix("spotify:track:")
    assert plays[0].source == "import" and plays[0].ms_played == first["ms_played"]
    episode = next(e for e in plays if e.item_type == "episode")
    assert episode.artist_name == "Mythical Monsters "  # the show, as Spotify spells it


def extended(**fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "ts": "2023-02-25T11:20:37Z",
        "ms_played": 61_839,
        "master_metadata_track_name": "Forever",
        "master_metadata_album_artist_name": "Labrinth",
        "master_metadata_album_album_name": "Euphoria",
        "spotify_track_uri": "spotify:track:6potEImiklXkwD9qFzpu15",
        "episode_name": None,
        "episode_show_name": None,
        "spotify_episode_uri": None,
        "incognito_mode": False,
    }
    row.update(fields)
    return row


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, "play:track"),
        ({"ms_played": 29_999}, "Skip:under 30 s"),
        ({"ms_played": 30_000}, "play:track"),
        ({"incognito_mode": True}, "Skip:incognito (private session)"),
        (
            {"master_metadata_track_name": None, "spotify_track_uri": None},
            "Skip:no track or episode metadata",
        ),
        (
            {
                "master_metadata_track_name": None,
                "spotify_track_uri": None,
                "episode_name": "Ep 1",
                "episode_show_name": "Show",
                "spotify_episode_uri": "spotify:episode:abc",
            },
            "play:episode",
        ),
        ({"ts": "2099-01-01T00:00:00Z"}, FUTURE),
        ({"ts": (NOW + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}, FUTURE),
        ({"ts": "1970-01-01T00:00:00Z"}, TOO_EARLY),
        ({"ts": "2007-12-31T23:59:59Z"}, TOO_EARLY),
        ({"ts": "2008-01-01T00:00:00Z"}, "play:track"),
        ({"ts": "yesterday"}, "Reject:ts: not a UTC time like 2023-02-25T11:20:37Z"),
        ({"ts": "2023-02-30T11:20:37Z"}, "Reject:ts: not a valid date"),
        ({"ms_played": "61839"}, "Reject:ms_played: not a whole number of milliseconds"),
        ({"ms_played": -5}, "Reject:ms_played: outside 0 to 24 hours"),
        ({"master_metadata_album_artist_name": None}, f"Reject:{NO_ARTIST}"),
        ({"spotify_track_uri": "https://example.com"}, f"Reject:{BAD_URI}"),
        ({"master_metadata_track_name": "x" * 2_000}, "Reject:invalid track_name"),
    ],
)
def test_extended_rows_follow_the_rules(fields: dict[str, Any], expected: str) -> None:
    assert kinds([parse_record("extended", "u1", extended(**fields), NOW)]) == {expected: 1}


def test_a_missing_field_is_a_reason_not_a_crash() -> None:
    row = extended()
    del row["ms_played"]
    assert parse_record("extended", "u1", row, NOW) == Reject("ms_played: is required")


def test_local_files_get_the_pollers_name_key() -> None:
    row = extended(spotify_track_uri="spotify:local:Me:Local+Files:Demo:181")
    result = parse_record("extended", "u1", row, NOW)
    assert isinstance(result, Play)
    polled = ListenEvent(
        user_id="u1",
        track_id=None,
        track_name="Forever",
        artist_name="Labrinth",
        duration_ms=200_000,
        played_at=datetime(2023, 2, 25, 11, 20, 37, 640_000, tzinfo=UTC),
        source="poll",
        is_local=True,
    )
    assert result.event.is_local and result.event.event_id == polled.event_id


def test_seconds_in_the_export_and_milliseconds_from_polling_give_one_event_id() -> None:
    """The precision rule: ``ts`` is the end of the play truncated to the second, and event
    ids count whole seconds, so any millisecond of that second is the same play."""
    result = parse_record("extended", "u1", extended(), NOW)
    assert isinstance(result, Play)
    for ms in (0, 1, 999):
        polled = ListenEvent(
            user_id="u1",
            track_id="6potEImiklXkwD9qFzpu15",
            track_name="Forever",
            artist_name="Labrinth",
            duration_ms=61_839,
            played_at=datetime(2023, 2, 25, 11, 20, 37, ms * 1000, tzinfo=UTC),
            source="poll",
        )
        assert polled.event_id == result.event.event_id
    next_second = polled.model_copy(update={"event_id": ""}).model_validate(
        {
            **polled.model_dump(),
            "event_id": "",
            "played_at": polled.played_at + timedelta(seconds=1),
        }
    )
    assert next_second.event_id != result.event.event_id


def legacy(end: str, artist: str = "Labrinth", track: str = "Forever", ms: int = 60_000) -> Any:
    return parse_record(
        "legacy",
        "u1",
        {"endTime": end, "artistName": artist, "trackName": track, "msPlayed": ms},
        NOW,
    )


def test_legacy_rows_resolve_to_a_known_play_in_their_minute() -> None:
    index = MinuteIndex()
    known = datetime(2023, 1, 1, 12, 34, 56, 789_000, tzinfo=UTC)
    index.add("track", "Labrinth", "Forever", "trackid1", known)
    first, second = legacy("2023-01-01 12:34"), legacy("2023-01-01 12:34", artist="LABRINTH")
    assert isinstance(first, Play) and first.minute_precision
    resolved = index.resolve(first.event)
    assert resolved.track_id == "trackid1" and resolved.played_at == known
    # The known play is claimed once: a second legacy row in that minute stays name-keyed.
    assert isinstance(second, Play)
    unresolved = index.resolve(second.event)
    assert unresolved.track_id is None
    assert unresolved.played_at == datetime(2023, 1, 1, 12, 34, tzinfo=UTC)
    assert unresolved.track_key == "local:labrinth|forever"
    # The next minute, or another track, does not match.
    other = legacy("2023-01-01 12:35")
    assert isinstance(other, Play) and index.resolve(other.event) is other.event


def test_legacy_rows_follow_the_rules() -> None:
    assert legacy("2023-01-01 12:34", ms=10_000) == Skip("under 30 s")
    unknown = legacy("2023-01-01 12:34", artist="Unknown Artist", track="Unknown Track")
    assert unknown == Skip("no track or episode metadata")
    assert isinstance(legacy("2023-01-01T12:34:00Z"), Reject)
    podcast = parse_record(
        "legacy",
        "u1",
        {
            "endTime": "2023-01-01 12:34",
            "podcastName": "Show",
            "episodeName": "E1",
            "msPlayed": 31_000,
        },
        NOW,
    )
    assert isinstance(podcast, Play) and podcast.event.item_type == "episode"


def refusal(source: Path | io.BytesIO, limits: Limits | None = None) -> str:
    with pytest.raises(ImportRefused) as caught:
        outcomes(source, limits)
    return str(caught.value)


def test_hostile_and_foreign_files_are_refused_clearly(tmp_path: Path) -> None:
    good = json.dumps([extended()]).encode()
    assert "UTF-16" in refusal(io.BytesIO(json.dumps([extended()]).encode("utf-16")))
    latin = json.dumps([extended(master_metadata_track_name="Café")], ensure_ascii=False)
    assert "not UTF-8" in refusal(io.BytesIO(latin.encode("latin-1")))
    assert "nested more than 8 levels" in refusal(io.BytesIO(b"[" * 5_000_000))
    assert "unknown JSON: an object" in refusal(io.BytesIO(b'{"ts": 1}'))
    assert "ends early" in refusal(io.BytesIO(good[:-10]))
    assert "empty file" in refusal(io.BytesIO(b""))
    truncated = tmp_path / "export.zip"
    with zipfile.ZipFile(truncated, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("Streaming_History_Audio_2023_0.json", good * 1)
    truncated.write_bytes(truncated.read_bytes()[:-30])
    assert "not a readable zip" in refusal(truncated)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("Streaming_History_Audio_2023_0.json", b"[" + b" " * (30 << 20) + b"]")
    assert "zip bomb" in refusal(bomb)
    huge = tmp_path / "Streaming_History_Audio_2023_1.json"
    with huge.open("wb") as handle:
        handle.truncate(300 << 20)  # sparse: no disk used, no time spent
    assert "over the 33,554,432-byte limit" in refusal(huge)
    nothing = tmp_path / "other.zip"
    with zipfile.ZipFile(nothing, "w") as archive:
        archive.writestr("Userdata.json", "{}")
    assert "no streaming history in the zip" in refusal(nothing)


def test_a_utf8_bom_and_nested_values_are_tolerated_row_by_row() -> None:
    rows = [extended(), extended(ts=[1, 2]), 5]
    results = outcomes(io.BytesIO(b"\xef\xbb\xbf" + json.dumps(rows).encode()))
    assert kinds(results) == {
        "play:track": 1,
        "Reject:row has nested values where an export has plain ones": 1,
        "Reject:row is not a JSON object": 1,
    }


def test_a_crc_error_inside_a_zip_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "export.zip"
    payload = json.dumps([extended()] * 50).encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("Streaming_History_Audio_2023_0.json", payload)
    data = bytearray(path.read_bytes())
    at = data.index(b"Forever")
    data[at] = ord("f")  # one byte changed: the CRC no longer matches
    path.write_bytes(bytes(data))
    assert "corrupt" in refusal(path)


def test_zip_bombs_of_many_small_members_are_refused(tmp_path: Path) -> None:
    # Members of 500 kB of blanks, each under the 1 MB the ratio check used to skip: in the
    # thousands they expand to gigabytes from a few MB.
    bomb = tmp_path / "small-bombs.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        member = b"[" + b" " * 500_000 + b"]"
        for n in range(50):
            archive.writestr(f"Streaming_History_Audio_2023_{n}.json", member)
    assert "zip bomb" in refusal(bomb)


def test_an_import_caps_its_files_and_bytes_together(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    payload = json.dumps([extended()]).encode()
    for n in range(6):
        (folder / f"Streaming_History_Audio_2023_{n}.json").write_bytes(payload)
    assert "more than 5 history files" in refusal(folder, Limits(max_members=5))
    assert outcomes(folder, Limits(max_members=6))
    archive_path = tmp_path / "export.zip"
    with zipfile.ZipFile(archive_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for n in range(6):
            archive.writestr(f"Streaming_History_Audio_2023_{n}.json", payload)
    assert "6 files in the zip, more than" in refusal(archive_path, Limits(max_members=5))
    total = 6 * len(payload)
    assert "limit of one import" in refusal(archive_path, Limits(max_total_bytes=total - 1))


def overlaps_of(*plays: tuple[str, int, str]) -> dict[int, str]:
    """:class:`Overlaps` of plays given as (end, ms_played, track name)."""
    found = Overlaps()
    for ts, ms, name in plays:
        outcome = parse_record(
            "extended", "u1", extended(ts=ts, ms_played=ms, master_metadata_track_name=name), NOW
        )
        assert isinstance(outcome, Play), outcome
        found.add(outcome)
    return found.rejected()


def test_plays_that_overlap_more_than_listening_allows_are_found() -> None:
    # One after the other, and with a 10 s crossfade: fine.
    assert (
        overlaps_of(
            ("2023-01-01T10:03:00Z", 180_000, "A"),
            ("2023-01-01T10:06:10Z", 200_000, "B"),
        )
        == {}
    )
    # A made-up play of five hours ending after real ones: refused, the real ones kept.
    found = overlaps_of(
        ("2023-01-01T10:03:00Z", 180_000, "A"),
        ("2023-01-01T12:00:00Z", 5 * 3600_000, "Made up"),
        ("2023-01-01T10:06:00Z", 180_000, "B"),
    )
    assert list(found) == [1] and "starts" in found[1]
    # A thousand plays at once: all but the first refused.
    assert (
        len(overlaps_of(*[("2023-01-01T10:03:00Z", 60_000, f"T{n}") for n in range(1000)])) == 999
    )
    # The same play twice is a duplicate (publishing counts it), not an overlap.
    assert (
        overlaps_of(("2023-01-01T10:03:00Z", 180_000, "A"), ("2023-01-01T10:03:00Z", 180_000, "A"))
        == {}
    )


def test_the_real_export_has_no_impossible_overlaps() -> None:
    found = Overlaps()
    for outcome in outcomes(REAL_EXPORT):
        if isinstance(outcome, Play):
            found.add(outcome)
    assert found.rejected() == {}
