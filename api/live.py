"""The live "listening now" feed: MongoDB tells us whose ``now_playing`` changed, and each open
feed of a group with that member re-reads its group and pushes the new state to the browser as a
Server-Sent Event.

One background thread per app watches the collection with a change stream (milliseconds after the
streaming job's write). Where the server offers no change streams (a standalone mongod), the thread
falls back to polling for states observed since its last look, every second. Either way the
thread only says "these users changed"; a feed wakes only for its own group's members, and then
reads its group's few documents, so a member never sees another group's data and a change in one
group costs other groups nothing.

A feed can outlive what allowed it: the member may be removed, or sign out everywhere. So each
feed checks again, on every event and at least every :data:`RECHECK_S` seconds, that its session
still signs in a member, and ends the stream when not. Feeds are counted per signed-in user and
per client address, so nobody can hold the server's threads with a thousand open feeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import OperationFailure, PyMongoError
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from auxcord.groups import Group

log = logging.getLogger(__name__)

POLL_FALLBACK_S = 1.0
RECHECK_S = 5.0
"""The longest an open feed goes without checking its membership and session again."""
FEEDS_PER_USER = 8
FEEDS_PER_ADDRESS = 32
"""Open feeds allowed at once: a person with a few tabs and devices fits easily; more are
refused with 429. An address counts more, for households behind one router."""


class Subscription:
    """One open feed: wakes when a state of one of ``keys`` (user ids) changes."""

    def __init__(
        self, signal: ChangeSignal, loop: asyncio.AbstractEventLoop, owners: tuple[str, ...]
    ) -> None:
        self._signal = signal
        self._loop = loop
        self._event = asyncio.Event()
        self.owners = owners
        self.keys: frozenset[str] = frozenset()
        self.wakes = 0
        """How often a change woke this feed (counted in the watcher thread)."""
        self.closed = False

    def follow(self, keys: Iterable[str]) -> None:
        """Wake for these users' changes from now on (a group's members change)."""
        self._signal._follow(self, frozenset(keys))

    async def wait(self, timeout: float) -> None:
        """Return at the next change of a followed user (one that came since the last wait
        counts), or after ``timeout`` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()

    @property
    def ended(self) -> bool:
        """Closed, or the app is shutting down."""
        return self.closed or self._signal.stopped

    def close(self) -> None:
        """Stop following and give back this feed's place; safe to call twice."""
        if not self.closed:
            self.closed = True
            self._signal._release(self)

    def _wake(self) -> None:
        # The loop may close under a feed when the app shuts down: nothing left to wake.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._event.set)


class ChangeSignal:
    """Wakes the open feeds that follow a user whose state in the watched collection changed."""

    def __init__(
        self,
        collection: Collection[dict[str, Any]],
        *,
        per_user: int = FEEDS_PER_USER,
        per_address: int = FEEDS_PER_ADDRESS,
    ) -> None:
        self._collection = collection
        self._limits = {"user": per_user, "address": per_address}
        self._stop = threading.Event()
        self._subscriptions: set[Subscription] = set()
        self._by_key: dict[str, set[Subscription]] = {}
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.mode = "starting"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="now-playing-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.notify(None)
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def subscribe(self, *, user: str, address: str) -> Subscription | None:
        """A new feed for ``user`` from ``address`` (call it on the event loop), or ``None`` if
        either already has as many open feeds as allowed."""
        owners = (f"user:{user}", f"address:{address}")
        with self._lock:
            for owner in owners:
                if self._open.get(owner, 0) >= self._limits[owner.partition(":")[0]]:
                    log.warning("live feed refused: too many open", extra={"user_id": user})
                    return None
            for owner in owners:
                self._open[owner] = self._open.get(owner, 0) + 1
            subscription = Subscription(self, asyncio.get_running_loop(), owners)
            self._subscriptions.add(subscription)
        return subscription

    def open_feeds(self, owner: str) -> int:
        """How many feeds ``user:<id>`` or ``address:<ip>`` holds open."""
        with self._lock:
            return self._open.get(owner, 0)

    def notify(self, changed: Iterable[str] | None) -> None:
        """Wake the feeds following any of ``changed`` user ids (``None``: every feed)."""
        with self._lock:
            if changed is None:
                targets = set(self._subscriptions)
            else:
                targets = set()
                for key in changed:
                    targets |= self._by_key.get(key, set())
            for subscription in targets:
                subscription.wakes += 1
        for subscription in targets:
            subscription._wake()

    def _follow(self, subscription: Subscription, keys: frozenset[str]) -> None:
        with self._lock:
            if subscription.closed or keys == subscription.keys:
                return
            self._unindex(subscription)
            subscription.keys = keys
            for key in keys:
                self._by_key.setdefault(key, set()).add(subscription)

    def _release(self, subscription: Subscription) -> None:
        with self._lock:
            self._unindex(subscription)
            self._subscriptions.discard(subscription)
            for owner in subscription.owners:
                left = self._open.get(owner, 0) - 1
                if left > 0:
                    self._open[owner] = left
                else:
                    self._open.pop(owner, None)

    def _unindex(self, subscription: Subscription) -> None:
        """Remove ``subscription`` from the key index (the caller holds the lock)."""
        for key in subscription.keys:
            followers = self._by_key.get(key)
            if followers is not None:
                followers.discard(subscription)
                if not followers:
                    del self._by_key[key]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._watch()
            except OperationFailure as exc:
                log.info("no change streams (%s); polling now_playing instead", exc.code)
                self._poll()
            except PyMongoError as exc:
                log.warning("now_playing watch failed (%s); retrying", type(exc).__name__)
                self._stop.wait(POLL_FALLBACK_S)

    def _watch(self) -> None:
        with self._collection.watch(max_await_time_ms=500) as changes:
            self.mode = "change stream"
            while not self._stop.is_set():
                change = changes.try_next()
                if change is not None:
                    # A drop or an invalidation names no document: wake everyone.
                    key = (change.get("documentKey") or {}).get("_id")
                    self.notify(None if key is None else [str(key)])

    def _poll(self) -> None:
        """Find the states observed since the last look; a fall in the count (a state deleted
        before it expired, rare) wakes every feed, since nothing says whose it was."""
        newest = self._collection.find_one({}, {"observed_at": 1}, sort=[("observed_at", -1)])
        since: Any = (newest or {}).get("observed_at")
        count = self._collection.estimated_document_count()
        self.mode = "polling"
        while not self._stop.wait(POLL_FALLBACK_S):
            query = {"observed_at": {"$exists": True} if since is None else {"$gt": since}}
            changed = list(self._collection.find(query, {"observed_at": 1}))
            if changed:
                since = max(document["observed_at"] for document in changed)
                self.notify([str(document["_id"]) for document in changed])
            now_count = self._collection.estimated_document_count()
            if now_count < count:
                self.notify(None)
            count = now_count


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def to_json(value: object) -> str:
    return json.dumps(value, default=_json_default, separators=(",", ":"))


END_EVENT = "event: end\ndata: {}\n\n"
"""Tells the page to stop listening: reconnecting would only be refused."""


async def feed_events(
    subscription: Subscription,
    authorise: Callable[[], Awaitable[Group | None]],
    read_feed: Callable[[Group], Awaitable[list[dict[str, Any]]]],
    is_disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[str]:
    """Server-Sent Events for one open feed: the feed now, then again whenever it changes.

    Before every read, ``authorise`` checks again that the session still signs in a member
    (the group it returns has the current members, whom the feed then follows); when it
    returns ``None`` the stream ends. Both are awaited, so the blocking MongoDB reads run off
    the event loop. States also change without a write, when a track's time runs out, so each
    wait ends at the soonest expiry too, and never later than :data:`RECHECK_S`.

    The feed's place is given back by :class:`FeedResponse`, not here: a generator that never
    started never runs a ``finally``.
    """
    last = None
    while not subscription.ended and not await is_disconnected():
        group = await authorise()
        if group is None:
            yield END_EVENT
            return
        subscription.follow(group.members)
        feed = await read_feed(group)
        payload = to_json(feed)
        if payload != last:
            last = payload
            yield f"event: feed\ndata: {payload}\n\n"
        else:
            yield ": keepalive\n\n"
        now = datetime.now(UTC)
        expiries = [item["expires_at"] for item in feed if item.get("expires_at")]
        until_expiry = min(((e - now).total_seconds() for e in expiries), default=RECHECK_S)
        await subscription.wait(max(0.2, min(RECHECK_S, until_expiry + 0.1)))


class FeedResponse(StreamingResponse):
    """One open feed's Server-Sent Events (see :func:`feed_events`), which gives the feed's
    place back however the response ends.

    Starlette streams while it listens for the client's disconnect, and a disconnect cancels
    the stream. When the client leaves before the stream's first step (a tab closed at once),
    the events' generator never starts, so no ``finally`` inside it would run, and every such
    feed would hold its place until the process restarts: eight of them lock the user out of
    live feeds. Closing here runs in every case, a send that fails included.
    """

    def __init__(
        self,
        subscription: Subscription,
        authorise: Callable[[], Awaitable[Group | None]],
        read_feed: Callable[[Group], Awaitable[list[dict[str, Any]]]],
        is_disconnected: Callable[[], Awaitable[bool]],
    ) -> None:
        super().__init__(
            feed_events(subscription, authorise, read_feed, is_disconnected),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
        self.subscription = subscription

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.subscription.close()
