"""The dashboard's pages and JSON API show the stored aggregates to members."""

from __future__ import annotations

import html

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
