"""Per-user pollers: the I/O around :mod:`producers.schedule`, which decides every call.

This module holds what the plan must not: threads, leases, MongoDB, Kafka, spotipy and the
clock. :class:`Poller` runs :class:`~producers.schedule.PollEngine` rounds on a thread pool when
each user is due, keeps leases on a fair share of the users (several poller processes split
them), and every :data:`BUDGET_SYNC_S` writes each developer account's calls to
``spotify_budgets`` and reads the other pollers' (a lock is written at once), so a restarted
poller keeps counting its calls and respects a lockout that is still running.

Spotify calls go through one :class:`~auxcord.spotify.SpotifyUserClient` per user, sharing one
HTTP connection pool per app and one in-process token cache. Times in the plan are Spotify
seconds: real seconds times ``speed``, which only differs against a simulator running faster
than real time.
"""

from __future__ import annotations

import heapq
import logging
import math
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import requests
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from auxcord.accounts import AccountStore
from auxcord.clients import kafka_producer, mongo_database
from auxcord.errors import AuxcordError
from auxcord.events import ListenEvent, NowPlayingEvent
from auxcord.gaps import GapCause, GapStore
from auxcord.names import Topic
from auxcord.settings import Settings
from auxcord.spotify import SpotifyUserClient, TokenCache
from auxcord.tokens import TokenCipher
from producers.schedule import AccountBudget, PollEngine, PollerConfig, ReadState
from producers.state import BudgetStore, LeaseStore, PollStateStore

log = logging.getLogger(__name__)

__all__ = ["Poller", "PollerConfig", "PollerMetrics", "hash_shard", "parse_shard"]

_MAX_SLEEP_S = 0.25
"""The poll loop sleeps until the next user is due, but at most this long, so that a stop
request (which cannot wake it) is noticed promptly."""

BUDGET_SYNC_S = 30.0
"""Real seconds between two writes of the accounts' calls to ``spotify_budgets``."""


class PollerMetrics:
    """The poller's own Prometheus registry (served on ``AUXCORD_POLLER_METRICS_PORT``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter(
            "auxcord_spotify_calls", "Spotify API calls", ["endpoint"], registry=self.registry
        )
        self.published_events = Counter(
            "auxcord_events_published",
            "Events acknowledged by Kafka",
            ["topic"],
            registry=self.registry,
        )
        self.rejected_data = Counter(
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
        account = ["account"]
        self.calls_24h = Gauge(
            "auxcord_spotify_calls_24h",
            "Spotify calls of a developer account in the last 24 h (every poller's)",
            account,
            registry=self.registry,
        )
        self.budget = Gauge(
            "auxcord_spotify_daily_budget",
            "Calls per rolling 24 h the pollers allow a developer account",
            account,
            registry=self.registry,
        )
        self.locked_until = Gauge(
            "auxcord_spotify_locked_until",
            "Unix time a QUOTA_EXCEEDED lockout of the account ends (0: not locked)",
            account,
            registry=self.registry,
        )
        self.exhaustion = Gauge(
            "auxcord_spotify_budget_exhaustion",
            "Unix time the budget runs out at the last hour's rate (0: it lasts the day)",
            account,
            registry=self.registry,
        )
        self.round_lateness = Histogram(
            "auxcord_poll_round_lateness_seconds",
            "Real seconds from a user's round being due to its start: a poller that cannot keep "
            "up with its users shows here before their plays are late",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=self.registry,
        )

    # producers.schedule.Observer

    def call(self, endpoint: str, calls: int) -> None:
        self.calls.labels(endpoint).inc(calls)

    def published(self, topic: str, count: int) -> None:
        self.published_events.labels(topic).inc(count)

    def rejected(self, endpoint: str) -> None:
        self.rejected_data.labels(endpoint).inc()

    def error(self, kind: str) -> None:
        self.errors.labels(kind).inc()


class SpeedClock:
    """Spotify seconds: the wall clock times the poller's speed."""

    def __init__(self, speed: float) -> None:
        self.speed = speed

    def now(self) -> float:
        return time.time() * self.speed


class SpotifyClients:
    """The plan's Spotify port: one client per user, one connection pool per app, one token
    cache for the process."""

    def __init__(self, settings: Settings, accounts: AccountStore, pool_size: int) -> None:
        self.settings, self.accounts, self.pool_size = settings, accounts, pool_size
        self.tokens = TokenCache(accounts)
        self._sessions: dict[str, requests.Session] = {}
        self._clients: dict[str, SpotifyUserClient] = {}
        self._lock = threading.Lock()

    def _session(self, client_id: str) -> requests.Session:
        with self._lock:
            session = self._sessions.get(client_id)
            if session is None:
                session = self._sessions[client_id] = requests.Session()
                # A pooled connection per worker; with requests' default of ten, the other
                # workers' connections would be dropped after each call and opened again.
                adapter = requests.adapters.HTTPAdapter(pool_maxsize=self.pool_size)
                session.mount("http://", adapter)
                session.mount("https://", adapter)
            return session

    def client(self, user_id: str) -> SpotifyUserClient:
        client = self._clients.get(user_id)
        if client is None:
            account = self.accounts.get(user_id)
            session = self._session(account.client_id) if account else None
            client = SpotifyUserClient(self.settings, self.accounts, user_id, session, self.tokens)
            self._clients[user_id] = client
        return client

    def forget(self, user_id: str) -> None:
        self._clients.pop(user_id, None)
        self.tokens.forget(user_id)

    def client_of(self, user_id: str) -> str:
        return self.client(user_id).client_id

    def refresh_due(self, user_id: str) -> bool:
        return self.client(user_id).refresh_due()

    def currently_playing(self, user_id: str) -> dict[str, Any] | None:
        return self.client(user_id).currently_playing()

    def recently_played(self, user_id: str, after_ms: int | None) -> dict[str, Any]:
        return self.client(user_id).recently_played(after_ms=after_ms, limit=50)


class KafkaSink:
    """The plan's event sink: now-playing sent without waiting, plays acknowledged."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = kafka_producer(settings)

    def now_playing(self, user_id: str, event: NowPlayingEvent) -> None:
        topic = self.settings.topic(Topic.NOW_PLAYING)
        self.producer.send(topic, key=user_id.encode(), value=event.to_json())

    def listens(self, user_id: str, events: list[ListenEvent]) -> None:
        topic = self.settings.topic(Topic.LISTENS)
        futures = [
            self.producer.send(topic, key=user_id.encode(), value=event.to_json())
            for event in events
        ]
        # Waiting on our own futures, not flush(): flush waits for every thread's records.
        for future in futures:
            future.get(timeout=30)


class StoredState:
    """The plan's state port: ``poll_state`` and ``gaps``, with Spotify seconds converted."""

    def __init__(
        self, states: PollStateStore, gaps: GapStore, metrics: PollerMetrics, speed: float
    ) -> None:
        self.states, self.gaps, self.metrics, self.speed = states, gaps, metrics, speed

    def read_state(self, user_id: str) -> ReadState:
        reads = self.states.reads(user_id)
        read_at = reads.read_at.timestamp() * self.speed if reads.read_at else None
        return ReadState(reads.cursor_ms, read_at, reads.needs_reauth)

    def record_success(
        self, user_id: str, *, lag_s: float | None, cursor_ms: int | None, read_at: float | None
    ) -> None:
        now = datetime.now(UTC)
        self.states.record_success(
            user_id, now, lag_s=lag_s, cursor_ms=cursor_ms, recent_read=read_at is not None
        )
        self.metrics.last_success.labels(user_id).set(now.timestamp())

    def record_error(self, user_id: str, error: str) -> None:
        self.states.record_error(user_id, datetime.now(UTC), error)

    def count_rejected(self, user_id: str, reason: str) -> None:
        self.states.count_rejected(user_id, reason)

    def record_gap(self, user_id: str, start_ms: int, end_ms: int, cause: GapCause) -> None:
        self.gaps.record(
            user_id,
            start=datetime.fromtimestamp(start_ms / 1000, UTC),
            end=datetime.fromtimestamp(end_ms / 1000, UTC),
            cause=cause,
            now=datetime.now(UTC),
        )


class Poller:
    """Polls the users this process holds leases on, until stopped."""

    def __init__(
        self, settings: Settings, config: PollerConfig, owner: str, shard: tuple[int, int] = (0, 1)
    ) -> None:
        self.settings, self.config, self.owner, self.shard = settings, config, owner, shard
        database = mongo_database(settings)
        self.accounts = AccountStore(database, TokenCipher(settings.secret_key_value()))
        self.leases = LeaseStore(database, owner)
        self.budget_store = BudgetStore(database, owner)
        gaps = GapStore(database)
        gaps.ensure_indexes()
        self.metrics = PollerMetrics()
        self.spotify = SpotifyClients(settings, self.accounts, config.workers)
        self.sink = KafkaSink(settings)
        self.clock = SpeedClock(config.speed)
        self.engine = PollEngine(
            config,
            spotify=self.spotify,
            sink=self.sink,
            state=StoredState(PollStateStore(database), gaps, self.metrics, config.speed),
            clock=self.clock,
            observer=self.metrics,
            account_of=settings.developer_account_of,
        )
        self._loaded: set[str] = set()
        self._written_locks: dict[str, float | None] = {}
        self._in_flight: set[str] = set()
        # Users waiting for their next round, by due time (Spotify seconds): the loop sleeps
        # until the first is due instead of scanning every user on a fixed tick.
        self._queue: list[tuple[float, str]] = []
        self._queued: set[str] = set()
        self._wakeup = threading.Event()
        self._lock = threading.Lock()

    # The loop

    def run(self, stop: threading.Event, *, once: bool = False) -> None:
        """Poll until ``stop`` is set; ``once`` does one full round of every owned user."""
        self._refresh_users()
        if once:
            for user_id in list(self.engine.plans):
                try:
                    self.engine.poll_playing(user_id)
                    if user_id in self.engine.plans:
                        self.engine.poll_recent(user_id)
                except Exception:  # one user's problem ends neither the round nor the process
                    log.exception("poll failed", extra={"user_id": user_id})
            self.sink.producer.flush()
            self.sync_budgets()
            return
        # Leases and budgets go to MongoDB on a thread of their own: with a thousand users a
        # refresh takes long enough that rounds waiting behind it would start seconds late.
        halted = threading.Event()
        failures: list[BaseException] = []
        keeper = threading.Thread(
            target=self._keep_house, args=(stop, halted, failures), name="poll-housekeeping"
        )
        keeper.start()
        try:
            with ThreadPoolExecutor(self.config.workers, thread_name_prefix="poll") as pool:
                while not (stop.is_set() or halted.is_set()):
                    # Cleared before looking, so a round that finishes meanwhile still wakes us.
                    self._wakeup.clear()
                    for user_id in self._take_due(self.clock.now()):
                        pool.submit(self._round, user_id)
                    until_due = (self._next_due() - self.clock.now()) / self.config.speed
                    self._wakeup.wait(max(0.0, min(until_due, _MAX_SLEEP_S)))
        finally:
            halted.set()
            keeper.join()
        if failures:
            raise failures[0]
        self.sink.producer.flush()
        self.sync_budgets()
        self.leases.release_all()

    def _keep_house(
        self, stop: threading.Event, halted: threading.Event, failures: list[BaseException]
    ) -> None:
        """Refresh the leases every ``users_refresh_s`` and sync the budgets every
        ``BUDGET_SYNC_S`` (at once when a lockout begins), until stopped; a failure stops the
        loop too, and :meth:`run` raises it, as it did when this ran on the loop's thread."""
        next_refresh = time.monotonic() + self.config.users_refresh_s
        next_sync = time.monotonic() + BUDGET_SYNC_S
        try:
            while not (stop.is_set() or halted.is_set()):
                now = time.monotonic()
                if now >= next_refresh:
                    self._refresh_users()
                    next_refresh = now + self.config.users_refresh_s
                if now >= next_sync or self._lock_changed():
                    self.sync_budgets()
                    next_sync = now + BUDGET_SYNC_S
                until_next = min(next_refresh, next_sync) - time.monotonic()
                halted.wait(min(max(0.0, until_next), _MAX_SLEEP_S))
        except BaseException as exc:
            failures.append(exc)
        finally:
            halted.set()
            self._wakeup.set()

    def _enqueue(self, user_id: str) -> None:
        plan = self.engine.plans.get(user_id)
        if plan is None:
            return
        with self._lock:
            if user_id in self._queued or user_id in self._in_flight:
                return
            self._queued.add(user_id)
            heapq.heappush(self._queue, (plan.due, user_id))
        self._wakeup.set()

    def _take_due(self, now: float) -> list[str]:
        """Users whose round is due, marked in flight; forgotten users are dropped."""
        due: list[str] = []
        with self._lock:
            while self._queue and self._queue[0][0] <= now:
                due_at, user_id = heapq.heappop(self._queue)
                if due_at > 0:  # a new user's first round is due at once, not late
                    self.metrics.round_lateness.observe((now - due_at) / self.config.speed)
                self._queued.discard(user_id)
                if user_id in self.engine.plans:
                    self._in_flight.add(user_id)
                    due.append(user_id)
        return due

    def _next_due(self) -> float:
        with self._lock:
            return self._queue[0][0] if self._queue else math.inf

    def _round(self, user_id: str) -> None:
        try:
            self.engine.round(user_id)
        except Exception:  # a poller never dies of one user's problem
            log.exception("poll failed", extra={"user_id": user_id})
            self.metrics.errors.labels("unexpected").inc()
            self.engine.back_off(user_id)
        finally:
            with self._lock:
                self._in_flight.discard(user_id)
            if user_id not in self.engine.plans:
                self.spotify.forget(user_id)
            self._enqueue(user_id)

    def _refresh_users(self) -> None:
        """Hold leases on a fair share of this shard's active users; forget the rest.

        The share is the users divided by the live pollers: a poller that joins gets users
        released to it, and the users of one that dies are claimed once their leases lapse.
        Each account's budget is paced to this poller's share of the account's users.
        """
        now = datetime.now(UTC)
        self.leases.heartbeat(now)
        index, count = self.shard
        active = self.accounts.list_active()
        candidates = [a.user_id for a in active if hash_shard(a.user_id, count) == index]
        share = math.ceil(len(candidates) / max(1, self.leases.live_pollers(now)))
        held = self.leases.renew([user for user in candidates if user in self.engine.plans], now)
        owned: set[str] = set()
        # Users we already poll come first, so a rebalance moves as few as possible.
        for user_id in sorted(candidates, key=lambda user: (user not in held, user)):
            if len(owned) >= share:
                if user_id in held:
                    self.leases.release(user_id)
                continue
            if user_id in held or self.leases.claim(user_id, now):
                owned.add(user_id)
                if user_id not in self.engine.plans:
                    self._add_user(user_id)
        for user_id in set(self.engine.plans) - owned:
            self.engine.drop_user(user_id)
            self.spotify.forget(user_id)
        self.metrics.users.set(len(owned))
        users_of: dict[str, int] = {}
        for linked in active:
            account = self.settings.developer_account_of(linked.client_id)
            users_of[account] = users_of.get(account, 0) + 1
        for account, budget in self.engine.budgets.items():
            budget.share = min(1.0, budget.users / max(1, users_of.get(account, 1)))

    def _add_user(self, user_id: str) -> None:
        account = self.settings.developer_account_of(self.spotify.client_of(user_id))
        budget = self.engine.budget(account)
        if account not in self._loaded:
            self._load_budget(budget)
        self.engine.add_user(user_id)
        self._enqueue(user_id)

    # Budgets in MongoDB

    def _load_budget(self, budget: AccountBudget) -> None:
        """A restarted poller's own calls and a lockout still running (by any poller)."""
        stored = self.budget_store.load(budget.account_id)
        now = self.clock.now()
        budget.seed(stored.own_hours, now)
        budget.set_others(self._other_calls(stored.others))
        if stored.locked_until is not None:
            until = stored.locked_until.timestamp() * self.config.speed
            if until > now and budget.lock(now, until, stored.lock_reason or "QUOTA_EXCEEDED"):
                log.warning(
                    "developer account still locked out; no call until the lock ends",
                    extra={
                        "account_id": budget.account_id,
                        "until": stored.locked_until.isoformat(),
                    },
                )
        self._written_locks[budget.account_id] = budget.locked_until
        self._loaded.add(budget.account_id)

    @staticmethod
    def _other_calls(hours: list[tuple[int, int]]) -> list[tuple[float, int]]:
        # Counted at the end of their hour: they leave the window no earlier than they should.
        return [((hour + 1) * 3600.0, count) for hour, count in hours]

    def _lock_changed(self) -> bool:
        return any(
            self._written_locks.get(account) != budget.locked_until
            for account, budget in self.engine.budgets.items()
        )

    def sync_budgets(self) -> None:
        """Write each account's figures and this poller's hours; read the other pollers'."""
        now = self.clock.now()
        wall = datetime.now(UTC)
        for account, budget in list(self.engine.budgets.items()):
            stored = self.budget_store.load(account)
            budget.set_others(self._other_calls(stored.others))
            if stored.locked_until is not None:
                until = stored.locked_until.timestamp() * self.config.speed
                if until > now:
                    budget.lock(now, until, stored.lock_reason or "QUOTA_EXCEEDED")
            snapshot = budget.snapshot(now)
            self.budget_store.save(
                account,
                client_ids=[
                    app.client_id for app in self.settings.spotify_apps if app.account_id == account
                ]
                or [account],
                budget=snapshot.budget,
                calls_24h=snapshot.calls_24h,
                refused_24h=snapshot.refused_24h,
                locked_until=self._wall(snapshot.locked_until),
                lock_reason=snapshot.lock_reason,
                projected_exhaustion_at=self._wall(snapshot.projected_exhaustion),
                own_hours=snapshot.hours,
                now=wall,
            )
            self._written_locks[account] = budget.locked_until
            self.metrics.calls_24h.labels(account).set(snapshot.calls_24h)
            self.metrics.budget.labels(account).set(snapshot.budget)
            locked = self._wall(snapshot.locked_until)
            self.metrics.locked_until.labels(account).set(locked.timestamp() if locked else 0)
            exhaustion = self._wall(snapshot.projected_exhaustion)
            self.metrics.exhaustion.labels(account).set(exhaustion.timestamp() if exhaustion else 0)

    def _wall(self, spotify_seconds: float | None) -> datetime | None:
        if spotify_seconds is None:
            return None
        return datetime.fromtimestamp(spotify_seconds / self.config.speed, UTC)


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
