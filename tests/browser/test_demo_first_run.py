"""A newcomer's first minutes with the demo, in real Chromium.

The demo's own start-up path runs here: each friend's simulated Spotify export is imported by
:func:`cli.demo_history.import_demo_history` and stored before the live stream starts; then the
simulator plays in real time from now (one friend listening from the start, as the demo
configures it), the pollers follow, and the batch jobs run once by name, as the demo's batch
runs do. ``auxcord demo`` itself also starts Airflow, too slow for the test suite.

The newcomer signs in, opens the group and sees, in order: someone listening now, the
leaderboard opening on today, an all-time board of months of plays (more than Spotify's 50
recent plays per friend), the recap, and recommendations explained by friends. No console
error and no failed request on any page; every page is saved to ``test-artifacts/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect

from analytics.jobs import aggregate_range, recommend
from api.routes.group_pages import period_title
from auxcord.clients import ensure_bucket, ensure_topics, mongo_database
from auxcord.groups import GroupStore
from auxcord.settings import Settings
from cli.demo_history import DemoHistory, import_demo_history
from cli.webserver import serve_in_thread
from devtools.linking import LinkResult, link_simulated_users
from devtools.simulator import SimulatorConfig, run_simulator_in_thread
from devtools.stack import free_port
from streaming.job import start_stream
from tests.browser.test_friends_end_to_end import sign_in
from tests.conftest import simulator_settings
from tests.producers.test_pollers import start_poller
from tests.streaming.helpers import wait_for

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Response
    from pyspark.sql import SparkSession

FRIENDS = 3
HISTORY_DAYS = 62
"""Two months: enough for the month view to step back through history."""
WAIT_MS = 60_000


@dataclass
class Demo:
    settings: Settings
    base: str
    friends: list[LinkResult]
    history: DemoHistory
    group_id: str


@contextmanager
def demo_pipeline(test_settings: Settings, spark: SparkSession, tmp_path: Path) -> Iterator[Demo]:
    """What ``auxcord demo`` starts, in its order, on this test's topics, bucket and database."""
    config = SimulatorConfig(
        users=FRIENDS,
        days=HISTORY_DAYS,
        seed=20,
        speed=1.0,
        rate_budget=100_000,
        listening_at_start=1,
    )
    with run_simulator_in_thread(config) as sim:
        port = free_port()
        settings = simulator_settings(
            test_settings,
            sim,
            port,
            kafka_topic_prefix=f"firstrun{port}.",
            gcs_bucket=f"auxcord-firstrun-{port}",
            stream_checkpoint_dir=str(tmp_path / "checkpoint"),
            stream_trigger_seconds=0.5,
            poller_budget=100_000,
            poller_metrics_port=0,
        )
        ensure_topics(settings)
        ensure_bucket(settings)
        with serve_in_thread(settings, "127.0.0.1", port) as base:
            friends = link_simulated_users(settings)
            groups = GroupStore(mongo_database(settings))
            group = groups.create("Demo friends", friends[0].user_id)
            for friend in friends[1:]:
                groups.join(groups.invite(group, friends[0].user_id).token, friend.user_id)
            poller = start_poller(settings)
            history = import_demo_history(settings, sim, [f.user_id for f in friends], spark)
            query, _ = start_stream(spark, settings)
            # Live first, as in the demo: the batch jobs start once the stream runs.
            wait_for(lambda: query.lastProgress is not None or not query.isActive, 180, "stream")
            assert query.isActive, f"the live stream stopped: {query.exception()}"
            try:
                yield Demo(settings, base, friends, history, group.group_id)
            finally:
                poller.terminate()
                poller.wait(timeout=30)
                query.stop()


@dataclass
class Problems:
    """What a careful newcomer would notice in the browser's developer tools."""

    base: str
    console: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.console.append(str(error)))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)

    def _console(self, message: ConsoleMessage) -> None:
        url = str(message.location.get("url") or "")
        # Only auxcord's own pages count: the simulator's consent page stands in for Spotify's
        # (Chromium asks it for a /favicon.ico it does not serve).
        if message.type == "error" and url.startswith(self.base):
            self.console.append(f"{message.text} ({url})")

    def _failed(self, request: Request) -> None:
        failure = request.failure or ""
        # Leaving the live page closes its event stream: the browser calls that "aborted".
        if failure == "net::ERR_ABORTED" and request.url.endswith("/live"):
            return
        self.requests.append(f"{request.method} {request.url}: {failure}")

    def _response(self, response: Response) -> None:
        if response.status >= 400:
            self.requests.append(f"{response.request.method} {response.url}: {response.status}")


@pytest.mark.timeout(1200)  # two months aggregated and a model trained: minutes on 2 busy cores
def test_a_newcomer_sees_today_months_of_history_and_the_whole_story(
    chromium: Browser,
    spark: SparkSession,
    test_settings: Settings,
    tmp_path: Path,
    screenshots: Path,
) -> None:
    with demo_pipeline(test_settings, spark, tmp_path) as demo:
        assert demo.history.first_day is not None
        assert demo.history.first_day <= date.today() - timedelta(days=HISTORY_DAYS - 1)
        assert demo.history.stored >= demo.history.plays > FRIENDS * 50
        # The demo's batch runs: every day with listens, then the recommendations.
        aggregate_range(
            demo.settings,
            first=demo.history.first_day - timedelta(days=1),
            last=datetime.now(UTC).date() + timedelta(days=1),
            spark=spark,
        )
        recommend(demo.settings, spark=spark)

        listener, viewer = demo.friends[0], demo.friends[1]
        context = chromium.new_context(viewport={"width": 1200, "height": 900})
        context.set_default_timeout(WAIT_MS)
        problems = Problems(demo.base)
        try:
            page = context.new_page()
            problems.watch(page)
            shot = iter(range(1, 100))

            def save(name: str) -> None:
                page.screenshot(path=str(screenshots / f"{next(shot)}-{name}.png"), full_page=True)

            page.goto(demo.base)
            save("welcome")
            sign_in(page, demo.base, viewer.user_id)
            expect(page.get_by_text(f"Hi {viewer.display_name}")).to_be_visible()
            save("home")

            group = f"{demo.base}/groups/{demo.group_id}"
            page.get_by_role("link", name="Demo friends").first.click()
            page.wait_for_url(group)
            # Someone is listening now: the first friend started a session with the simulator.
            expect(
                page.locator(f"#live-feed .feed-item[data-user='{listener.user_id}']")
            ).to_be_visible(timeout=WAIT_MS)
            save("live")

            page.get_by_role("link", name="Leaderboard").click()
            page.wait_for_url("**/leaderboard**")
            # It opens on today: the newest local day of anyone in the group.
            todays = {
                period_title("day", datetime.now(ZoneInfo(f.timezone)).date()) for f in demo.friends
            }
            assert page.locator(".period-title").inner_text() in todays
            expect(page.locator("[data-board='plays'] li").first).to_be_visible()
            save("leaderboard-today")

            page.get_by_role("link", name="All time").click()
            page.wait_for_url("**period=all**")
            plays = page.locator("[data-board='plays'] li .bar-value")
            expect(plays).to_have_count(FRIENDS)
            counts = [int(text.split()[0].replace(",", "")) for text in plays.all_inner_texts()]
            # More than the 50 recent plays Spotify's API shows a poller: the imported history.
            assert min(counts) > 50, counts
            save("leaderboard-all-time")

            # Months of it: two months back, the month view still has stats.
            page.get_by_role("link", name="Month").click()
            page.wait_for_url("**period=month**")
            for _ in range(2):
                title = page.locator(".period-title").inner_text()
                page.get_by_role("link", name="Previous").click()
                expect(page.locator(".period-title")).not_to_have_text(title)
                expect(page.locator("[data-board='plays'] li").first).to_be_visible()
            save("leaderboard-months-ago")

            page.get_by_role("link", name="Recap").click()
            page.wait_for_url("**/recap**")
            expect(page.locator(".stat-tiles.recap")).to_be_visible()
            expect(page.locator("ol.top li").first).to_be_visible()
            save("recap")

            page.get_by_role("link", name="For you").click()
            page.wait_for_url("**/recommendations")
            picks = page.locator("li.rec")
            expect(picks.first).to_be_visible()
            # Each pick is explained by the friends who play it.
            for text in picks.all_inner_texts():
                assert "Played by" in text, text
            save("recommendations")

            page.get_by_role("link", name="Taste-match").click()
            page.wait_for_url("**/taste")
            save("taste-match")
            page.goto(f"{group}/members/{listener.user_id}")
            save("profile")
        finally:
            context.close()
        assert (problems.requests, problems.console) == ([], [])
