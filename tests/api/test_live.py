"""The live feed's hub: a change wakes only the feeds of groups with that member, open feeds are
capped per user and per address, and over HTTP a member's extra feed is refused with 429."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import MongoClient
from pymongo.database import Database
from starlette.requests import ClientDisconnect
from starlette.types import Message, Scope

from api.app import create_app
from api.live import FEEDS_PER_USER, ChangeSignal, Subscription
from auxcord.accounts import AccountStore
from auxcord.groups import GroupStore
from auxcord.names import Collection
from auxcord.settings import Settings
from auxcord.tokens import TokenCipher
from tests.api.world import World, browser, session_cookie


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
    return {
        "user_id": user_id,
        "state": "started",
        "is_playing": True,
        "track_name": "T",
        "observed_at": observed_at,
        "expires_at": expires_at,
    }


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


def _wakes_by_user(signal: ChangeSignal, write: Callable[[str], object]) -> None:
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
            feeds.enter_context(dee.stream("GET", "/groups/g2/live")) for _ in range(FEEDS_PER_USER)
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


def _feed_scope(settings: Settings, group_id: str, spec_version: str) -> Scope:
    """An ASGI request for dee's live feed of ``group_id``, as a server of ``spec_version``
    sends it (before 2.4, Starlette listens for the disconnect while it streams)."""
    cookie = session_cookie(settings, {"user_id": "dee"})
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": spec_version},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "root_path": "",
        "path": f"/groups/{group_id}/live",
        "raw_path": f"/groups/{group_id}/live".encode(),
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"cookie", f"auxcord_session={cookie}".encode())],
        "client": ("10.0.0.9", 50000),
        "server": ("testserver", 80),
    }


def test_a_feed_whose_client_leaves_before_it_starts_gives_its_place_back(
    test_settings: Settings,
) -> None:
    """A client that is gone before the stream's first step (a tab closed at once) leaves the
    events' generator unstarted; its place must come back all the same, or a few such feeds
    lock the user out of live feeds until the web process restarts."""
    app = create_app(test_settings)
    database = app.state.database
    AccountStore(database, TokenCipher(test_settings.secret_key_value())).link(
        user_id="dee",
        display_name="Dee",
        country="SE",
        timezone="UTC",
        client_id="app",
        token_info={
            "access_token": "a",
            "refresh_token": "r",
            "expires_in": 3600,
            "scope": "user-read-recently-played",
        },
    )
    group = GroupStore(database).create("Tabs", "dee")
    signal: ChangeSignal = app.state.now_playing_signal

    async def scenario() -> None:
        # A client that stays: the request reaches the feed, which holds one place meanwhile.
        leave = asyncio.Event()
        streaming = asyncio.Event()
        sent: list[Message] = []

        async def stay_until_told() -> Message:
            await leave.wait()
            return {"type": "http.disconnect"}

        async def record(message: Message) -> None:
            sent.append(message)
            if message.get("body"):
                streaming.set()

        staying = asyncio.create_task(
            app(_feed_scope(test_settings, group.group_id, "2.3"), stay_until_told, record)
        )
        await asyncio.wait_for(streaming.wait(), 60)
        assert sent[0]["status"] == 200 and sent[1]["body"].startswith(b"event: feed")
        assert signal.open_feeds("user:dee") == 1
        leave.set()
        await asyncio.wait_for(staying, 60)
        assert signal.open_feeds("user:dee") == 0

        # Clients that are gone at once, more of them than one user may hold open. Before ASGI
        # 2.4 the disconnect cancels the stream while it waits to send the headers (a server
        # waits for the socket, as here), before the events' generator took its first step.
        async def gone() -> Message:
            return {"type": "http.disconnect"}

        async def socket_send(message: Message) -> None:
            await asyncio.sleep(0)

        async def unreachable(message: Message) -> None:
            raise OSError("the client is gone")

        for _ in range(FEEDS_PER_USER + 1):
            await app(_feed_scope(test_settings, group.group_id, "2.3"), gone, socket_send)
            assert signal.open_feeds("user:dee") == 0, "ASGI before 2.4: the disconnect"
            with contextlib.suppress(ClientDisconnect):
                await app(_feed_scope(test_settings, group.group_id, "2.4"), gone, unreachable)
            assert signal.open_feeds("user:dee") == 0, "ASGI 2.4: the failed send"

    asyncio.run(scenario())
