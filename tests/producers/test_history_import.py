"""History import against Tansu, SecantusDB, fake-gcs-server and Spark: generated exports in
both formats match the simulator's ground truth, overlap with polling stores nothing twice,
an interrupted import resumes, and hostile files store nothing."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest

from auxcord.clients import ensure_bucket, mongo_database
from auxcord.events import ListenEvent, listen_event_id
from auxcord.gaps import GapCause, GapStore
from auxcord.names import Collection, Topic
from auxcord.settings import Settings
from devtools.simulator.export import write_extended_zip, write_legacy_files
from devtools.simulator.model import World, WorldConfig
from producers.history import ImportRefused, Limits, import_history, import_sources
from producers.history import importer as importer_module
from producers.history.formats import OVERLAP_REASON
from producers.history.pipeline import store_and_aggregate
from producers.history.state import ImportStateStore
from streaming.job import start_stream
from tests.producers.test_history_parse import extended
from tests.producers.test_pollers import SPEED, drain, poll_world_at
from tests.producers.test_pollers import expected_ids as listed_ids
from tests.streaming.helpers import raw_parquet_ids, stored_listen_ids

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

_numbers = itertools.count()
# Virtual "now" of the simulated history: in the past, so no play is from the future.
UNTIL = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=2)


@pytest.fixture
def import_settings(stream_settings: Settings) -> Settings:
    """The test's own topics, bucket, checkpoint and database."""
    return stream_settings


@pytest.fixture
def world() -> World:
    return World(WorldConfig(users=2, seed=9, start=UNTIL, history_days=30))


def add_user(settings: Settings, world: World, index: int = 0) -> str:
    user = world.users[index]
    mongo_database(settings)[Collection.USERS].insert_one(
        {"_id": user.user_id, "display_name": user.display_name, "timezone": user.timezone}
    )
    return user.user_id


def truth(world: World, user_id: str, until: datetime = UNTIL) -> list[dict[str, Any]]:
    return world.ground_truth(int(until.timestamp() * 1000), {user_id})


def expected_ids(rows: list[dict[str, Any]]) -> set[str]:
    """The plays an export of ``rows`` should store: every play of 30 s or more."""
    return listed_ids([{**r, "listed": r["ms_played"] >= 30_000} for r in rows])


def published(settings: Settings) -> list[ListenEvent]:
    return [ListenEvent.from_json(value) for value in drain(settings, Topic.LISTENS)]


def test_extended_zip_matches_the_ground_truth_end_to_end(
    spark: SparkSession, import_settings: Settings, world: World, tmp_path: Path
) -> None:
    user_id = add_user(import_settings, world)
    summary = write_extended_zip(world, user_id, UNTIL, tmp_path / "export.zip", rows_per_file=300)
    rows = truth(world, user_id)
    expected = expected_ids(rows)
    progress: list[tuple[int, int | None]] = []
    report = import_history(
        import_settings,
        tmp_path / "export.zip",
        user_id,
        on_progress=lambda done, total: progress.append((done, total)),
    )

    assert report.rows == summary.rows
    assert report.accepted == report.published == len(expected)
    assert report.podcasts == sum(
        1 for r in rows if r["item_type"] == "episode" and r["ms_played"] >= 30_000
    )
    assert report.skipped == {
        "under 30 s": sum(1 for r in rows if r["ms_played"] < 30_000),
        "incognito (private session)": summary.incognito,
        "no track or episode metadata": summary.no_metadata,
    }
    assert not report.rejected and report.duplicates == report.already_stored == 0
    assert progress[-1] == (report.accepted, report.accepted)
    on_kafka = published(import_settings)
    assert len(on_kafka) == len(expected) and {e.event_id for e in on_kafka} == expected
    assert {e.source for e in on_kafka} == {"import"}

    # A gap the export covers, and one after it, which it cannot repair.
    assert report.first_play is not None and report.last_play is not None
    gaps = GapStore(mongo_database(import_settings))
    inside = report.first_play + (report.last_play - report.first_play) / 2
    covered = gaps.record(
        user_id, inside, inside + timedelta(hours=3), GapCause.QUOTA_LOCKOUT, UNTIL
    )
    after = gaps.record(
        user_id, UNTIL + timedelta(hours=1), UNTIL + timedelta(hours=2), GapCause.POLLER_DOWN, UNTIL
    )
    outcome = store_and_aggregate(import_settings, report, spark=spark)
    assert outcome.repaired_gaps == 1
    assert [gap.gap_id for gap in gaps.open_for_user(user_id)] == [after.gap_id] != [covered.gap_id]
    assert set(outcome.seconds) == {"stored", "aggregated"}
    result = outcome.aggregated
    stored = stored_listen_ids(import_settings)
    assert set(stored) == expected
    assert sorted(raw_parquet_ids(import_settings)) == sorted(stored)
    database = mongo_database(import_settings)
    episodes = database[Collection.LISTENS].count_documents({"item_type": "episode"})
    assert episodes == report.podcasts
    # Exactly the user's local days with music were aggregated, and their counts are right.
    zone = ZoneInfo(world.users[0].timezone)
    music = [r for r in rows if r["ms_played"] >= 30_000 and r["item_type"] == "track"]
    days = {datetime.fromisoformat(r["played_at"]).astimezone(zone).date() for r in music}
    assert result is not None and (result.first, result.last) == (min(days), max(days))
    daily = {
        d["day"]: d["plays"] for d in database[Collection.USER_DAILY].find({"user_id": user_id})
    }
    assert set(daily) == {day.isoformat() for day in days}
    assert sum(daily.values()) == len(music)

    again = import_history(import_settings, tmp_path / "export.zip", user_id)
    assert again.resumed == again.accepted and again.published == 0
    assert again.days == report.days
    assert len(drain(import_settings, Topic.LISTENS)) == len(expected)


def legacy_expected(rows: list[dict[str, Any]]) -> set[str]:
    """The documented legacy rule with nothing to match: names as the key, the minute."""
    ids = set()
    for r in rows:
        if r["ms_played"] < 30_000:
            continue
        end = datetime.fromisoformat(r["played_at"].replace("Z", "+00:00"))
        minute = end.replace(second=0, microsecond=0)
        key = f"local:{r['artist_name'].casefold()}|{r['track_name'].casefold()}"
        ids.add(listen_event_id(r["user_id"], key, minute))
    return ids


def test_legacy_files_match_the_ground_truth(
    import_settings: Settings, world: World, tmp_path: Path
) -> None:
    user_id = add_user(import_settings, world)
    write_legacy_files(world, user_id, UNTIL, tmp_path / "MyData", rows_per_file=400)
    rows = truth(world, user_id)
    report = import_history(import_settings, tmp_path / "MyData", user_id)
    expected = legacy_expected(rows)
    accepted = sum(1 for r in rows if r["ms_played"] >= 30_000)
    assert report.accepted == report.minute_precision == accepted
    assert report.matched_by_minute == 0
    assert report.published == len(expected)
    assert report.duplicates == accepted - len(expected)
    on_kafka = published(import_settings)
    assert {e.event_id for e in on_kafka} == expected and len(on_kafka) == len(expected)


def test_importing_after_polling_stores_every_play_once(
    spark: SparkSession, test_settings: Settings, tmp_path: Path
) -> None:
    with poll_world_at(test_settings, SPEED, poller_id="import-poller") as polled:
        settings = polled.settings.model_copy(
            update={
                "gcs_bucket": f"auxcord-import-poll-{os.getpid()}-{next(_numbers)}",
                "stream_checkpoint_dir": str(tmp_path / "checkpoint"),
            }
        )
        ensure_bucket(settings)
        polled.sim.control("clock", {"speed": 0})
        once = subprocess.run(
            [sys.executable, "-c", "from cli.main import main; main()", "poll", "--once"],
            env={**os.environ, **settings.as_environment()},
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert once.returncode == 0, once.stderr.decode()[-2000:]
        user_id = polled.sim.user_ids[0]
        now = datetime.fromtimestamp(polled.sim.clock.now_ms() / 1000, UTC)
        world = polled.sim.world
        rows = world.ground_truth(polled.sim.clock.now_ms(), {user_id})
    # Store what the pollers published, so the import finds it in MongoDB.
    query, _ = start_stream(spark, settings, available_now=True)
    query.awaitTermination()
    from_polling = {
        doc["_id"]
        for doc in mongo_database(settings)[Collection.LISTENS].find({"user_id": user_id})
    }
    assert from_polling, "the poller stored plays of this user"

    write_extended_zip(world, user_id, now, tmp_path / "export.zip")
    report = import_history(settings, tmp_path / "export.zip", user_id)
    expected = expected_ids(rows)
    assert from_polling <= expected, "polled plays carry the same ids as the export's"
    assert report.already_stored == len(from_polling)
    assert report.published == len(expected) - len(from_polling)
    store_and_aggregate(settings, report, spark=spark)
    stored = [
        doc["_id"]
        for doc in mongo_database(settings)[Collection.LISTENS].find({"user_id": user_id})
    ]
    assert set(stored) == expected, "every play once: no second copy at another precision"
    everyone = stored_listen_ids(settings)
    assert sorted(raw_parquet_ids(settings)) == sorted(everyone)

    # The legacy export of the same history now resolves, row by row, to the stored plays.
    write_legacy_files(world, user_id, now, tmp_path / "MyData")
    legacy = import_history(settings, tmp_path / "MyData", user_id)
    assert legacy.published == 0
    assert legacy.already_stored + legacy.duplicates == legacy.accepted
    assert legacy.matched_by_minute == legacy.accepted


def test_an_interrupted_import_resumes_without_duplicates(
    import_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(WorldConfig(users=1, seed=4, start=UNTIL, history_days=120))
    user_id = add_user(import_settings, world)
    write_extended_zip(world, user_id, UNTIL, tmp_path / "export.zip")
    expected = expected_ids(truth(world, user_id))
    monkeypatch.setattr(importer_module, "PUBLISH_CHUNK", 200)

    class Killed(Exception):
        pass

    def die_mid_publish(done: int, total: int | None) -> None:
        if total is not None and 1_000 <= done < total:
            raise Killed  # as if killed right after a chunk was acknowledged and saved

    with pytest.raises(Killed):
        import_history(
            import_settings, tmp_path / "export.zip", user_id, on_progress=die_mid_publish
        )
    report = import_history(import_settings, tmp_path / "export.zip", user_id)
    assert 0 < report.resumed < report.accepted
    assert report.resumed + report.published == len(expected)
    on_kafka = published(import_settings)
    assert len(on_kafka) == len(expected) and {e.event_id for e in on_kafka} == expected
    state = ImportStateStore(mongo_database(import_settings)).get(report.import_id)
    assert state is not None and state["status"] == "published"
    assert state["cursor"] == report.accepted


def test_bad_rows_are_reported_and_only_good_rows_published(
    import_settings: Settings, world: World, tmp_path: Path
) -> None:
    user_id = add_user(import_settings, world)
    good = extended(incognito_mode=False)
    rows = [good] + [dict(good, ts="2199-01-01T00:00:00Z")] * 3 + [{"ts": "2023-02-25T11:20:37Z"}]
    path = tmp_path / "Streaming_History_Audio_2023_0.json"
    path.write_text(json.dumps(rows))
    report = import_history(import_settings, path, user_id)
    assert report.published == 1
    assert report.rejected == {"ts: in the future": 3, "ms_played: is required": 1}
    assert [s.row for s in report.samples] == [1, 2, 3, 4]
    assert report.samples[0].detail == "2199-01-01T00:00:00Z"
    assert len(drain(import_settings, Topic.LISTENS)) == 1


def hostile_files(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """Files that must be refused whole, with the words their message must contain."""
    import zipfile

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("Streaming_History_Audio_2023_0.json", b"[" + b" " * (30 << 20) + b"]")
    yield bomb, "zip bomb"
    nesting = tmp_path / "Streaming_History_Audio_2023_1.json"
    nesting.write_bytes(b"[" * (30 << 20))
    yield nesting, "nested more than"
    utf16 = tmp_path / "Streaming_History_Audio_2023_2.json"
    utf16.write_bytes(json.dumps([{"ts": "2023-01-01T00:00:00Z", "ms_played": 1}]).encode("utf-16"))
    yield utf16, "UTF-16"
    unknown = tmp_path / "Streaming_History_Audio_2023_3.json"
    unknown.write_text(json.dumps([{"played": "2023-01-01", "who": "me"}]))
    yield unknown, "unknown JSON"
    # A valid first half, then garbage: the good half must not be published either.
    half = tmp_path / "Streaming_History_Audio_2023_4.json"
    row = {
        "ts": "2023-01-01T00:00:00Z",
        "ms_played": 40_000,
        "master_metadata_track_name": "A",
        "master_metadata_album_artist_name": "B",
        "spotify_track_uri": "spotify:track:x",
    }
    half.write_text(json.dumps([row] * 1000)[:-1] + ', {"ts": "2023-01-01T00:00:01Z", ')
    yield half, "ends early"
    corrupt = tmp_path / "corrupt.zip"
    with zipfile.ZipFile(corrupt, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("Streaming_History_Audio_2023_0.json", json.dumps([row] * 1000))
    data = bytearray(corrupt.read_bytes())
    data[data.rindex(b"spotify:track:x")] ^= 0x20
    corrupt.write_bytes(bytes(data))
    yield corrupt, "corrupt"
    invalid = tmp_path / "Streaming_History_Audio_2023_5.json"
    invalid.write_text(json.dumps([dict(row, ts="2999-01-01T00:00:00Z")] * 20))
    yield invalid, "no valid play in 20 rows"


def test_hostile_files_are_refused_and_store_nothing(
    import_settings: Settings, world: World, tmp_path: Path
) -> None:
    user_id = add_user(import_settings, world)
    for path, words in hostile_files(tmp_path):
        with pytest.raises(ImportRefused) as refused:
            import_sources(import_settings, [path], user_id)
        assert words in str(refused.value), (path.name, str(refused.value))
    assert drain(import_settings, Topic.LISTENS) == []
    assert mongo_database(import_settings)[Collection.HISTORY_IMPORTS].count_documents({}) == 0


MEASURED_CLI = """
import resource, sys
from cli.main import main
try:
    main()
finally:
    print("maxrss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def test_the_cli_refuses_a_bomb_in_one_line_with_bounded_memory(
    import_settings: Settings, world: World, tmp_path: Path
) -> None:
    user_id = add_user(import_settings, world)
    # One record holding a 31 MB string: about the largest token the caps let through.
    path = tmp_path / "Streaming_History_Audio_2023_0.json"
    with path.open("wb") as handle:
        handle.write(b'[{"ts": "2023-01-01T00:00:00Z", "ms_played": 40000, "x": "')
        for _ in range(31):
            handle.write(b"a" * (1 << 20))
        handle.write(b'", "master_metadata_track_name": null}, 7]')

    def run_cli(target: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", MEASURED_CLI, "import", str(target), "--user", user_id],
            env={**os.environ, **import_settings.as_environment()},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    # The same command refusing a tiny file, in the same run: the process's own footprint.
    tiny = tmp_path / "Streaming_History_Audio_2023_9.json"
    tiny.write_text("[7]")
    baseline_mb = int(run_cli(tiny).stderr.rsplit("maxrss ", 1)[1]) / 1024
    result = run_cli(path)
    peak_mb = int(result.stderr.rsplit("maxrss ", 1)[1]) / 1024
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "error:" in result.stderr and "no valid play in 2 rows" in result.stderr
    assert "rejected: row is not a JSON object" in result.stdout  # the report came first
    # The parser holds one token whole, at about four times its size at the peak.
    assert peak_mb - baseline_mb < 4 * 32, f"peak RSS {peak_mb:.0f} MB, {baseline_mb:.0f} MB idle"
    assert drain(import_settings, Topic.LISTENS) == []


def test_an_export_of_another_account_is_refused(
    import_settings: Settings, world: World, tmp_path: Path
) -> None:
    user_id = add_user(import_settings, world)
    path = tmp_path / "Streaming_History_Audio_2023_0.json"
    path.write_text(json.dumps([extended(username=user_id), extended(username="someone-else")]))
    with pytest.raises(ImportRefused, match="belongs to the Spotify account 'someone-else'"):
        import_history(import_settings, path, user_id)
    assert drain(import_settings, Topic.LISTENS) == []
    path.write_text(json.dumps([extended(username=user_id)]))
    assert import_history(import_settings, path, user_id).published == 1


def test_impossible_overlaps_are_rejected_with_a_reason_and_not_published(
    import_settings: Settings, world: World, tmp_path: Path
) -> None:
    user_id = add_user(import_settings, world)
    real = [
        extended(ts="2023-03-01T10:03:00Z", ms_played=180_000, master_metadata_track_name="A"),
        extended(ts="2023-03-01T10:06:00Z", ms_played=180_000, master_metadata_track_name="B"),
    ]
    # Made up to top a leaderboard: a day of plays at once, and one of 20 hours.
    made_up = [
        extended(ts="2023-03-01T10:06:30Z", ms_played=60_000, master_metadata_track_name=f"T{n}")
        for n in range(200)
    ]
    made_up.append(
        extended(ts="2023-03-01T12:00:00Z", ms_played=20 * 3600_000, master_metadata_track_name="L")
    )
    path = tmp_path / "Streaming_History_Audio_2023_0.json"
    path.write_text(json.dumps(real + made_up))
    report = import_history(import_settings, path, user_id)
    assert report.rejected == {OVERLAP_REASON: len(made_up)}
    assert report.accepted == report.published == 2
    assert {e.track_name for e in published(import_settings)} == {"A", "B"}
    assert report.first_play == datetime(2023, 3, 1, 10, 3, tzinfo=UTC)
    assert report.last_play == datetime(2023, 3, 1, 10, 6, tzinfo=UTC)
    sample = report.samples[0]
    assert sample.reason == OVERLAP_REASON and "30 s before the play before it" in sample.detail


def test_an_import_caps_its_rows(import_settings: Settings, world: World, tmp_path: Path) -> None:
    user_id = add_user(import_settings, world)
    path = tmp_path / "Streaming_History_Audio_2023_0.json"
    rows = [extended(ts=f"2023-03-01T10:{n:02d}:00Z", ms_played=40_000) for n in range(11)]
    path.write_text(json.dumps(rows))
    with pytest.raises(ImportRefused, match="more than 10 rows"):
        import_sources(import_settings, [path], user_id, limits=Limits(max_rows=10))
    assert drain(import_settings, Topic.LISTENS) == []
