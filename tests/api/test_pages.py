"""The dashboard's pages and JSON API show the stored aggregates to members."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta

from api.humanize import possessive, time_span
from api.templating import local_time
from auxcord.clients import mongo_client
from auxcord.gaps import GapCause, GapStore
from auxcord.names import Collection
from tests.analytics.test_daily import ZONES
from tests.api.world import GROUP_NAMES, IMG_NAME, SCRIPT_NAME, World, browser


def test_a_member_sees_every_page_of_their_group(world: World) -> None:
    with browser(world, "ana") as client:
        home = client.get("/")
        assert home.status_code == 200 and GROUP_NAMES["g1"] in home.text
        assert GROUP_NAMES["g2"] not in home.text, "only ana's own groups are listed"
        for path in (
            "/groups/g1",
            "/groups/g1/leaderboard?period=day&day=2026-03-08",
            "/groups/g1/leaderboard?period=week&day=2026-03-08",
            "/groups/g1/leaderboard?period=all",
            "/groups/g1/members/ben?period=month&day=2026-03-20",
            "/groups/g1/taste?period=all",
            "/groups/g1/recommendations",
            "/groups/g1/recap?year=2026",
            "/groups/g1/members",
        ):
            page = client.get(path)
            assert page.status_code == 200, (path, page.text[:500])
            assert SCRIPT_NAME not in page.text, f"{path} must escape names"
            assert IMG_NAME not in page.text, f"{path} must escape names"


def test_the_leaderboard_shows_the_stored_day(world: World) -> None:
    with browser(world, "ana") as client:
        page = client.get("/groups/g1/leaderboard", params={"period": "day", "day": "2026-03-08"})
        api = client.get("/api/v1/groups/g1/stats", params={"period": "day", "day": "2026-03-08"})
    stats = api.json()
    assert stats["found"] and stats["key"] == "2026-03-08"
    assert f"<strong>{stats['stats']['plays']}</strong> plays" in page.text
    leader = stats["stats"]["leaderboards"]["plays"][0]["user_id"]
    assert html.escape({"ana": "Ana", "ben": SCRIPT_NAME, "cy": "Cy"}[leader]) in page.text
    assert 'rel="prev" href="/groups/g1/leaderboard?period=day&day=2026-03-07"' in page.text


EMOJI = re.compile("[\U0001f000-\U0001faff\u2600-\u27bf\ufe0f]")
"""Emoji and the symbols fonts draw as emoji: without an emoji font they render as boxes."""


def test_the_recap_has_svg_award_icons_and_a_possessive_title(world: World) -> None:
    with browser(world, "ana") as client:
        page = client.get("/groups/g1/recap", params={"year": 2026})
    assert page.status_code == 200
    assert not EMOJI.findall(page.text), "no emoji in the recap"
    assert page.text.count('<svg class="icon"') >= 3, "each award has its icon"
    title = f"<h1>{possessive(GROUP_NAMES['g1'])} 2026</h1>"
    assert title == "<h1>Night owls' 2026</h1>" and title in html.unescape(page.text)


def test_every_page_links_an_icon_and_favicon_ico_is_served(world: World) -> None:
    with browser(world, None) as client:
        home = client.get("/")
        icon = client.get("/favicon.ico", follow_redirects=True)
    assert '<link rel="icon" href="/static/favicon.svg"' in home.text
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert icon.text.startswith("<svg")


def test_for_you_says_when_recommendations_were_made(world: World) -> None:
    """Ana has recommendations: when they were made, in her zone; dee has none yet: when the
    last run was. Neither page names a fixed clock time."""
    with mongo_client(world.settings) as mongo:
        database = mongo[world.settings.mongodb_database]
        recommended = database[Collection.RECOMMENDATIONS].find_one({"user_id": "ana"})
        assert recommended is not None
        made = recommended["generated_at"]
        ran = datetime.now(UTC) - timedelta(hours=3, minutes=10)
        last_run = {
            "_id": "recommendations:test",
            "kind": "recommendations",
            "run_id": "test",
            "generated_at": ran,
            "fallback": "only one member has listened so far",
        }
        database[Collection.MODEL_RUNS].insert_one(last_run)
        try:
            with browser(world, "ana") as client:
                ana = html.unescape(client.get("/groups/g1/recommendations").text)
            with browser(world, "dee") as client:
                dee = html.unescape(client.get("/groups/g2/recommendations").text)
                # The run gave dee the group's favourites: the page says so, and why.
                database[Collection.RECOMMENDATIONS].insert_one(
                    {
                        "_id": "test:dee",
                        "run_id": "test",
                        "user_id": "dee",
                        "generated_at": ran,
                        "cold_start": True,
                        "items": [
                            {
                                "rank": 1,
                                "track_id": "t1",
                                "track_name": "Track 1",
                                "artist_name": "Artist 1",
                                "friends": [],
                            }
                        ],
                    }
                )
                baseline = html.unescape(client.get("/groups/g2/recommendations").text)
        finally:
            database[Collection.MODEL_RUNS].delete_one({"_id": last_run["_id"]})
            database[Collection.RECOMMENDATIONS].delete_one({"_id": "test:dee"})
    assert local_time(made, ZONES["ana"], "%a %d %b %H:%M") in ana
    assert "remade after each day's aggregates" in ana
    assert "No recommendations yet" in dee and "The last run was 3 h 10 min ago" in dee
    assert "03:30" not in ana + dee and "nightly" not in ana + dee
    assert "while auxcord learns your taste (only one member has listened so far)" in baseline
    assert local_time(ran, ZONES["dee"], "%a %d %b %H:%M") in baseline


def test_a_gap_shows_on_its_owners_profile_only_until_an_import_repairs_it(world: World) -> None:
    start = datetime(2026, 3, 12, 13, 0, tzinfo=UTC)
    end = start + timedelta(hours=2, minutes=30)
    notice = f"Plays from {time_span(start, end, ZONES['ana'])} may be missing"
    with mongo_client(world.settings) as mongo:
        database = mongo[world.settings.mongodb_database]
        gaps = GapStore(database)
        gaps.record("ana", start, end, GapCause.QUOTA_LOCKOUT, datetime.now(UTC))
        try:
            with browser(world, "ana") as client:
                own = html.unescape(client.get("/groups/g1/members/ana").text)
            with browser(world, "cy") as client:  # a fellow member, and the admin
                other = html.unescape(client.get("/groups/g1/members/ana").text)
            assert notice in own and GapCause.QUOTA_LOCKOUT.description in own
            assert '<a href="#import-history">Upload your Spotify data export</a>' in own
            assert '<details class="panel" id="import-history" open>' in own
            assert "may be missing" not in other, "only ana sees her gaps on her profile"
            # An import whose plays reach from before the gap to after it repairs it.
            repaired = gaps.repair_covered(
                "ana", start - timedelta(days=1), end + timedelta(days=1), datetime.now(UTC)
            )
            assert repaired == 1
            with browser(world, "ana") as client:
                again = html.unescape(client.get("/groups/g1/members/ana").text)
            assert "may be missing" not in again
        finally:
            database[Collection.GAPS].delete_many({"user_id": "ana"})
