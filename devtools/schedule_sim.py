"""A fake Spotify for the polling plan: listeners, a daily quota, and the engine driven through
simulated weeks without servers.

The same :class:`producers.schedule.PollEngine` the pollers run is driven through its ports by an
event loop that jumps from one due round to the next, so a week of five listeners (binges of 30 s
tracks, long sessions, idle days, skips, pauses, a quota lockout) takes well under a second of
CPU. tests/producers/test_schedule.py checks the plan with it, and bench/bench_schedule.py
measures the live feed against the budget.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from auxcord.events import ListenEvent, NowPlayingEvent
from auxcord.gaps import GapCause
from auxcord.spotify import QuotaExceeded
from producers.parse import listen_from_play_history
from producers.schedule import DAY_S, PAGE, PollEngine, PollerConfig, ReadState

START = datetime(2026, 11, 2, tzinfo=UTC).timestamp()
HOUR = 3600.0


@dataclass
class Play:
    start: float
    heard: float
    """Seconds of the track heard (a play counts, and is listed, from 30 s)."""
    track: int
    duration: float
    pause_at: float = 0.0
    pause: float = 0.0

    @property
    def end(self) -> float:
        return self.start + self.heard + self.pause

    @property
    def listed(self) -> bool:
        return self.heard >= 30

    def item(self) -> dict[str, Any]:
        return {
            "id": f"track{self.track:05d}",
            "name": f"Track {self.track}",
            "duration_ms": int(self.duration * 1000),
            "artists": [{"name": f"Artist {self.track % 40}", "id": f"artist{self.track % 40}"}],
            "album": {"name": f"Album {self.track % 90}", "id": f"album{self.track % 90}"},
        }

    def history(self) -> dict[str, Any]:
        end_ms = int(self.end * 1000)
        played_at = datetime.fromtimestamp(end_ms / 1000, UTC).isoformat(timespec="milliseconds")
        return {"track": self.item(), "played_at": played_at.replace("+00:00", "Z")}


@dataclass
class Listener:
    """One user's plays in order, with what Spotify's two endpoints show of them."""

    plays: list[Play]
    starts: list[float] = field(init=False)
    listed: list[Play] = field(init=False)
    listed_ends: list[float] = field(init=False)

    def __post_init__(self) -> None:
        self.starts = [play.start for play in self.plays]
        self.listed = [play for play in self.plays if play.listed]
        self.listed_ends = [play.end for play in self.listed]

    def playing(self, now: float) -> dict[str, Any] | None:
        index = bisect.bisect_right(self.starts, now) - 1
        if index < 0 or self.plays[index].end <= now:
            return None
        play = self.plays[index]
        into = now - play.start
        paused = play.pause and play.pause_at <= into < play.pause_at + play.pause
        # Progress stands still during the pause and goes on after it.
        heard = into if into < play.pause_at else max(play.pause_at, into - play.pause)
        progress = play.pause_at if paused else heard
        return {
            "is_playing": not paused,
            "currently_playing_type": "track",
            "progress_ms": int(progress * 1000),
            "item": play.item(),
        }

    def recent(self, now: float, after_ms: int | None) -> list[dict[str, Any]]:
        done = bisect.bisect_right(self.listed_ends, now)
        window = self.listed[max(0, done - PAGE) : done]
        if after_ms is None:
            return [play.history() for play in reversed(window)]
        newer = [play for play in window if play.end * 1000 > after_ms]
        return [play.history() for play in reversed(newer[:PAGE])]


def session(rng: random.Random, start: float, tracks: int, *, short: bool = False) -> list[Play]:
    """``tracks`` plays from ``start``: skips, part-way stops and pauses like real listeners, or
    a binge of 30 s tracks heard to the end (``short``)."""
    plays, at = [], start
    for _ in range(tracks):
        track = rng.randrange(5_000)
        duration = 30.5 if short else rng.uniform(150, 300)
        heard, pause_at, pause = duration, 0.0, 0.0
        roll = rng.random()
        if not short and roll < 0.12:
            heard = rng.uniform(1, 29)  # skipped early: never a play
        elif not short and roll < 0.17:
            heard = rng.uniform(30, duration)  # stopped part-way, still a play
        if not short and rng.random() < 0.05:
            pause_at, pause = rng.uniform(0, heard), rng.uniform(20, 300)
        plays.append(Play(at, heard, track, duration, pause_at, pause))
        at = plays[-1].end + rng.uniform(0.2, 3)
    return plays


def week_of(rng: random.Random, days: int, *, binger: bool) -> Listener:
    """Days of sessions at random hours, with idle days, a long day, and for ``binger`` a daily
    two-hour binge of 30 s tracks (240 plays: nearly five windows' worth)."""
    plays: list[Play] = []
    for day in range(days):
        base = START + day * DAY_S
        idle = rng.random() < 0.2
        hours = [] if idle else sorted(rng.sample(range(7, 24), rng.randint(1, 3)))
        for hour in hours:
            after_last = plays[-1].end + 60 if plays else 0
            begin = max(base + hour * HOUR + rng.uniform(0, HOUR), after_last)
            long_day = day == 3 and hour == hours[0]
            tracks = 90 if long_day else rng.randint(3, 25)
            plays.extend(session(rng, begin, tracks))
        if binger:
            begin = max(base + 2 * HOUR, plays[-1].end + 60 if plays else 0)
            plays.extend(session(rng, begin, 240, short=True))
        plays.sort(key=lambda play: play.start)
    return Listener(plays)


class FakeClock:
    def __init__(self) -> None:
        self.t = START

    def now(self) -> float:
        return self.t


class FakeSpotify:
    """Spotify for the engine: listeners, a rolling 24 h quota per account (token refreshes
    count, as the simulator counts them), tokens that last an hour, and forced lockouts."""

    def __init__(self, clock: FakeClock, listeners: dict[str, Listener], apps: dict[str, str]):
        self.clock, self.listeners, self.apps = clock, listeners, apps
        self.calls: dict[str, list[float]] = {app: [] for app in set(apps.values())}
        self.refused: Counter[str] = Counter()
        self.locks: dict[str, tuple[float, float]] = {}
        self.expires: dict[str, float] = {}

    def client_of(self, user_id: str) -> str:
        return self.apps[user_id]

    def refresh_due(self, user_id: str) -> bool:
        return self.expires.get(user_id, 0) - 60 <= self.clock.now()

    def _call(self, user_id: str) -> None:
        app, now = self.apps[user_id], self.clock.now()
        lock = self.locks.get(app)
        if lock and lock[0] <= now < lock[1]:
            self.refused[app] += 1
            raise QuotaExceeded(lock[1] - now, app)
        if self.refresh_due(user_id):
            self.calls[app].append(now)
            self.expires[user_id] = now + HOUR
        self.calls[app].append(now)

    def currently_playing(self, user_id: str) -> dict[str, Any] | None:
        self._call(user_id)
        return self.listeners[user_id].playing(self.clock.now())

    def recently_played(self, user_id: str, after_ms: int | None) -> dict[str, Any]:
        self._call(user_id)
        return {"items": self.listeners[user_id].recent(self.clock.now(), after_ms)}

    def most_in_a_day(self, app: str) -> int:
        calls, most, window = self.calls[app], 0, deque[float]()
        for at in calls:
            window.append(at)
            while window[0] <= at - DAY_S:
                window.popleft()
            most = max(most, len(window))
        return most


class FakeKafka:
    def __init__(self) -> None:
        self.listens: set[str] = set()
        self.now_playing: list[NowPlayingEvent] = []

    def now_playing_event(self, user_id: str, event: NowPlayingEvent) -> None:
        self.now_playing.append(event)

    def publish(self, user_id: str, events: list[ListenEvent]) -> None:
        self.listens.update(event.event_id for event in events)


@dataclass
class FakeSink:
    kafka: FakeKafka

    def now_playing(self, user_id: str, event: NowPlayingEvent) -> None:
        self.kafka.now_playing_event(user_id, event)

    def listens(self, user_id: str, events: list[ListenEvent]) -> None:
        self.kafka.publish(user_id, events)


@dataclass
class FakeState:
    cursors: dict[str, int] = field(default_factory=dict)
    read_at: dict[str, float] = field(default_factory=dict)
    gaps: list[tuple[str, int, int, GapCause]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)

    def read_state(self, user_id: str) -> ReadState:
        return ReadState(self.cursors.get(user_id), self.read_at.get(user_id), False)

    def record_success(
        self, user_id: str, *, lag_s: float | None, cursor_ms: int | None, read_at: float | None
    ) -> None:
        if cursor_ms:
            self.cursors[user_id] = max(cursor_ms, self.cursors.get(user_id, 0))
        if read_at is not None:
            self.read_at[user_id] = read_at

    def record_error(self, user_id: str, error: str) -> None:
        self.errors.append((user_id, error))

    def count_rejected(self, user_id: str, reason: str) -> None:
        raise AssertionError(f"the fake sends nothing malformed: {reason}")

    def record_gap(self, user_id: str, start_ms: int, end_ms: int, cause: GapCause) -> None:
        self.gaps.append((user_id, start_ms, end_ms, cause))


class Counts:
    def __init__(self) -> None:
        self.counter: Counter[str] = Counter()

    def call(self, endpoint: str, calls: int) -> None:
        self.counter[endpoint] += calls

    def published(self, topic: str, count: int) -> None:
        self.counter[f"published {topic}"] += count

    def rejected(self, endpoint: str) -> None:
        self.counter[f"rejected {endpoint}"] += 1

    def error(self, kind: str) -> None:
        self.counter[f"error {kind}"] += 1


@dataclass
class Run:
    spotify: FakeSpotify
    kafka: FakeKafka
    state: FakeState
    engine: PollEngine
    listeners: dict[str, Listener]
    counts: Counts

    def missing(self) -> dict[str, list[Play]]:
        """Listed plays that never reached Kafka, per user."""
        missing: dict[str, list[Play]] = {}
        for user, listener in self.listeners.items():
            for play in listener.listed:
                if play.end > self.spotify.clock.now():
                    break
                event = listen_from_play_history(user, play.history())
                if event.event_id not in self.kafka.listens:
                    missing.setdefault(user, []).append(play)
        return missing


def simulate(
    listeners: dict[str, Listener],
    days: float,
    *,
    budget: int = 750,
    apps: dict[str, str] | None = None,
    lockout: tuple[str, float, float] | None = None,
    config: PollerConfig | None = None,
) -> Run:
    """Run the engine over ``days`` from :data:`START`, then one last read of every user."""
    clock = FakeClock()
    apps = apps or {user: "app" for user in listeners}
    spotify = FakeSpotify(clock, listeners, apps)
    if lockout:
        app, begin, hours = lockout
        spotify.locks[app] = (START + begin, START + begin + hours * HOUR)
    kafka, state, counts = FakeKafka(), FakeState(), Counts()
    engine = PollEngine(
        config or PollerConfig(daily_budget=budget),
        spotify=spotify,
        sink=FakeSink(kafka),
        state=state,
        clock=clock,
        observer=counts,
        rng=random.Random(7),  # noqa: S311 - simulated jitter, not secrets
    )
    queue = [(0.0, user) for user in listeners]
    for user in listeners:
        engine.add_user(user)
    end = START + days * DAY_S
    while queue:
        due, user = heapq.heappop(queue)
        if due > end:
            break
        clock.t = max(clock.t, due)
        engine.round(user)
        if user in engine.plans:
            heapq.heappush(queue, (engine.plans[user].due, user))
    clock.t = end
    for user in listeners:
        engine.plans[user].next_recent = 0
        engine.poll_recent(user)
    return Run(spotify, kafka, state, engine, listeners, counts)


def five_friends(days: int, seed: int = 1) -> dict[str, Listener]:
    rng = random.Random(seed)  # noqa: S311 - simulated listeners, not secrets
    return {f"user{n}": week_of(rng, days, binger=n == 0) for n in range(5)}


def live_delays(run: Run, users: list[str]) -> tuple[list[float], list[float]]:
    """Seconds from each track change inside a session already on the live feed until the feed
    shows that track or a later one of the session, and from each session's first play to the
    session's first event, sorted.

    A session is plays less than 35 s apart. Until its first event the feed shows nothing of it:
    those tracks count in the session start, not as changes the feed was late to show. A change
    the feed never caught up with counts as infinitely late, so tracks the plan never read make
    the figure worse, not smaller.
    """
    seen: dict[str, list[tuple[float, str]]] = {}
    for event in run.kafka.now_playing:
        if event.state in ("started", "track_changed") and event.track_id:
            at = event.observed_at.timestamp()
            seen.setdefault(event.user_id, []).append((at, event.track_id))
    changes, starts = [], []
    for user in users:
        events = seen.get(user, [])
        sessions: list[list[Play]] = []
        for play in run.listeners[user].plays:
            if sessions and play.start - sessions[-1][-1].end <= 35:
                sessions[-1].append(play)
            else:
                sessions.append([play])
        for plays in sessions:
            begin, end = plays[0].start, plays[-1].end
            first = min((t for t, _ in events if begin <= t <= end), default=None)
            starts.append((end if first is None else first) - begin)
            for index, play in enumerate(plays):
                if first is None or play.start <= first:
                    continue
                later = {other.item()["id"] for other in plays[index:]}
                shown = [t for t, k in events if k in later and t >= play.start]
                changes.append(min(shown) - play.start if shown else math.inf)
    return sorted(changes), sorted(starts)


def p95(values: list[float]) -> float:
    return values[int(0.95 * len(values))]
