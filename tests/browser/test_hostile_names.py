"""Names from Spotify are untrusted: in a real browser they render as text and run nothing."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from tests.api.world import IMG_NAME, SCRIPT_NAME, World, session_cookie

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext

PAGES = [
    ("live", "/groups/g1"),
    ("leaderboard", "/groups/g1/leaderboard?period=all"),
    ("leaderboard-day", "/groups/g1/leaderboard?period=day&day=2026-03-10"),
    ("member", "/groups/g1/members/ben?period=month&day=2026-03-20"),
    ("taste", "/groups/g1/taste?period=all"),
    ("recommendations", "/groups/g1/recommendations"),
    ("recap", "/groups/g1/recap?year=2026"),
    ("members", "/groups/g1/members"),
    ("admin", "/admin"),
]


def signed_in(chromium: Browser, world: World, user_id: str) -> BrowserContext:
    context = chromium.new_context(viewport={"width": 1200, "height": 900})
    cookie = session_cookie(world.settings, {"user_id": user_id, "csrf": "x"})
    host = urlsplit(world.base).hostname or "127.0.0.1"
    context.add_cookies([{"name": "auxcord_session", "value": cookie, "domain": host, "path": "/"}])
    return context


def test_hostile_names_render_as_text_and_no_dialog_fires(
    chromium: Browser, world: World, screenshots: Path
) -> None:
    context = signed_in(chromium, world, "cy")  # cy is in g1 and the admin
    dialogs: list[str] = []
    errors: list[str] = []
    page = context.new_page()
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        for name, path in PAGES:
            page.goto(world.base + path)
            page.wait_for_load_state("networkidle") if name != "live" else None
            page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)
        page.goto(world.base + "/groups/g1")
        # The live feed's script re-renders the feed from the SSE message with textContent.
        # The predicate is a function: a bare expression is eval'd in the page when it has to
        # poll, and the page's CSP (no 'unsafe-eval') rightly refuses that.
        page.wait_for_function(
            "() => Number(document.getElementById('live-feed').dataset.updates) >= 1"
        )
        feed = page.locator("#live-feed")
        assert IMG_NAME in feed.inner_text(), "the hostile track name shows as text"
        assert SCRIPT_NAME in feed.inner_text(), "the hostile artist name shows as text"
        assert feed.locator("img[src='x']").count() == 0, "no element was injected"
        # The only inline script is the members' names as a JSON data island, never executed,
        # with "<" escaped so no name can close it.
        islands = page.locator("script:not([src])")
        assert islands.count() == 1 and islands.get_attribute("type") == "application/json"
        assert "<" not in page.content().split('id="member-names">')[1].split("</script>")[0]
        page.goto(world.base + "/groups/g1/members")
        assert page.get_by_text(SCRIPT_NAME, exact=True).count() >= 1, "ben's name shows as text"
        page.goto(world.base + "/groups/g1/leaderboard?period=all")
        assert page.get_by_text(IMG_NAME).count() >= 1
    finally:
        context.close()
    assert dialogs == [], f"a dialog fired: {dialogs}"
    assert errors == [], f"script errors: {errors}"
