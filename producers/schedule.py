"""What to ask Spotify for, for whom, and when: the pollers' decisions, without their I/O.

Spotify gives each development-mode developer account an unpublished number of calls per rolling
24 hours (other projects were refused after 1,100 to 2,600) and refuses the account for 13 to 22
hours past it. So every call of an account is planned against a daily budget
(``AUXCORD_SPOTIFY_DAILY_BUDGET``), in this order:

1. **Completeness.** recently-played holds the last 50 plays, and 50 plays of at least 30 s take
   25 minutes. A stopped player accrues no plays, so what must be bounded is the time the player
   *may* have been playing since the last recently-played read: every interval between two
   currently-playing reads counts when either end saw something playing (the player may have
   run all of it). recently-played is read before that reaches :attr:`PollerConfig.safe_window_s`
   (25 minutes less a margin for late rounds), and an idle user is probed often enough that a
   session starting just after a probe is noticed before it could fill the window. These reads
   are *essential*: only the hard 24 h limit or a lockout holds them back.
2. **The live feed.** While something plays, currently-playing is read just after the track
   should end (one read per natural track change), a little after a new track began (early skips
   are the commonest unpredicted change), and at most every :attr:`PollerConfig.track_cap_s`.
   These reads are *live*: they spend only what the pacing allows, so friends listening now get
   what is left after completeness.
3. **Pacing.** Each account has a token bucket refilled at budget / 24 h with a capped burst, and
   a hard rolling 24 h log that never lets the calls pass the budget. Live reads need a token and
   leave a reserve of the budget to essential ones; when the bucket runs low, idle probes and
   live caps stretch (up to :attr:`PollerConfig.max_stretch` times), so the budget lasts the day.

A ``QUOTA_EXCEEDED`` 429 locks the whole account until its Retry-After: no call of any of its
users goes out before then (a short 429 pauses only the app for its Retry-After). If plays were
lost anyway (the first recently-played page is full and its oldest play is newer than the
cursor), the span is recorded as a gap with its likely cause.

Everything here runs on an injected :class:`Clock` and talks to Spotify, Kafka and the state
store through the small protocols below, so the policy is unit-tested over simulated weeks in
milliseconds (tests/producers/test_schedule.py); :mod:`producers.poller` is the I/O shell.
Times are Spotify seconds (the simulator's virtual seconds when it runs faster than real time).
"""

from __future__ import annotations

import bisect
import logging
import math
import random
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from auxcord.accounts import NotLinked
from auxcord.errors import InvalidEvent
from auxcord.events import ListenEvent, NowPlayingEvent
from auxcord.gaps import GapCause
from auxcord.ratelimit import RollingWindowLimiter
from auxcord.spotify import NeedsReauth, QuotaExceeded, RateLimited, SpotifyError
from producers.parse import (
    NOTHING,
    Playback,
    listen_from_play_history,
    now_playing_event,
    playback_from_currently_playing,
    state_change,
)

log = logging.getLogger(__name__)

DAY_S = 24 * 3600.0
PAGE = 50
"""recently-played's page size, and the number of plays it holds at all."""


# Interfaces


class Clock(Protocol):
    def now(self) -> float:
        """Spotify seconds since the Unix epoch (real seconds times the poller's speed)."""
        ...


class SpotifyPort(Protocol):
    """The Spotify calls the plan makes, for one user each; errors are :mod:`auxcord.spotify`'s."""

    def client_of(self, user_id: str) -> str: ...

    def refresh_due(self, user_id: str) -> bool:
        """Whether a call for ``user_id`` now would first refresh the access token."""
        ...

    def currently_playing(self, user_id: str) -> dict[str, Any] | None: ...

    def recently_played(self, user_id: str, after_ms: int | None) -> dict[str, Any]: ...


class EventSink(Protocol):
    """Kafka: now-playing changes (fire and forget) and plays (acknowledged, or raises)."""

    def now_playing(self, user_id: str, event: NowPlayingEvent) -> None: ...

    def listens(self, user_id: str, events: list[ListenEvent]) -> None: ...


@dataclass(frozen=True)
class ReadState:
    """What the state store knows about a user's reads, across poller restarts."""

    cursor_ms: int | None
    """played_at (Unix ms) of the newest play already safely on Kafka."""
    read_at: float | None
    """When recently-played was last read successfully (Spotify seconds)."""
    needs_reauth: bool
    """The user's sign-in expired since that read (they have linked again since)."""


class StatePort(Protocol):
    def read_state(self, user_id: str) -> ReadState: ...

    def record_success(
        self, user_id: str, *, lag_s: float | None, cursor_ms: int | None, read_at: float | None
    ) -> None: ...

    def record_error(self, user_id: str, error: str) -> None: ...

    def count_rejected(self, user_id: str, reason: str) -> None: ...

    def record_gap(self, user_id: str, start_ms: int, end_ms: int, cause: GapCause) -> None: ...


class Observer(Protocol):
    """Counters (the poller's Prometheus metrics; plain counts in tests)."""

    def call(self, endpoint: str, calls: int) -> None: ...

    def published(self, topic: str, count: int) -> None: ...

    def rejected(self, endpoint: str) -> None: ...

    def error(self, kind: str) -> None: ...


class AccountOf(Protocol):
    def __call__(self, client_id: str) -> str: ...


# Configuration


@dataclass(frozen=True)
class PollerConfig:
    speed: float = 1.0
    """Spotify seconds per real second (Retry-After and token lifetimes are real seconds)."""
    daily_budget: int = 800
    window_s: float = 25 * 60.0
    """How long 50 plays of 30 s take: the longest the player may run between two reads."""
    margin_s: float = 3 * 60.0
    """Taken off ``window_s`` for rounds that start late and for the time a read takes."""
    idle_s: float = 20 * 60.0
    """currently-playing interval while nothing plays: session starts are seen within it. Idle
    probes are most of an account's essential calls (72 a user a day), so they are as rare as
    the session-start target (20 minutes) allows; the window would allow 22."""
    idle_surplus_s: float = 60.0
    """Idle interval while the account's live bucket is nearly full: a surplus the budget does
    not need (a quiet night, a generous budget) is spent on seeing session starts sooner."""
    idle_recent_s: float = 6 * 3600.0
    """recently-played at least this often even while idle: a session short enough to fall
    between two probes is still read while its plays are in the window."""
    short_track_s: float = 60.0
    """A user seen playing tracks shorter than this may binge them, and a probe of their idle
    player that falls in the second between two such tracks sees nothing playing: the 20
    minutes before it would count as idle, and up to 80 plays could go by unread. Their idle
    player is watched through recently-played instead, which lists every play whatever the
    probe's timing, for the same number of calls (a session is then seen once its first track
    has ended: 30 s for such tracks)."""
    short_memory_s: float = 7 * DAY_S
    """How long one short track keeps a user's idle player watched through recently-played."""
    skip_check_s: float = 55.0
    """First look after a new track began: skips before 30 s (not even a play) are the commonest
    change a track's length cannot predict, and the track after one is then seen within 55 s."""
    track_cap_s: float = 90.0
    """Longest wait between two reads while a track plays (later skips, pauses), on pace."""
    paused_s: float = 120.0
    """currently-playing interval while paused, during an ad, or with no predictable end."""
    after_end_s: float = 1.0
    between_tracks_s: float = 3.0
    """Nothing playing right after a track: look again this much later before calling it a
    stop (tracks are a few seconds apart, and a stop then a start would flicker the feed)."""
    recent_after_stop_s: float = 60.0
    """recently-played this long after a session stops: its plays reach the stats soon, and the
    next session starts with the whole window for itself."""
    overlap_s: float = 10 * 60.0
    """recently-played is read from ``cursor - overlap``: the list lags, and a late item may
    carry an older played_at (re-sent plays have the same event id, so they are harmless)."""
    max_stretch: float = 4.0
    burst_share: float = 0.3
    """The live bucket's capacity as a share of the day's live allowance: an evening's
    listening at full freshness before the pace slows it down."""
    user_live_per_hour: float = 75.0
    """Live reads one user may make per hour, on pace (two or three per track of a normal
    length): a friend bingeing 30 s tracks cannot take the whole account's live budget."""
    user_live_burst: float = 25.0
    essential_share: float = 0.15
    """Margin on the essential reserve: the essential calls of the last 24 h, plus this share."""
    refreshes_count: bool = True
    """Count token refreshes against the budget: whether Spotify's quota counts the accounts
    service is unknown (the simulator counts them), and spotipy refreshes hourly."""
    app_budget_30s: int = 150
    """Calls per app per rolling 30 s: Spotify's short rate limit, kept well under."""
    workers: int = 32
    """Rounds run at once. They mostly wait on Spotify, Kafka and MongoDB, so a thousand users
    need more threads than cores."""
    users_refresh_s: float = 5.0
    """Real seconds between two looks at the linked users and the leases."""
    health_every_s: float = 300.0
    """Real seconds between two health writes from currently-playing reads alone."""
    adaptive: bool = True
    """False polls at fixed intervals with no daily budget: the naive baseline."""
    active_s: float = 30.0
    naive_recent_s: float = 20 * 60.0

    @property
    def safe_window_s(self) -> float:
        return self.window_s - self.margin_s


# The per-account budget


@dataclass(frozen=True)
class BudgetSnapshot:
    """One account's figures, as ``spotify_budgets`` and ``/metrics`` show them."""

    account_id: str
    budget: int
    calls_24h: int
    own_calls_24h: int
    refused_24h: int
    locked_until: float | None
    lock_reason: str | None
    projected_exhaustion: float | None
    hours: dict[int, int]
    """This process's calls per Spotify hour (hour index since the epoch) in the window."""


class AccountBudget:
    """One developer account's calls: a rolling 24 h log, a pacing bucket and its lockouts.

    Essential calls (the ones completeness needs) may use the whole budget. Live calls may use
    what the essential ones will not: the budget less the essential calls of the last 24 h (or,
    before a day has passed, an estimate from the users polled) plus a margin, so however much
    a busy evening spends on the live feed, the probes and reads that guard the window always
    have room. A token bucket refilled at that live allowance per day spreads the live spending
    over the day, and its fill sets how far optional intervals stretch.

    ``share`` is the part of the account's budget this process may pace itself to (its share of
    the account's users, when several pollers split them). Other pollers' calls, read from
    MongoDB, count in both limits through :meth:`set_others`.
    """

    def __init__(self, account_id: str, config: PollerConfig, now: float) -> None:
        self.account_id, self.config = account_id, config
        self.budget = config.daily_budget
        self.share = 1.0
        self.users = 1
        """Users of the account this process polls: the essential estimate's basis."""
        self._live: deque[float] = deque()
        self._essential: deque[float] = deque()
        self._others: list[tuple[float, int]] = []
        self._refused: deque[float] = deque()
        self._since = self._refilled_at = now
        self.tokens = self.capacity
        self.locked_until: float | None = None
        self.lock_reason: str | None = None
        self._blocked: deque[tuple[float, float]] = deque(maxlen=64)
        self._lock = threading.Lock()

    def essential_reserve(self) -> float:
        """Calls kept for essential reads over the coming 24 h: as many as the last 24 h took
        (an estimate from the users until a day has been seen), plus a margin."""
        config = self.config
        per_user = DAY_S / config.idle_s + DAY_S / config.idle_recent_s
        if config.refreshes_count:
            per_user += DAY_S / 3600
        estimate = self.users * per_user
        seen = len(self._essential)
        # Until a whole day was seen, the log shows only part of a day's essentials.
        expected = seen if self._since <= self._refilled_at - DAY_S else max(seen, estimate)
        return min(self.budget * self.share, expected * (1 + config.essential_share))

    @property
    def live_allowance(self) -> float:
        return max(0.0, self.share * self.budget - self.essential_reserve())

    @property
    def rate(self) -> float:
        return max(self.live_allowance, 1.0) / DAY_S

    @property
    def capacity(self) -> float:
        return max(2.0, self.live_allowance * self.config.burst_share)

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self._refilled_at) * self.rate)
        self._refilled_at = max(self._refilled_at, now)

    def _prune(self, now: float) -> None:
        for log in (self._live, self._essential, self._refused):
            while log and log[0] <= now - DAY_S:
                log.popleft()

    def _others_count(self, now: float) -> int:
        return sum(count for at, count in self._others if at > now - DAY_S)

    def calls_24h(self, now: float) -> int:
        with self._lock:
            self._prune(now)
            return len(self._live) + len(self._essential) + self._others_count(now)

    def spend(self, now: float, calls: int, *, essential: bool) -> float:
        """0 if ``calls`` may go now (and counts them), else the seconds until they may."""
        with self._lock:
            if self.locked_until is not None and now < self.locked_until:
                return self.locked_until - now
            self._refill(now)
            self._prune(now)
            others = self._others_count(now)
            if essential:
                excess = len(self._live) + len(self._essential) + others + calls - self.budget
                if excess > 0:
                    wait = self._until_leaving(now, excess)
                    # Our own budget is spent: as good as a lockout for the plays at risk.
                    self._blocked.append((now, now + wait))
                    return wait
                self._essential.extend([now] * calls)
                return 0.0
            if len(self._live) + others + calls > self.live_allowance:
                return max(60.0, self._until_leaving(now, 1))
            if self.tokens < calls:
                return (calls - self.tokens) / self.rate
            self.tokens -= calls
            self._live.extend([now] * calls)
            return 0.0

    def _until_leaving(self, now: float, count: int) -> float:
        """Seconds until ``count`` calls have left the window (own calls known to the second,
        others' conservatively at the end of their hour)."""
        times = sorted(
            [*self._live, *self._essential, *(at for at, n in self._others for _ in range(n))]
        )
        if count <= len(times):
            return max(1.0, times[count - 1] + DAY_S - now)
        return 3600.0

    def refused(self, now: float) -> None:
        with self._lock:
            self._refused.append(now)

    def lock(self, now: float, until: float, reason: str) -> bool:
        """Refuse every call until ``until``; True if that is news (a new or longer lock)."""
        with self._lock:
            if self.locked_until is not None and until <= self.locked_until:
                return False
            self.locked_until, self.lock_reason = until, reason
            self._blocked.append((now, until))
            return True

    def blocked_between(self, start: float, end: float) -> bool:
        """Whether the account was locked (or its budget spent) at any time in (start, end)."""
        with self._lock:
            periods = list(self._blocked)
        return any(a < end and b > start for a, b in periods)

    def surplus(self, now: float) -> bool:
        """Whether live reads go unused: the bucket nearly full, and under half the day's live
        allowance spent (early probes must not take what sessions will need)."""
        with self._lock:
            self._refill(now)
            self._prune(now)
            spent = len(self._live) + self._others_count(now)
            return self.tokens >= 0.9 * self.capacity and spent <= 0.5 * self.live_allowance

    def stretch(self, now: float) -> float:
        """How much to stretch optional intervals: 1 while the bucket is at least half full,
        up to ``max_stretch`` as it empties."""
        with self._lock:
            self._refill(now)
            fill = self.tokens / self.capacity
        top = self.config.max_stretch
        return 1.0 if fill >= 0.5 else min(top, 0.5 / max(fill, 0.5 / top))

    def set_others(self, calls: list[tuple[float, int]]) -> None:
        """Other pollers' calls of this account, as (time, count), from MongoDB."""
        with self._lock:
            self._others = list(calls)

    def seed(self, hours: dict[int, int], now: float) -> None:
        """This poller's calls before a restart, per Spotify hour, counted at each hour's end
        (later than they were made, so they leave the window late: conservative). They count as
        essential: the live allowance then starts small and grows as they age out."""
        with self._lock:
            restored = [
                min(now, (hour + 1) * 3600.0 - 1)
                for hour, count in hours.items()
                for _ in range(count)
            ]
            self._essential = deque(sorted([*restored, *self._essential]))

    def snapshot(self, now: float) -> BudgetSnapshot:
        with self._lock:
            self._prune(now)
            own = sorted([*self._live, *self._essential])
            others = [(at, n) for at, n in self._others if at > now - DAY_S]
            refused = len(self._refused)
        hours: dict[int, int] = {}
        for at in own:
            hours[int(at // 3600)] = hours.get(int(at // 3600), 0) + 1
        locked = self.locked_until if self.locked_until and self.locked_until > now else None
        return BudgetSnapshot(
            account_id=self.account_id,
            budget=self.budget,
            calls_24h=len(own) + sum(n for _, n in others),
            own_calls_24h=len(own),
            refused_24h=refused,
            locked_until=locked,
            lock_reason=self.lock_reason if locked else None,
            projected_exhaustion=projected_exhaustion(own, others, self.budget, now),
            hours=hours,
        )


def projected_exhaustion(
    own: list[float], others: list[tuple[float, int]], budget: int, now: float
) -> float | None:
    """When the calls in the rolling 24 h would reach ``budget`` if the last hour's rate went
    on (calls leave the window as they age); None if that rate lasts the whole day."""
    times = sorted([*own, *(at for at, n in others for _ in range(n))])
    rate = (len(times) - bisect.bisect_right(times, now - 3600)) / 3600
    for step in range(1, 97):
        later = step * 900.0
        held = len(times) - bisect.bisect_right(times, now + later - DAY_S)
        if held + rate * min(later, DAY_S) >= budget:
            return now + later
    return None


# The per-user plan


@dataclass
class UserPlan:
    """One user's schedule and what the plan knows of their player."""

    account: str = ""
    """The developer account whose budget the user's calls count against."""
    next_playing: float = 0.0
    next_recent: float = 0.0
    playback: Playback = NOTHING
    new_track: bool = False
    """The last read showed a track the one before did not."""
    accrued_s: float = 0.0
    """Time the player may have run since the last recently-played read, up to ``accrual_from``."""
    accrual_from: float = 0.0
    may_play: bool = True
    """Whether the player may be running since ``accrual_from`` (unknown counts as yes)."""
    read_at: float | None = None
    """When this process last read recently-played successfully."""
    looked_again: bool = False
    errors: int = 0
    recorded_at: float = -math.inf
    observed_at: float = 0.0
    """When currently-playing was last read successfully."""
    essential_at: float = 0.0
    """When the next idle probe becomes essential (earlier ones spend a surplus)."""
    live_tokens: float = 0.0
    """This user's own bucket of live reads (see :attr:`PollerConfig.user_live_per_hour`)."""
    live_at: float = 0.0
    short_seen_at: float = -math.inf
    """When the user was last seen playing a track under :attr:`PollerConfig.short_track_s`."""
    published: OrderedDict[str, None] = field(default_factory=OrderedDict)

    @property
    def due(self) -> float:
        return min(self.next_playing, self.next_recent)

    def accrued_at(self, now: float) -> float:
        return self.accrued_s + (max(0.0, now - self.accrual_from) if self.may_play else 0.0)

    def observe(self, now: float, playing: bool) -> None:
        """A currently-playing read at ``now``: the interval since the last one counts toward
        the window if either end saw the player running."""
        if self.may_play or playing:
            self.accrued_s += max(0.0, now - self.accrual_from)
        self.accrual_from, self.may_play = now, playing

    def read(self, now: float) -> None:
        """A good recently-played read at ``now``: everything before it is safe."""
        self.accrued_s, self.accrual_from, self.read_at = 0.0, now, now


def _runs(playback: Playback) -> bool:
    """Whether plays may be accruing: something is playing (an ad counts: it ends in a track)."""
    return playback.item_key is not None and playback.is_playing


# The engine


class PollEngine:
    """Polls users through the ports, deciding every call against its account's budget.

    :meth:`round` does what is due for one user; the caller runs rounds (one at a time per user,
    any number of users at once) when :attr:`UserPlan.due` comes.
    """

    def __init__(
        self,
        config: PollerConfig,
        *,
        spotify: SpotifyPort,
        sink: EventSink,
        state: StatePort,
        clock: Clock,
        observer: Observer,
        account_of: AccountOf = lambda client_id: client_id,
        rng: random.Random | None = None,
    ) -> None:
        self.config, self.spotify, self.sink, self.state = config, spotify, sink, state
        self.clock, self.observer, self.account_of = clock, observer, account_of
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self.plans: dict[str, UserPlan] = {}
        self.budgets: dict[str, AccountBudget] = {}
        self._app_calls = RollingWindowLimiter(config.app_budget_30s)
        self._app_paused: dict[str, float] = {}
        self._lock = threading.Lock()

    # Users and accounts

    def add_user(self, user_id: str) -> UserPlan:
        plan = self.plans.get(user_id)
        if plan is None:
            now = self.clock.now()
            account = self.account_of(self.spotify.client_of(user_id))
            plan = self.plans[user_id] = UserPlan(
                account=account,
                accrual_from=now,
                live_tokens=self.config.user_live_burst,
                live_at=now,
            )
            self._count_users(account)
        return plan

    def drop_user(self, user_id: str) -> None:
        plan = self.plans.pop(user_id, None)
        if plan is not None:
            self._count_users(plan.account)

    def _count_users(self, account: str) -> None:
        """Each account's essential reserve is estimated from its users here."""
        users = sum(plan.account == account for plan in self.plans.values())
        self.budget(account).users = max(1, users)

    def budget(self, account_id: str) -> AccountBudget:
        with self._lock:
            budget = self.budgets.get(account_id)
            if budget is None:
                budget = self.budgets[account_id] = AccountBudget(
                    account_id, self.config, self.clock.now()
                )
            return budget

    def budget_of(self, user_id: str) -> AccountBudget:
        plan = self.plans.get(user_id)
        if plan is not None:
            return self.budget(plan.account)
        return self.budget(self.account_of(self.spotify.client_of(user_id)))

    # Rounds

    def round(self, user_id: str) -> None:
        plan = self.plans.get(user_id)
        if plan is None:
            return
        now = self.clock.now()
        if now >= plan.next_playing:
            self.poll_playing(user_id)
        if user_id in self.plans and self.clock.now() >= plan.next_recent:
            self.poll_recent(user_id)

    def _admit(self, user_id: str, *, essential: bool) -> float:
        """0 if a call for ``user_id`` may go now (counted), else Spotify seconds to wait."""
        if not self.config.adaptive:
            return 0.0
        now = self.clock.now()
        client_id = self.spotify.client_of(user_id)
        paused = self._app_paused.get(client_id, 0.0) - now
        if paused > 0:
            return paused
        # The short limit first (it counts real seconds, like Spotify's): a call it admits but
        # the daily budget refuses costs 30 s of its window, never a day of the budget's.
        wait = self._app_calls.admit(client_id, now / self.config.speed) * self.config.speed
        if not wait:
            calls = 1 + int(self.config.refreshes_count and self.spotify.refresh_due(user_id))
            wait = self.budget(self.account_of(client_id)).spend(now, calls, essential=essential)
        # A wait too short to move a float clock would retry the same moment forever.
        return max(wait, 1.0) if wait else 0.0

    def _user_live_wait(self, user_id: str, plan: UserPlan) -> float:
        """0 if the user's own live bucket holds a read, else seconds until it does."""
        if not self.config.adaptive:
            return 0.0
        now = self.clock.now()
        rate = self.config.user_live_per_hour / 3600 / self.budget_of(user_id).stretch(now)
        refilled = plan.live_tokens + (now - plan.live_at) * rate
        plan.live_tokens, plan.live_at = min(self.config.user_live_burst, refilled), now
        return 0.0 if plan.live_tokens >= 1 else max(1.0, (1 - plan.live_tokens) / rate)

    def poll_playing(self, user_id: str) -> None:
        plan = self.plans[user_id]
        # Probing an idle player on time is what bounds the window; reading a playing one, or
        # an idle one early from a surplus, is freshness.
        now = self.clock.now()
        # Even a player believed to be playing is read every idle interval, live budget or not:
        # the session may have ended, and the next one must be seen as soon as an idle one.
        overdue = now >= plan.observed_at + self.config.idle_s
        essential = overdue or (not plan.may_play and now >= plan.essential_at)
        # A user's own live bucket is for their sessions, not for probes of an idle player.
        wait = 0.0 if essential or not plan.may_play else self._user_live_wait(user_id, plan)
        if wait or (wait := self._admit(user_id, essential=essential)):
            if essential:
                plan.next_playing = now + wait
            elif plan.may_play:
                plan.next_playing = min(now + wait, plan.observed_at + self.config.idle_s)
            else:
                # A surplus probe refused: the essential one comes at its time.
                plan.next_playing = max(plan.essential_at, now + 1.0)
            return
        if plan.may_play and not essential:
            plan.live_tokens -= 1
        self.observer.call("currently-playing", 1)
        try:
            current = playback_from_currently_playing(self.spotify.currently_playing(user_id))
        except InvalidEvent as exc:
            self._rejected(user_id, "currently-playing", exc.reason)
            plan.next_playing = self.clock.now() + self.config.paused_s
            return
        except SpotifyError as exc:
            self._failed(user_id, exc)
            return
        now = plan.observed_at = self.clock.now()
        self._note_length(plan, now, current.duration_ms)
        between = self._between_tracks(plan, current)
        # Between two tracks the session goes on as far as the window is concerned.
        plan.observe(now, _runs(current) or between)
        if between:
            plan.next_playing = now + self.config.between_tracks_s
            return
        change = state_change(plan.playback, current)
        if change is not None:
            event = now_playing_event(user_id, change, current, self._wall(now))
            self.sink.now_playing(user_id, event)
            self.observer.published("now-playing", 1)
        plan.new_track = change in ("started", "track_changed")
        if change == "stopped" and self.config.adaptive:
            plan.next_recent = min(plan.next_recent, now + self.config.recent_after_stop_s)
        if now - plan.recorded_at > self.config.health_every_s * self.config.speed:
            self.state.record_success(user_id, lag_s=None, cursor_ms=None, read_at=None)
            plan.recorded_at = now
        plan.playback = current
        self._plan_next(user_id, plan, now)

    def _plan_next(self, user_id: str, plan: UserPlan, now: float) -> None:
        config = self.config
        if not config.adaptive:
            plan.next_playing = now + config.active_s
            return
        stretch = self.budget_of(user_id).stretch(now)
        room = config.safe_window_s - plan.accrued_at(now)
        current = plan.playback
        if _runs(current):
            # The window's deadline: the player may run on until then.
            plan.next_recent = min(plan.next_recent, now + max(0.0, room))
            remaining = current.remaining_ms
            cap = (config.skip_check_s if plan.new_track else config.track_cap_s) * stretch
            if remaining is None:
                wait = cap
            elif plan.live_tokens < 3 or stretch >= config.max_stretch:
                # Short of reads: spend them where a change is sure, at the track's end.
                wait = remaining / 1000 + config.after_end_s
            else:
                wait = min(cap, remaining / 1000 + config.after_end_s)
        else:
            # Nothing plays: a session may begin right after this read, and must be seen (and
            # read) before it could fill the window.
            wait = config.idle_s
            if current.item_key is not None:
                wait = min(wait, config.paused_s * stretch)
            if room - wait < config.between_tracks_s:
                plan.next_recent = min(plan.next_recent, now)
            wait = min(wait, max(config.between_tracks_s, room))
            plan.essential_at = now + wait
            if current.item_key is None and self._watches_list(plan, now):
                # Its probes are recently-played reads (see PollerConfig.short_track_s).
                plan.next_recent = min(plan.next_recent, now + wait)
                plan.next_playing = math.inf
                return
            if self.budget_of(user_id).surplus(now):
                # Reads the budget would not otherwise use: see session starts sooner.
                wait = min(wait, config.idle_surplus_s)
        plan.next_playing = now + wait

    def _watches_list(self, plan: UserPlan, now: float) -> bool:
        """Whether the user's idle player is probed through recently-played."""
        return self.config.adaptive and now - plan.short_seen_at < self.config.short_memory_s

    def _note_length(self, plan: UserPlan, now: float, duration_ms: int | None) -> None:
        if duration_ms is not None and duration_ms < self.config.short_track_s * 1000:
            plan.short_seen_at = now

    def _between_tracks(self, plan: UserPlan, current: Playback) -> bool:
        """Whether nothing playing just after a track deserves a second look before a stop."""
        suspect = (
            self.config.adaptive
            and plan.playback.is_playing
            and current.item_key is None
            and not plan.looked_again
        )
        plan.looked_again = suspect
        return suspect

    def poll_recent(self, user_id: str) -> None:
        plan = self.plans[user_id]
        known = self.state.read_state(user_id)
        cursor = known.cursor_ms
        after = None if cursor is None else max(0, cursor - int(self.config.overlap_s * 1000))
        events: list[ListenEvent] = []
        newest = cursor or 0
        first_page = True
        while True:
            if wait := self._admit(user_id, essential=True):
                plan.next_recent = self.clock.now() + wait
                return
            self.observer.call("recently-played", 1)
            try:
                page = self.spotify.recently_played(user_id, after)
            except SpotifyError as exc:
                self._failed(user_id, exc)
                return
            items = page.get("items") if isinstance(page, dict) else None
            if not isinstance(items, list):
                self._rejected(user_id, "recently-played", "items missing or not a list")
                break
            page_events: list[ListenEvent] = []
            for item in items:
                try:
                    page_events.append(listen_from_play_history(user_id, item))
                except InvalidEvent as exc:
                    self._rejected(user_id, "recently-played", exc.reason)
            if first_page and cursor is not None and len(items) >= PAGE and page_events:
                oldest = min(_ms(event.played_at) for event in page_events)
                if oldest > cursor:
                    self._gap(user_id, plan, known, cursor, oldest)
            first_page = False
            events.extend(page_events)
            newest = max([newest, *(_ms(event.played_at) for event in page_events)])
            # With `after`, Spotify returns the oldest plays after it first: page on.
            if after is None or len(items) < PAGE or newest <= after:
                break
            after = newest
        fresh = [event for event in events if event.event_id not in plan.published]
        try:
            self.sink.listens(user_id, fresh)
        except Exception as exc:  # Kafka's errors are many; the cursor stays, the read repeats
            log.warning(
                "Kafka did not acknowledge; cursor kept",
                extra={"user_id": user_id, "error": str(exc)},
            )
            self.observer.error("kafka")
            self.back_off(user_id)
            return
        for event in fresh:
            plan.published[event.event_id] = None
            self._note_length(plan, self.clock.now(), event.duration_ms)
        while len(plan.published) > 500:
            plan.published.popitem(last=False)
        self.observer.published("listens", len(fresh))
        now = self.clock.now()
        lag = (self._wall(now).timestamp() * 1000 - newest) / 1000 if newest else None
        self.state.record_success(user_id, lag_s=lag, cursor_ms=newest or None, read_at=now)
        plan.recorded_at = now
        plan.read(now)
        plan.errors = 0
        if math.isinf(plan.next_playing) and newest > (cursor or 0):
            # The list shows plays the watched idle player made since the last read: a
            # session, perhaps still going; currently-playing takes over for the live feed.
            plan.next_playing = now
        self._plan_recent(plan, now)

    def _plan_recent(self, plan: UserPlan, now: float) -> None:
        config = self.config
        if not config.adaptive:
            plan.next_recent = now + config.naive_recent_s
            return
        # A little early, at random: users read together (all of them after a restart) drift
        # apart instead of queueing up at the same moments.
        jitter = self.rng.uniform(0.9, 1.0)
        if plan.may_play:
            plan.next_recent = now + config.safe_window_s * jitter
        elif math.isinf(plan.next_playing):
            # A watched idle player: this read is its probe (see PollerConfig.short_track_s).
            plan.next_recent = now + config.idle_s * jitter
        else:
            plan.next_recent = now + config.idle_recent_s * jitter
            # The idle probe must come before a session starting now could fill the window.
            plan.next_playing = min(plan.next_playing, now + config.safe_window_s)

    # Gaps and failures

    def _gap(
        self, user_id: str, plan: UserPlan, known: ReadState, cursor_ms: int, oldest_ms: int
    ) -> None:
        now = self.clock.now()
        since = plan.read_at if plan.read_at is not None else known.read_at
        if since is not None and self.budget_of(user_id).blocked_between(since, now):
            cause = GapCause.QUOTA_LOCKOUT
        elif known.needs_reauth:
            cause = GapCause.TOKEN_EXPIRED
        elif plan.read_at is None and (since is None or now - since > self.config.window_s):
            # This process never read the user, and the last read on record is older than the
            # window: the plays went by while no poller was running.
            cause = GapCause.POLLER_DOWN
        else:
            # Polled all along: the player ran where the probes could not see it (a probe that
            # fell in the second between two tracks of a binge took it for a stopped player).
            cause = GapCause.UNKNOWN
        log.warning(
            "recently-played no longer reaches the cursor: plays may be missing",
            extra={
                "user_id": user_id,
                "cause": cause.value,
                "from_ms": cursor_ms,
                "to_ms": oldest_ms,
            },
        )
        self.state.record_gap(user_id, cursor_ms, oldest_ms, cause)
        self.observer.error("gap")

    def _rejected(self, user_id: str, endpoint: str, reason: str) -> None:
        log.warning(
            "skipped malformed Spotify data",
            extra={"user_id": user_id, "endpoint": endpoint, "reason": reason},
        )
        self.observer.rejected(endpoint)
        self.state.count_rejected(user_id, f"{endpoint}: {reason}")

    def _failed(self, user_id: str, exc: SpotifyError) -> None:
        now = self.clock.now()
        if isinstance(exc, QuotaExceeded):
            self.observer.error("quota_exceeded")
            budget = self.budget(self.account_of(exc.client_id))
            budget.refused(now)
            until = now + exc.retry_after * self.config.speed
            if budget.lock(now, until, "QUOTA_EXCEEDED"):
                log.error(
                    "Spotify refused the developer account for its daily quota; no call of it "
                    "until the lock ends",
                    extra={
                        "account_id": budget.account_id,
                        "user_id": user_id,
                        "until": self._wall(until).isoformat(),
                    },
                )
            return
        if isinstance(exc, RateLimited):
            self.observer.error("rate_limited")
            self.budget(self.account_of(exc.client_id)).refused(now)
            until = now + exc.retry_after * self.config.speed
            self._app_paused[exc.client_id] = max(self._app_paused.get(exc.client_id, 0), until)
            return
        if isinstance(exc, NeedsReauth | NotLinked):
            self.observer.error("needs_reauth")
            self.plans.pop(user_id, None)
            self.state.record_error(user_id, "needs_reauth")
            return
        self.observer.error("spotify")
        self.state.record_error(user_id, str(exc))
        self.back_off(user_id)

    def back_off(self, user_id: str) -> None:
        """Wait longer after each failure in a row (with jitter), up to five minutes."""
        plan = self.plans.get(user_id)
        if plan is None:
            return
        plan.errors += 1
        delay = min(300.0, 2.0**plan.errors) * self.rng.uniform(0.5, 1.0)
        later = self.clock.now() + delay
        plan.next_playing = max(plan.next_playing, later)
        plan.next_recent = max(plan.next_recent, later)

    def _wall(self, spotify_seconds: float) -> datetime:
        return datetime.fromtimestamp(spotify_seconds / self.config.speed, UTC)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
