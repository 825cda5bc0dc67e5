"""Two friends in real Chromium, with the whole pipeline running: sign in through the Spotify
simulator, make a group, invite and join, watch the live feed follow a track change without a
reload, page through the leaderboard and open the taste-match."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from analytics.aggregate import aggregate_days
from auxcord.clients import ensure_bucket, ensure_topics, mongo_database
from auxcord.names import Collection
from auxcord.settings import Settings
from cli.webserver import serve_in_thread
from devtools.simulator import SimulatorConfig, run_simulator_in_thread
from devtools.stack import free_port
from streaming.job import start_stream
from tests.conftest import simulator_settings
from tests.producers.test_pollers import start_poller
from tests.streaming.helpers import wait_for

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page
    from pyspark.sql import SparkSession

expect.set_options(timeout=60_000)  # generous on a loaded 2-core machine

SPEED = 10.0
"""Ten simulated seconds per real second: the pollers' 30 s active interval becomes 3 s."""


@contextmanager
def pipeline(
    test_settings: Settings, spark: SparkSession, tmp_path: Path
) -> Iterator[tuple[Settings, str, str]]:
    """The simulator, the web app, the pollers and the streaming job, on this test's topics."""
    config = SimulatorConfig(
        users=4,
        days=3,
        seed=44,
        speed=SPEED,
        rate_budget=100_000,
        start=datetime.now(UTC).replace(microsecond=0) - timedelta(days=2),
    )
    with run_simulator_in_thread(config) as sim:
        port = free_port()
        settings = simulator_settings(
            test_settings,
            sim,
            port,
            kafka_topic_prefix=f"browser{port}.",
            gcs_bucket=f"auxcord-browser-{port}",
            stream_checkpoint_dir=str(tmp_path / "checkpoint"),
            stream_trigger_seconds=0.5,
            poller_speed=SPEED,
            poller_budget=100_000,
            poller_metrics_port=0,
            # The simulator has no daily quota here: a generous budget lets the pollers probe
            # idle friends every minute, so the forced track is seen while it plays.
            spotify_daily_budget=100_000,
        )
        ensure_topics(settings)
        ensure_bucket(settings)
        with serve_in_thread(settings, "127.0.0.1", port) as base:
            query, _ = start_stream(spark, settings)
            poller = start_poller(settings)
            try:
                yield settings, base, sim.url
            finally:
                poller.terminate()
                poller.wait(timeout=30)
                query.stop()


def sign_in(page: Page, base: str, user_id: str) -> None:
    """Click "Sign in with Spotify" and pick ``user_id`` on the simulator's consent page."""
    page.get_by_role("link", name="Sign in with Spotify").click()
    page.locator(f"a[href$='sim_user={user_id}']").click()
    page.wait_for_url(lambda url: url.startswith(base))


def test_friends_sign_in_make_a_group_and_watch_each_other_live(
    chromium: Browser,
    spark: SparkSession,
    test_settings: Settings,
    tmp_path: Path,
    screenshots: Path,
) -> None:
    with pipeline(test_settings, spark, tmp_path) as (settings, base, sim_url):
        users = httpx.get(f"{sim_url}/_sim/users").json()
        # Two friends of one taste cluster, so their taste-match has something to show.
        first = users[0]
        same_taste = [u for u in users[1:] if u["cluster"] == first["cluster"]]
        second = (same_taste or users[1:])[0]
        alice_context = chromium.new_context(viewport={"width": 1200, "height": 900})
        bob_context = chromium.new_context(viewport={"width": 1200, "height": 900})
        for context in (alice_context, bob_context):
            context.set_default_timeout(60_000)  # generous on a loaded 2-core machine
        dialogs: list[str] = []
        try:
            alice = alice_context.new_page()
            alice.on("dialog", lambda d: (dialogs.append(d.message), d.accept()))
            alice.goto(base)
            sign_in(alice, base, first["user_id"])
            expect(alice.get_by_text(f"Hi {first['display_name']}")).to_be_visible()
            alice.get_by_label("New group").fill("Browser crew")
            alice.get_by_role("button", name="Create group").click()
            alice.get_by_role("button", name="Create an invitation link").click()
            link = alice.locator("#invite-link").input_value()
            alice.screenshot(path=str(screenshots / "1-invite.png"), full_page=True)
            group_path = urlsplit(alice.url).path.removesuffix("/members")

            bob = bob_context.new_page()
            bob.goto(link)
            expect(bob.get_by_text("Sign in to see that page")).to_be_visible()
            sign_in(bob, base, second["user_id"])
            bob.wait_for_url(f"**{urlsplit(link).path}")
            bob.screenshot(path=str(screenshots / "2-join.png"), full_page=True)
            bob.get_by_role("button", name="Join group").click()
            bob.wait_for_url(f"**{group_path}")
            expect(bob.get_by_role("heading", name="Browser crew")).to_be_visible()

            # The live feed: the simulator changes bob's track; alice's page follows, no reload.
            alice.goto(base + group_path)
            alice.evaluate("window.__sameDocument = true")
            for attempt in range(3):
                # Ask again if the change is not on screen within a minute: the simulator's own
                # next track may have replaced the forced one before the pollers saw it.
                track = httpx.post(f"{sim_url}/_sim/users/{second['user_id']}/play").json()
                try:
                    alice.wait_for_function(
                        "name => document.getElementById('live-feed').innerText.includes(name)",
                        arg=track["playing"]["track_name"],
                        timeout=60_000,
                    )
                    break
                except PlaywrightTimeout:
                    if attempt == 2:
                        raise
            assert alice.evaluate("window.__sameDocument") is True, "updated without a reload"
            alice.screenshot(path=str(screenshots / "3-live.png"), full_page=True)

            # Aggregate what the pipeline stored, as the nightly job would, then browse it.
            listens = mongo_database(settings)[Collection.LISTENS]
            friends = [first["user_id"], second["user_id"]]
            wait_for(
                lambda: all(listens.count_documents({"user_id": u}) >= 20 for u in friends),
                90,
                "both friends' recent history to be stored",
            )
            oldest = listens.find_one({}, sort=[("played_at", 1)])["played_at"].date()  # type: ignore[index]
            newest = listens.find_one({}, sort=[("played_at", -1)])["played_at"].date()  # type: ignore[index]
            aggregate_days(
                settings, oldest - timedelta(days=1), newest + timedelta(days=1), spark=spark
            )
            alice.get_by_role("link", name="Leaderboard").click()
            title = alice.locator(".period-title").inner_text()
            # expect() retries until the next page has loaded; a plain read could see the last.
            alice.get_by_role("link", name="Previous").click()
            expect(alice.locator(".period-title")).not_to_have_text(title)
            alice.get_by_role("link", name="Next").click()
            expect(alice.locator(".period-title")).to_have_text(title)
            expect(alice.locator("[data-board='minutes'] li").first).to_be_visible()
            alice.screenshot(path=str(screenshots / "4-leaderboard.png"), full_page=True)
            alice.get_by_role("link", name="All time").click()
            alice.wait_for_url("**period=all**")
            expect(alice.locator("[data-board='plays'] li")).to_have_count(2)
            alice.get_by_role("link", name="Taste-match").click()
            alice.wait_for_url("**/taste")
            # One score each way between the two friends.
            expect(alice.locator("#taste-matrix .score")).to_have_count(2)
            alice.screenshot(path=str(screenshots / "5-taste.png"), full_page=True)
        finally:
            alice_context.close()
            bob_context.close()
    assert dialogs == []
