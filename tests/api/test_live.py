"""The live feed's hub: a change wakes only the feeds of groups with that member, open feeds are
capped per user and per address, and over HTTP a member's extra feed is refused with 429."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import MongoClient
from pymongo.database import Database

from api.live import FEEDS_PER_USER, ChangeSignal, Subscription
from auxcord.names import Collection
from tests.api.world import World, browser


def _offline_signal(**limits: int) -> ChangeSignal:
    """A hub that is never started: its collection is never contacted."""
    client: MongoClient[dict[str, Any]] = MongoClient("mongodb://127.0.0.1:9", connect=False)
    return ChangeSignal(client["unused"]["now_playing"], **limits)


def test_a_change_wakes_only_the_feeds_that_follow_that_user() -> None:
    async def scenario() -> None:
        signal = _offline_signal()
        night_owls = signal.subscribe(user="ana", address="10.0.0.1")
        secret = signal.subscribe(user="cy", address="10.0.0.2")
        assert night_owls is not None and secret is not None
        night_owls.follow(["ana", "ben", "cy"])
        secret.follow(["cy", "dee"])
        signal.notify(["dee"])
        assert (night_owls.wakes, secret.wakes) == (0, 1)
        signal.notify(["cy"])
        assert (night_owls.wakes, secret.wakes) == (1, 2)
        secret.follow(["dee"])  # cy left the group
        signal.notify(["cy"])
        assert (night_owls.wakes, secret.wakes) == (2, 2)
        signal.notify(None)
        assert (night_owls.wakes, secret.wakes) == (3, 3)
        # A wake that came while the feed was busy is not lost: the next wait returns at once.
        await asyncio.wait_for(secret.wait(timeout=60), 5)
        secret.close()
        signal.notify(["dee"])
        assert secret.wakes == 3, "a closed feed follows nobody"

    asyncio.run(scenario())


def test_open_feeds_are_capped_per_user_and_per_address_and_given_back() -> None:
    async def scenario() -> None:
        signal = _offline_signal(per_user=2, per_address=3)
        first = signal.subscribe(user="ana", address="10.0.0.1")
        second = signal.subscribe(user="ana", address="10.0.0.2")
        assert first is not None and second is not None
        assert signal.subscribe(user="ana", address="10.0.0.3") is None, "per user"
        third = signal.subscribe(user="ben", address="10.0.0.1")
        fourth = signal.subscribe(user="cy", address="10.0.0.1")
        assert third is not None and fourth is not None
        assert signal.subscribe(user="dee", address="10.0.0.1") is None, "per address"
        first.close()
        first.close()  # twice is harmless
        assert signal.open_feeds("user:ana") == 1 and signal.open_feeds("address:10.0.0.1") == 2
        assert signal.subscribe(user="ana", address="10.0.0.3") is not None

    asyncio.run(scenario())


def _until(check: Callable[[], bool], what: str, limit_s: float = 60) -> None:
    deadline = time.monotonic() + limit_s
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def _state(user_id: str, observed_at: datetime) -> dict[str, Any]:
    expires_at = observed_at + timedelta(minutes=10)
    return {"user_id": user_id, "state": "started", "is_playing": True, "track_name": "T",
            "observed_at": observed_at, "expires_at": expires_at}  # fmt: skip


@contextmanager
def _followers(signal: ChangeSignal) -> Iterator[tuple[Subscription, Subscription]]:
    """Two feeds on a loop of their own thread: one follows u1, the other u2."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def open_two() -> tuple[Subscription, Subscription]:
        one, two = (signal.subscribe(user=u, address="10.0.0.1") for u in ("u1", "u2"))
        assert one is not None and two is not None
        one.follow(["u1"])
        two.follow(["u2"])
        return one, two

    try:
        yield asyncio.run_coroutine_threadsafe(open_two(), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _wakes_by_user(signal: ChangeSignal, write: Callable[[str], None]) -> None:
    """A write of u2's state wakes u2's feed only, then u1's wakes u1's only. The watcher
    notifies one change at a time, so once u1's feed woke, u2's count is final for it."""
    with _followers(signal) as (one, two):
        write("u2")
        _until(lambda: two.wakes == 1, "u2's feed to wake")
        assert one.wakes == 0
        write("u1")
        _until(lambda: one.wakes == 1, "u1's feed to wake")
        assert two.wakes == 1


def test_the_change_stream_wakes_feeds_by_user(mongo_db: Database[dict[str, Any]]) -> None:
    states = mongo_db[Collection.NOW_PLAYING]
    signal = ChangeSignal(states)
    signal.start()
    try:
        _until(lambda: signal.mode == "change stream", "the change stream")
        _wakes_by_user(
            signal,
            lambda user: states.replace_one(
                {"_id": user}, _state(user, datetime.now(UTC)), upsert=True
            ),
        )
    finally:
        signal.stop()


def test_polling_wakes_feeds_by_user(mongo_db: Database[dict[str, Any]]) -> None:
    """Where MongoDB has no change streams: states observed since the last look."""
    states = mongo_db[Collection.NOW_PLAYING]
    states.insert_one({"_id": "u0", **_state("u0", datetime.now(UTC) - timedelta(minutes=1))})
    signal = ChangeSignal(states)
    poller = threading.Thread(target=signal._poll, daemon=True)
    poller.start()
    try:
        _until(lambda: signal.mode == "polling", "the first look")
        moments = iter(datetime.now(UTC) + timedelta(seconds=n) for n in range(1, 10))
        _wakes_by_user(
            signal,
            lambda user: states.replace_one(
                {"_id": user}, _state(user, next(moments)), upsert=True
            ),
        )
    finally:
        signal.stop()
        poller.join(10)


def test_a_member_cannot_open_more_feeds_than_allowed(world: World) -> None:
    with browser(world, "dee") as dee, ExitStack() as feeds:
        opened = [
            feeds.enter_context(dee.stream("GET", "/groups/g2/live"))
            for _ in range(FEEDS_PER_USER)
        ]
        assert [feed.status_code for feed in opened] == [200] * FEEDS_PER_USER
        with dee.stream("GET", "/groups/g2/live") as refused:
            assert refused.status_code == 429 and refused.headers["retry-after"]
        opened[0].close()

        def another_opens() -> bool:
            with dee.stream("GET", "/groups/g2/live") as feed:
                return feed.status_code == 200

        _until(another_opens, "a closed feed's place to be given back")
    with browser(world, "cy") as cy, cy.stream("GET", "/groups/g2/live") as feed:
        assert feed.status_code == 200, "dee's feeds are dee's, not cy's"
