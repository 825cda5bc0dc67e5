"""The live "listening now" feed: MongoDB tells us when ``now_playing`` changes, and every open
feed re-reads its group and pushes the new state to the browser as a Server-Sent Event.

One background thread per app watches the collection with a change stream (milliseconds after the
streaming job's write). Where the server offers no change streams (a standalone mongod), the thread
falls back to polling the newest ``observed_at`` every second. Either way the thread only says
"something changed"; each connection then reads its own group's few documents by ``_id``, so a
change stream never has to be filtered per group and a member never sees another group's data.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import OperationFailure, PyMongoError

log = logging.getLogger(__name__)

POLL_FALLBACK_S = 1.0
KEEPALIVE_S = 15.0


class ChangeSignal:
    """Wakes every waiting feed when the watched collection changes."""

    def __init__(self, collection: Collection[dict[str, Any]]) -> None:
        self._collection = collection
        self._stop = threading.Event()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.mode = "starting"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="now-playing-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._notify()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    async def wait(self, timeout: float) -> None:
        """Return at the next change, or after ``timeout`` seconds."""
        event = asyncio.Event()
        waiter = (asyncio.get_running_loop(), event)
        with self._lock:
            self._waiters.add(waiter)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiters.discard(waiter)

    def _notify(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

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
                if changes.try_next() is not None:
                    self._notify()

    def _poll(self) -> None:
        self.mode = "polling"
        seen: Any = None
        while not self._stop.wait(POLL_FALLBACK_S):
            newest = self._collection.find_one({}, {"observed_at": 1}, sort=[("observed_at", -1)])
            marker = (newest or {}).get("observed_at"), self._collection.estimated_document_count()
            if marker != seen:
                seen = marker
                self._notify()


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def to_json(value: object) -> str:
    return json.dumps(value, default=_json_default, separators=(",", ":"))


async def feed_events(
    signal: ChangeSignal,
    read_feed: Callable[[], Any],
    is_disconnected: Callable[[], Any],
) -> AsyncIterator[str]:
    """Server-Sent Events for one open feed: the feed now, then again whenever it changes.

    ``read_feed`` is awaited (it runs the blocking MongoDB read off the event loop). States also
    change without a write, when a track's time runs out, so each wait ends at the soonest
    expiry too.
    """
    last = None
    while not signal.stopped and not await is_disconnected():
        feed = await read_feed()
        payload = to_json(feed)
        if payload != last:
            last = payload
            yield f"event: feed\ndata: {payload}\n\n"
        else:
            yield ": keepalive\n\n"
        now = datetime.now(UTC)
        expiries = [item["expires_at"] for item in feed if item.get("expires_at")]
        until_expiry = min(((e - now).total_seconds() for e in expiries), default=KEEPALIVE_S)
        await signal.wait(max(0.2, min(KEEPALIVE_S, until_expiry + 0.1)))
