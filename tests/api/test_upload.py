"""A history export uploaded from one's profile: progress, the report, and the plays stored and
aggregated by the same pipeline as ``auxcord import``; nobody else can see the import."""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from api.imports import ImportJob
from auxcord.accounts import AccountStore
from auxcord.clients import mongo_database
from auxcord.names import Collection
from auxcord.settings import Settings
from auxcord.tokens import TokenCipher
from cli.webserver import serve_in_thread
from devtools.stack import free_port
from tests.api.world import csrf_of, session_cookie

FIXTURE = Path(__file__).resolve().parents[3] / "shared/fixtures/spotify-export"
EXPORT = FIXTURE / "Streaming_History_Audio_2023.json"


@pytest.fixture
def uploader(stream_settings: Settings) -> Iterator[tuple[str, Settings]]:
    database = mongo_database(stream_settings)
    accounts = AccountStore(database, TokenCipher(stream_settings.secret_key_value()))
    for user in ("uploader", "snoop"):
        accounts.link(
            user_id=user,
            display_name=user.title(),
            country="SE",
            timezone="Europe/Stockholm",
            client_id="auxcord-local",
            token_info={"access_token": "a", "refresh_token": "r", "expires_in": 3600, "scope": ""},
        )
    database[Collection.GROUPS].insert_one(
        {"_id": "up", "name": "Uploaders", "members": ["uploader", "snoop"], "owner": "uploader"}
    )
    with serve_in_thread(stream_settings, "127.0.0.1", free_port()) as base:
        yield base, stream_settings


def client_for(base: str, settings: Settings, user: str) -> httpx.Client:
    cookie = session_cookie(settings, {"user_id": user})
    return httpx.Client(base_url=base, cookies={"auxcord_session": cookie}, timeout=30)


def test_an_uploaded_export_is_reported_stored_and_aggregated(
    uploader: tuple[str, Settings],
) -> None:
    base, settings = uploader
    with client_for(base, settings, "uploader") as me, client_for(base, settings, "snoop") as snoop:
        profile = me.get("/groups/up/members/uploader")
        assert "Import your listening history" in profile.text
        assert "Import your listening history" not in snoop.get("/groups/up/members/uploader").text
        refused = me.post(
            "/imports",
            data={"csrf_token": csrf_of(profile.text)},
            files={"export": ("notes.txt", b"hello", "text/plain")},
        )
        assert refused.status_code == 303
        assert "Upload the export as Spotify sent it" in me.get("/").text

        with EXPORT.open("rb") as export:
            started = me.post(
                "/imports",
                data={"csrf_token": csrf_of(profile.text)},
                files={"export": (EXPORT.name, export, "application/json")},
            )
        assert started.status_code == 303
        page = started.headers["location"]
        job_id = page.rsplit("/", 1)[1]
        assert snoop.get(page).status_code == 404, "only the uploader sees the import"
        assert snoop.get(f"/api/v1/imports/{job_id}").status_code == 404
        deadline = time.monotonic() + 300
        while (status := me.get(f"/api/v1/imports/{job_id}").json())["stage"] not in (
            "done",
            "failed",
        ):
            assert time.monotonic() < deadline, status
            time.sleep(1)
        assert status["stage"] == "done", status["error"]
        assert "Done: your history is in." in me.get(page).text

    report = status["report"]
    assert report["accepted"] == 782, "the fixture's plays of 30 s or more (see its README)"
    assert report["skipped"], "short and incognito rows are reported as skipped"
    database = mongo_database(settings)
    stored = database[Collection.LISTENS].count_documents({"user_id": "uploader"})
    assert stored == 782, repr(status)[-3000:]
    zone = ZoneInfo("Europe/Stockholm")
    music_days = {
        listen["played_at"].astimezone(zone).date()
        for listen in database[Collection.LISTENS].find({"user_id": "uploader"})
        if listen.get("item_type", "track") == "track"
    }
    days = database[Collection.USER_DAILY].count_documents({"user_id": "uploader"})
    assert days == len(music_days) > 30, "every local day with music was aggregated"
    group_days = database[Collection.GROUP_DAILY].count_documents({"group_id": "up"})
    assert group_days == days, "the uploader's groups see the history too"


def test_imports_are_queued_one_per_user_and_a_few_at_once(tmp_path: Path) -> None:
    from api.imports import ImportJobs, UploadRefused
    from auxcord.settings import load_settings

    # No worker may run: every import stays queued, so the limits are all that acts.
    jobs = ImportJobs(load_settings(data_dir=tmp_path), running=0, queued=2)
    first = jobs.start("ana", "my_spotify_data.zip", io.BytesIO(b"PK"))
    assert first.view()["stage"] == "queued" and first.path.exists()
    with pytest.raises(UploadRefused, match="previous import is still running"):
        jobs.start("ana", "my_spotify_data.zip", io.BytesIO(b"PK"))
    jobs.start("ben", "my_spotify_data.zip", io.BytesIO(b"PK"))
    with pytest.raises(UploadRefused, match="busy importing other people"):
        jobs.start("cy", "my_spotify_data.zip", io.BytesIO(b"PK"))
    assert len(list((tmp_path / "uploads").iterdir())) == 2, "a refused upload is not saved"
    first.stage = "done"
    jobs.start("cy", "my_spotify_data.zip", io.BytesIO(b"PK"))  # a place came free
    with pytest.raises(UploadRefused, match="busy"):
        jobs.start("ana", "my_spotify_data.zip", io.BytesIO(b"PK"))
    for job in jobs.jobs.values():
        job.stage = "failed"
    jobs.start("ana", "my_spotify_data.zip", io.BytesIO(b"PK"))  # her next one, once done


def wait_until_finished(job: ImportJob) -> dict[str, Any]:
    deadline = time.monotonic() + 300
    while job.stage not in ("done", "failed"):
        assert time.monotonic() < deadline, job.view()
        time.sleep(0.2)
    return job.view()


def test_a_failed_storing_step_is_logged_not_shown(
    uploader: tuple[str, Settings], caplog: pytest.LogCaptureFixture
) -> None:
    from api.imports import STORING_FAILED, ImportJobs

    _, settings = uploader
    secret = "mongodb://10.1.2.3:27017 in /srv/auxcord/private/path"
    # The real `auxcord import` reads and publishes (its JSON lines reach the job), then the
    # storing step fails with words that must not reach the page.
    publish_then_fail = (
        f"import subprocess, sys; subprocess.run([sys.executable, '-c', "
        f"'from cli.main import main; main()', 'import', *sys.argv[1:], '--no-aggregate'], "
        f"check=True); sys.exit({secret!r})"
    )
    jobs = ImportJobs(settings, store_command=(sys.executable, "-c", publish_then_fail))
    with EXPORT.open("rb") as export:
        job = jobs.start("uploader", EXPORT.name, export)
    view = wait_until_finished(job)
    assert view["stage"] == "failed" and view["error"] == STORING_FAILED
    assert "10.1.2.3" not in repr(view) and "/srv/auxcord" not in repr(view)
    assert view["report"]["accepted"] == 782, "the report of what was read is still shown"
    assert any(secret in record.getMessage() for record in caplog.records), "logged instead"
    assert not job.path.exists(), "the upload is removed"


def test_a_refused_export_shows_the_childs_reason(uploader: tuple[str, Settings]) -> None:
    from api.imports import ImportJobs

    _, settings = uploader
    jobs = ImportJobs(settings)
    job = jobs.start("uploader", "my_spotify_data.zip", io.BytesIO(b"not a zip at all"))
    view = wait_until_finished(job)
    assert view["stage"] == "failed"
    assert view["error"] and "zip" in view["error"].lower(), view["error"]


# A stand-in for `auxcord import --progress-json`: an upload reading "hang" hangs (after writing
# its pid next to the file), any other reports one accepted play and succeeds.
FAKE_CHILD = """
import json, os, sys, time
path = sys.argv[1]
if open(path).read() == "hang":
    open(path + ".pid", "w").write(str(os.getpid()))
    time.sleep(600)
print(json.dumps({"stage": "publishing", "done": 1, "total": 1}), flush=True)
print(json.dumps({"report": {"accepted": 1}}), flush=True)
"""


def test_a_hanging_import_is_killed_and_the_next_one_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from api.imports import STORING_FAILED, ImportJobs
    from auxcord.settings import load_settings

    jobs = ImportJobs(
        load_settings(data_dir=tmp_path),
        running=1,
        store_command=(sys.executable, "-c", FAKE_CHILD),
        timeout=1,
    )
    hung = jobs.start("ana", "my_spotify_data.zip", io.BytesIO(b"hang"))
    after = jobs.start("ben", "my_spotify_data.zip", io.BytesIO(b"PK"))
    pid_file = Path(f"{hung.path}.pid")
    assert wait_until_finished(hung)["error"] == STORING_FAILED
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)  # the child is gone, not left sleeping
    assert any("killed after 1 s" in record.getMessage() for record in caplog.records)
    view = wait_until_finished(after)
    assert view["stage"] == "done", "the single worker was freed for the next upload"
    assert view["report"] == {"accepted": 1} and (view["done"], view["total"]) == (1, 1)


def test_finished_imports_are_forgotten_after_a_while(tmp_path: Path) -> None:
    from api.imports import FINISHED_KEPT, ImportJobs
    from auxcord.settings import load_settings

    jobs = ImportJobs(load_settings(data_dir=tmp_path), running=0)
    old = jobs.start("ana", "my_spotify_data.zip", io.BytesIO(b"PK"))
    old.finish("done")
    assert old.finished_at is not None
    old.finished_at -= FINISHED_KEPT + timedelta(minutes=1)
    recent = jobs.start("ben", "my_spotify_data.zip", io.BytesIO(b"PK"))
    recent.finish("failed", "refused")
    jobs.start("cy", "my_spotify_data.zip", io.BytesIO(b"PK"))
    assert jobs.get(old.job_id, "ana") is None, "finished over an hour ago: dropped"
    assert jobs.get(recent.job_id, "ben") is recent, "finished just now: still shown"
