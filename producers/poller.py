"""Per-user pollers: currently-playing for the live feed, recently-played for every play.

Scheduling is adaptive and budgeted:

- While a track plays, currently-playing is read again just after the track should end (from
  its progress and duration), so most track changes cost one read each. Skips and pauses
  cannot be predicted: :attr:`PollerConfig.track_cap_s` bounds how late they are seen. When
  nothing plays it is read every :attr:`PollerConfig.idle_s`, and more rarely once a user has
  been quiet for a while.
- A track change or a stop means a play just finished. recently-played (the authoritative
  record: only it says when a play ended and whether it lasted the 30 s that make it a play)
  is read once several such plays have gathered, soon after playback stops, and in any case
  every :attr:`PollerConfig.recent_max_s`: 50 plays of at least 30 s take 25 minutes, so the
  50-item window can never overflow between two reads.
- recently-played is read from ``cursor - overlap``: Spotify's list lags, and a late item may
  carry an older played_at. Re-sent plays have the same event id, so they are harmless; ids
  published recently by this process are not even re-sent.
- Every Spotify app (client id) has a rolling 30 s budget shared by its users. A 429 pauses only
  that app for its Retry-After; 5xx backs the user off with jitter; a dead refresh token drops
  the user (marked needs_reauth by the client) while the others go on.

Times in :class:`PollerConfig` are Spotify's (virtual) seconds; ``speed`` converts them to real
seconds, which only matters against the simulator running faster than real time.
"""

from __future__ import annotations

import heapq
import logging
import math
import random
import threading
import time
import zlib
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import requests
from prometheus_client import CollectorRegistry, Counter, Gauge

from auxcord.accounts import AccountStore, NotLinked
from auxcord.clients import kafka_producer, mongo_database
from auxcord.errors import AuxcordError, InvalidEvent
from auxcord.events import ListenEvent
from auxcord.names import Topic
from auxcord.ratelimit import RollingWindowLimiter
from auxcord.settings import Settings
from auxcord.spotify import NeedsReauth, RateLimited, SpotifyError, SpotifyUserClient
from auxcord.tokens import TokenCipher
from producers.parse import (
    NOTHING,
    Playback,
    listen_from_play_history,
    now_playing_event,
    playback_from_currently_playing,
    state_change,
)
from producers.state import STALE_AFTER, LeaseStore, PollStateStore

log = logging.getLogger(__name__)

HEALTH_EVERY_S = STALE_AFTER.total_seconds() / 2
"""Real seconds between two health writes from currently-playing reads alone: recently-played
may be read only every twenty minutes, and a user is stale after ten without a good poll."""

_MAX_SLEEP_S = 0.25
"""The poll loop sleeps until the next user is due, but at most this long, so that a stop
request (which cannot wake it) is noticed promptly."""


@dataclass(frozen=True)
class PollerConfig:
    speed: float = 1.0
    idle_s: float = 60.0
    long_idle_s: float = 180.0
    """currently-playing interval once nothing has played for ``long_idle_after_s``."""
    long_idle_after_s: float = 30 * 60.0
    active_s: float = 30.0
    """currently-playing interval while paused, during an ad, or when a track's end cannot be
    predicted; and the naive baseline's fixed interval."""
    track_cap_s: float = 60.0
    """Longest wait between two reads while a track plays: how late a skip or pause is seen."""
    after_end_s: float = 1.0
    """How long after a track's predicted end to look again, for the next one to have begun."""
    between_tracks_s: float = 3.0
    """Nothing playing right after a track: look again this much later before publishing a
    stop, since tracks may be a few seconds apart and a read in the gap is no real stop."""
    recent_max_s: float = 20 * 60.0
    recent_after_stop_s: float = 5.0
    plays_per_read: int = 3
    overlap_s: float = 30 * 60.0
    budget_per_app: int = 150
    workers: int = 32
    """Rounds run at once. They mostly wait on Spotify, Kafka and MongoDB, so a thousand users
    need more threads than cores."""
    users_refresh_s: float = 5.0
    adaptive: bool = True
    """False polls at fixed intervals (``active_s``, ``recent_max_s``): the naive baseline the
    benchmark compares against."""

    def real(self, spotify_seconds: float) -> float:
        return spotify_seconds / self.speed


@dataclass
class UserSchedule:
    next_playing: float = 0.0
    next_recent: float = 0.0
    playback: Playback = NOTHING
    unread_plays: int = 0
    last_heard: float = 0.0
    """When something last played (monotonic), to slow down for long-idle users."""
    errors: int = 0
    recorded_at: float = -math.inf
    """When a good poll was last written to MongoDB (monotonic)."""
    looked_again: bool = False
    """True while a stop seen right after a track waits for its second look."""
    published: OrderedDict[str, None] = field(default_factory=OrderedDict)

    @property
    def due(self) -> float:
        return min(self.next_playing, self.next_recent)


class PollerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter(
            "auxcord_spotify_calls", "Spotify API calls", ["endpoint"], registry=self.registry
        )
        self.published = Counter(
            "auxcord_events_published",
            "Events acknowledged by Kafka",
            ["topic"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "auxcord_spotify_rejected",
            "Malformed Spotify data skipped",
            ["endpoint"],
            registry=self.registry,
        )
        self.errors = Counter(
            "auxcord_poll_errors", "Failed polls", ["kind"], registry=self.registry
        )
        self.users = Gauge("auxcord_users_owned", "Users this poller owns", registry=self.registry)
        self.last_success = Gauge(
            "auxcord_last_poll_success",
            "Unix time of a user's last good poll",
            ["user_id"],
            registry=self.registry,
        )


class AppBudgets:
    """Per-app call budgets over a rolling 30 s, and 429 pauses, shared by the app's users."""

    def __init__(self, budget: int) -> None:
        self._limiter = RollingWindowLimiter(budget)
        self._paused_until: dict[str, float] = {}

    def acquire(self, client_id: str, now: float) -> float:
        """0 if a call may go now (and counts it), else the seconds until the app may call."""
        paused = self._paused_until.get(client_id, 0.0) - now
        if paused > 0:
            return paused
        return self._limiter.admit(client_id, now)

    def pause(self, client_id: str, seconds: float, now: float) -> None:
        self._paused_until[client_id] = max(self._paused_until.get(client_id, 0.0), now + seconds)


class Poller:
    """Polls the users this process holds leases on, until stopped."""

    def __init__(
        self, settings: Settings, config: PollerConfig, owner: str, shard: tuple[int, int] = (0, 1)
    ) -> None:
        self.settings, self.config, self.owner, self.shard = settings, config, owner, shard
        database = mongo_database(settings)
        self.accounts = AccountStore(database, TokenCipher(settings.secret_key_value()))
        self.states = PollStateStore(database)
        self.leases = LeaseStore(database, owner)
        self.budgets = AppBudgets(config.budget_per_app)
        self.metrics = PollerMetrics()
        self.producer = kafka_producer(settings)
        self.schedules: dict[str, UserSchedule] = {}
        self.clients: dict[str, SpotifyUserClient] = {}
        self._session = requests.Session()
        # A pooled connection per worker; with requests' default of ten, the other workers'
        # connections are dropped after each call and opened again.
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=config.workers)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._in_flight: set[str] = set()
        # Users waiting for their next round, by due time (monotonic): the loop sleeps until the
        # first is due instead of scanning every user on a fixed tick.
        self._queue: list[tuple[float, str]] = []
        self._queued: set[str] = set()
        self._wakeup = threading.Event()
        self._lock = threading.Lock()

    # The loop

    def run(self, stop: threading.Event, *, once: bool = False) -> None:
        """Poll until ``stop`` is set; ``once`` does one full round of every owned user."""
        self._refresh_users()
        if once:
            for user_id in list(self.schedules):
                self.poll_playing(user_id)
                self.poll_recent(user_id)
            self.producer.flush()
            return
        next_refresh = time.monotonic() + self.config.users_refresh_s
        with ThreadPoolExecutor(self.config.workers, thread_name_prefix="poll") as pool:
            while not stop.is_set():
                # Cleared before looking, so a round that finishes meanwhile still wakes us.
                self._wakeup.clear()
                now = time.monotonic()
                if now >= next_refresh:
                    self._refresh_users()
                    next_refresh = now + self.config.users_refresh_s
                for user_id in self._take_due(now):
                    pool.submit(self._round, user_id)
                self._wakeup.wait(
                    max(0.0, min(next_refresh, self._next_due(), now + _MAX_SLEEP_S) - now)
                )
        self.producer.flush()
        self.leases.release_all()

    def _enqueue(self, user_id: str) -> None:
        schedule = self.schedules.get(user_id)
        if schedule is None:
            return
        with self._lock:
            if user_id in self._queued or user_id in self._in_flight:
                return
            self._queued.add(user_id)
            heapq.heappush(self._queue, (schedule.due, user_id))
        self._wakeup.set()

    def _take_due(self, now: float) -> list[str]:
        """Users whose round is due, marked in flight; forgotten users are dropped."""
        due: list[str] = []
        with self._lock:
            while self._queue and self._queue[0][0] <= now:
                _, user_id = heapq.heappop(self._queue)
                self._queued.discard(user_id)
                if user_id in self.schedules:
                    self._in_flight.add(user_id)
                    due.append(user_id)
        return due

    def _next_due(self) -> float:
        with self._lock:
            return self._queue[0][0] if self._queue else math.inf

    def _round(self, user_id: str) -> None:
        try:
            now = time.monotonic()
            schedule = self.schedules.get(user_id)
            if schedule is None:
                return
            if now >= schedule.next_playing:
                self.poll_playing(user_id)
            if now >= schedule.next_recent:
                self.poll_recent(user_id)
        except Exception:  # a poller never dies of one user's problem
            log.exception("poll failed", extra={"user_id": user_id})
            self.metrics.errors.labels("unexpected").inc()
            self._back_off(user_id)
        finally:
            with self._lock:
                self._in_flight.discard(user_id)
            self._enqueue(user_id)

    def _refresh_users(self) -> None:
        """Hold leases on a fair share of this shard's active users; forget the rest.

        The share is the users divided by the live pollers: a poller that joins gets users
        released to it, and the users of one that dies are claimed once their leases lapse.
        """
        now = datetime.now(UTC)
        self.leases.heartbeat(now)
        index, count = self.shard
        candidates = [
            a.user_id for a in self.accounts.list_active() if hash_shard(a.user_id, count) == index
        ]
        share = math.ceil(len(candidates) / max(1, self.leases.live_pollers(now)))
        held = self.leases.renew([user for user in candidates if user in self.schedules], now)
        owned: set[str] = set()
        # Users we already poll come first, so a rebalance moves as few as possible.
        for user_id in sorted(candidates, key=lambda user: (user not in held, user)):
            if len(owned) >= share:
                if user_id in held:
                    self.leases.release(user_id)
                continue
            if user_id in held or self.leases.claim(user_id, now):
                owned.add(user_id)
                if user_id not in self.schedules:
                    self.schedules[user_id] = UserSchedule()
                    self._enqueue(user_id)
        for user_id in set(self.schedules) - owned:
            self.schedules.pop(user_id, None)
            self.clients.pop(user_id, None)
        self.metrics.users.set(len(owned))

    def _client(self, user_id: str) -> SpotifyUserClient:
        client = self.clients.get(user_id)
        if client is None:
            client = SpotifyUserClient(self.settings, self.accounts, user_id, self._session)
            self.clients[user_id] = client
        return client

    def _spend(self, user_id: str) -> float:
        """0 if a call may go now, else the (real) seconds until the user's app may call."""
        client = self._client(user_id)
        return self.budgets.acquire(client.client_id, time.monotonic())

    # One endpoint each

    def poll_playing(self, user_id: str) -> None:
        schedule = self.schedules[user_id]
        if wait := self._spend(user_id):
            schedule.next_playing = time.monotonic() + wait
            return
        self.metrics.calls.labels("currently-playing").inc()
        try:
            payload = self._client(user_id).currently_playing()
            current = playback_from_currently_playing(payload)
        except InvalidEvent as exc:
            self._rejected(user_id, "currently-playing", exc.reason)
            schedule.next_playing = time.monotonic() + self.config.real(self.config.active_s)
            return
        except SpotifyError as exc:
            self._failed(user_id, exc)
            return
        now = time.monotonic()
        if self._between_tracks(schedule, current):
            schedule.next_playing = now + self.config.real(self.config.between_tracks_s)
            return
        self._publish_change(user_id, schedule, current)
        if now - schedule.recorded_at > HEALTH_EVERY_S:
            self._record_success(user_id, schedule)
        schedule.playback = current
        if current.is_playing:
            schedule.last_heard = now
        quiet = self.config.speed * (now - schedule.last_heard)
        schedule.next_playing = now + self.config.real(
            playing_interval(self.config, current, quiet)
        )

    def _between_tracks(self, schedule: UserSchedule, current: Playback) -> bool:
        """Whether nothing playing just after a track deserves a second look before a stop.

        Reads land just after a track's predicted end, and the next track may begin a second or
        two later: publishing a stop there, then a start, would flicker the live feed and spend
        a recently-played read on a session that has not ended.
        """
        suspect = (
            self.config.adaptive
            and schedule.playback.is_playing
            and current.item_key is None
            and not schedule.looked_again
        )
        schedule.looked_again = suspect
        return suspect

    def _publish_change(self, user_id: str, schedule: UserSchedule, current: Playback) -> None:
        change = state_change(schedule.playback, current)
        if change is None:
            return
        event = now_playing_event(user_id, change, current, datetime.now(UTC))
        self.producer.send(
            self.settings.topic(Topic.NOW_PLAYING), key=user_id.encode(), value=event.to_json()
        )
        self.metrics.published.labels(Topic.NOW_PLAYING.value).inc()
        if self.config.adaptive and change in ("track_changed", "stopped"):
            # A play just finished: fetch it soon after a session ends, or once several gathered.
            schedule.unread_plays += 1
            soon = change == "stopped" or schedule.unread_plays >= self.config.plays_per_read
            wait = self.config.recent_after_stop_s if soon else self.config.recent_max_s
            schedule.next_recent = min(
                schedule.next_recent, time.monotonic() + self.config.real(wait)
            )

    def poll_recent(self, user_id: str) -> None:
        schedule = self.schedules[user_id]
        cursor = self.states.cursor(user_id)
        after = None if cursor is None else max(0, cursor - int(self.config.overlap_s * 1000))
        events: list[ListenEvent] = []
        newest = cursor or 0
        while True:
            if wait := self._spend(user_id):
                schedule.next_recent = time.monotonic() + wait
                return
            self.metrics.calls.labels("recently-played").inc()
            try:
                page = self._client(user_id).recently_played(after_ms=after, limit=50)
            except SpotifyError as exc:
                self._failed(user_id, exc)
                return
            items = page.get("items") if isinstance(page, dict) else None
            if not isinstance(items, list):
                self._rejected(user_id, "recently-played", "items missing or not a list")
                break
            for item in items:
                try:
                    event = listen_from_play_history(user_id, item)
                except InvalidEvent as exc:
                    self._rejected(user_id, "recently-played", exc.reason)
                    continue
                events.append(event)
                newest = max(newest, int(event.played_at.timestamp() * 1000))
            # With `after`, Spotify returns the oldest plays after the cursor first: page on.
            if after is None or len(items) < 50 or newest <= after:
                break
            after = newest
        fresh = [e for e in events if e.event_id not in schedule.published]
        futures = [
            self.producer.send(
                self.settings.topic(Topic.LISTENS), key=user_id.encode(), value=e.to_json()
            )
            for e in fresh
        ]
        # Waiting on our own futures, not flush(): flush waits for every thread's records.
        try:
            for future in futures:
                future.get(timeout=30)
        except Exception as exc:
            log.warning(
                "Kafka did not acknowledge; cursor kept",
                extra={"user_id": user_id, "error": str(exc)},
            )
            self.metrics.errors.labels("kafka").inc()
            self._back_off(user_id)
            return
        for event in fresh:
            schedule.published[event.event_id] = None
        while len(schedule.published) > 500:
            schedule.published.popitem(last=False)
        self.metrics.published.labels(Topic.LISTENS.value).inc(len(fresh))
        moment = datetime.now(UTC)
        lag = (moment.timestamp() * 1000 - newest) / 1000 if newest else None
        self._record_success(user_id, schedule, lag_s=lag, cursor_ms=newest or None)
        schedule.unread_plays = 0
        schedule.errors = 0
        # A little earlier than the longest safe wait, at random: users read together (all of
        # them, after a restart) drift apart instead of queueing up every twenty minutes.
        wait = self.config.recent_max_s * random.uniform(0.9, 1.0)  # noqa: S311
        schedule.next_recent = time.monotonic() + self.config.real(wait)

    def _record_success(
        self,
        user_id: str,
        schedule: UserSchedule,
        *,
        lag_s: float | None = None,
        cursor_ms: int | None = None,
    ) -> None:
        now = datetime.now(UTC)
        self.states.record_success(user_id, now, lag_s=lag_s, cursor_ms=cursor_ms)
        self.metrics.last_success.labels(user_id).set(now.timestamp())
        schedule.recorded_at = time.monotonic()

    # Failures

    def _rejected(self, user_id: str, endpoint: str, reason: str) -> None:
        log.warning(
            "skipped malformed Spotify data",
            extra={"user_id": user_id, "endpoint": endpoint, "reason": reason},
        )
        self.metrics.rejected.labels(endpoint).inc()
        self.states.count_rejected(user_id, f"{endpoint}: {reason}")

    def _failed(self, user_id: str, exc: SpotifyError) -> None:
        now = time.monotonic()
        if isinstance(exc, RateLimited):
            self.metrics.errors.labels("rate_limited").inc()
            self.budgets.pause(exc.client_id, exc.retry_after, now)
            return
        if isinstance(exc, NeedsReauth | NotLinked):
            self.metrics.errors.labels("needs_reauth").inc()
            self.schedules.pop(user_id, None)
            self.clients.pop(user_id, None)
            self.states.record_error(user_id, datetime.now(UTC), "needs_reauth")
            return
        self.metrics.errors.labels("spotify").inc()
        self.states.record_error(user_id, datetime.now(UTC), str(exc))
        self._back_off(user_id)

    def _back_off(self, user_id: str) -> None:
        schedule = self.schedules.get(user_id)
        if schedule is None:
            return
        schedule.errors += 1
        delay = min(300.0, 2.0**schedule.errors) * random.uniform(0.5, 1.0)  # noqa: S311
        later = time.monotonic() + self.config.real(delay)
        schedule.next_playing = max(schedule.next_playing, later)
        schedule.next_recent = max(schedule.next_recent, later)


def playing_interval(config: PollerConfig, current: Playback, quiet_s: float) -> float:
    """Spotify seconds until the next currently-playing read, after it showed ``current``.

    ``quiet_s`` is how long (Spotify seconds) nothing has played.
    """
    if not config.adaptive:
        return config.active_s
    if current.item_key is None:
        return config.long_idle_s if quiet_s > config.long_idle_after_s else config.idle_s
    remaining = current.remaining_ms
    if not current.is_playing or remaining is None:
        return config.active_s
    return min(config.track_cap_s, remaining / 1000 + config.after_end_s)


def hash_shard(user_id: str, count: int) -> int:
    """A stable shard for ``user_id`` (Python's hash() changes between processes)."""
    return zlib.crc32(user_id.encode()) % count


def parse_shard(value: str | None) -> tuple[int, int]:
    """``i/N`` as (i, N), with a clear error for anything else."""
    if value is None:
        return (0, 1)
    index, _, count = value.partition("/")
    if not (index.isdigit() and count.isdigit()) or not 0 <= int(index) < int(count):
        raise AuxcordError(f"--shard expects i/N with 0 <= i < N (like 0/2), got {value!r}")
    return (int(index), int(count))
