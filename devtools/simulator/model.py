"""Simulated listeners: taste, timezones, sessions, and the plays they produce.

Pure and seeded: no HTTP, no clock of its own. A :class:`World` holds the catalog, the users and
each user's timeline of plays, generated day by day in order, so the same seed always yields the
same history however far it is extended.

Planted taste structure: users are split into groups (friend groups) and, inside each group, into
taste clusters. A cluster shares a set of favourite artists that the rest of the catalog rarely
reaches, so friends overlap in taste and recommendation quality can be measured.

Every play records when it started, how long it was heard (``ms_played``), an optional pause,
and whether Spotify would list it in recently-played: only tracks heard for at least 30 s, and
local files, are; skips and podcast episodes are not. ``played_at`` is the end of the play.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from devtools.simulator.catalog import Catalog, build_catalog, spotify_id

MIN_LISTED_MS = 30_000
START_SESSION_TRACKS = 20
"""About an hour of listening: a session begun at the start of live simulation."""
KIND_TRACK, KIND_EPISODE, KIND_LOCAL = 0, 1, 2

_TIMEZONES = (
    ("Europe/Paris", "FR"),
    ("America/New_York", "US"),
    ("Europe/London", "GB"),
    ("Australia/Sydney", "AU"),
    ("Asia/Kolkata", "IN"),
    ("America/Sao_Paulo", "BR"),
    ("Asia/Tokyo", "JP"),
    ("America/Los_Angeles", "US"),
    ("Europe/Berlin", "DE"),
    ("Pacific/Auckland", "NZ"),
)
_FIRST_NAMES = (
    "Ava",
    "Noah",
    "Léa",
    "Mateo",
    "Saanvi",
    "Yuki",
    "Olivia",
    "Liam",
    "Zoë",
    "Amara",
    "Jonas",
    "Chloé",
    "Ikaika",
    "Mía",
    "Oskar",
    "Fatima",
    "Kenji",
    "Ingrid",
    "Tomás",
    "Nia",
)
_LOCAL_FILES = (
    ("Demo Take 3", "Me & The Garage"),
    ("Bootleg Live 1998", "Unknown Artist"),
    ("voice memo ♪", "Phone"),
)


@dataclass
class User:
    """One simulated Spotify account."""

    index: int
    user_id: str
    display_name: str
    timezone: str
    country: str
    group: int
    cluster: int
    premium: bool
    activity: float
    """Mean listening sessions per day."""
    episode_rate: float
    track_cdf: np.ndarray = field(repr=False)
    hour_weights: np.ndarray = field(repr=False)


@dataclass
class Timeline:
    """One user's plays, in start order (plays never overlap)."""

    start_ms: np.ndarray
    end_ms: np.ndarray
    ms_played: np.ndarray
    kind: np.ndarray
    item: np.ndarray
    pause_at_ms: np.ndarray
    pause_ms: np.ndarray
    ad_before: np.ndarray
    context: np.ndarray
    """Index into ``World.contexts`` or -1 for no context."""
    generated_until_ms: int
    _listed_cache: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @property
    def listed(self) -> np.ndarray:
        listed: np.ndarray = (self.kind != KIND_EPISODE) & (self.ms_played >= MIN_LISTED_MS)
        return listed

    def listed_plays(self) -> tuple[np.ndarray, np.ndarray]:
        """Indices and end times of the plays recently-played shows, cached until a change."""
        if self._listed_cache is None:
            indices = np.flatnonzero(self.listed)
            self._listed_cache = (indices, self.end_ms[indices])
        return self._listed_cache

    @classmethod
    def empty(cls, start_ms: int) -> Timeline:
        ints = np.zeros(0, dtype=np.int64)
        return cls(ints, ints, ints, ints, ints, ints, ints, np.zeros(0, bool), ints, start_ms)

    def extend(self, other: dict[str, np.ndarray], until_ms: int) -> None:
        for name, values in other.items():
            setattr(self, name, np.concatenate([getattr(self, name), values]))
        self.generated_until_ms = until_ms
        self._listed_cache = None


@dataclass(frozen=True)
class WorldConfig:
    users: int
    seed: int
    groups: int = 1
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    """Virtual time at which live simulation begins; history lies before it."""
    history_days: int = 0
    listening_at_start: int = 0
    """How many users (the first ones) begin a session of :data:`START_SESSION_TRACKS` tracks
    at ``start``, so a live feed has something to show at once (the demo)."""


class World:
    """The catalog, the users and their timelines, extended lazily and deterministically."""

    def __init__(self, config: WorldConfig) -> None:
        self.config = config
        self.catalog: Catalog = build_catalog(config.seed)
        self.users: list[User] = _make_users(config, self.catalog)
        self.by_id = {user.user_id: user for user in self.users}
        rng = np.random.default_rng([config.seed, 3])
        self.contexts: list[tuple[str, str]] = [
            ("playlist", f"spotify:playlist:{spotify_id(rng)}") for _ in range(40)
        ] + [("album", f"spotify:album:{album}") for album in self.catalog.album_ids[:40]]
        self.history_start = _day_floor(config.start) - timedelta(days=config.history_days)
        start_ms = _ms(self.history_start)
        self.timelines = [Timeline.empty(start_ms) for _ in self.users]
        self._next_day = [self.history_start.date() for _ in self.users]
        self.extend_to(_ms(config.start))
        for user in self.users[: config.listening_at_start]:
            self.start_session(user, _ms(config.start), START_SESSION_TRACKS)

    def extend_to(self, until_ms: int, users: list[User] | None = None) -> None:
        """Generate days until ``until_ms`` (plus one day of look-ahead) for ``users`` (all).

        A user's days depend only on that user's earlier days, so users can be extended
        separately and lazily without changing what they play.
        """
        for user in self.users if users is None else users:
            timeline = self.timelines[user.index]
            while timeline.generated_until_ms <= until_ms + 86_400_000:
                day = self._next_day[user.index]
                plays, day_end = _generate_day(self, user, day, timeline)
                timeline.extend(plays, day_end)
                self._next_day[user.index] = day + timedelta(days=1)

    def timeline(self, user: User, now_ms: int) -> Timeline:
        """``user``'s timeline, generated at least until ``now_ms``."""
        self.extend_to(now_ms, [user])
        return self.timelines[user.index]

    def force_play(self, user: User, now_ms: int, track: int) -> None:
        """Start ``track`` for ``user`` now: the current play stops here, later ones shift on."""
        t = self.timeline(user, now_ms)
        current = int(np.searchsorted(t.start_ms, now_ms, side="right")) - 1
        if current >= 0 and t.end_ms[current] > now_ms:
            elapsed = now_ms - int(t.start_ms[current])
            pause_at, pause = int(t.pause_at_ms[current]), int(t.pause_ms[current])
            if elapsed <= pause_at:
                heard, pause = elapsed, 0
            elif elapsed <= pause_at + pause:
                heard, pause = pause_at, elapsed - pause_at
            else:
                heard = elapsed - pause
            t.ms_played[current], t.pause_ms[current], t.end_ms[current] = heard, pause, now_ms
        duration = int(self.catalog.track_duration_ms[track])
        later = current + 1
        shift = (
            max(0, now_ms + duration + 1_000 - int(t.start_ms[later]))
            if later < len(t.start_ms)
            else 0
        )
        for name in ("start_ms", "end_ms"):
            values = getattr(t, name)
            values[later:] += shift
        insert = {
            "start_ms": now_ms,
            "end_ms": now_ms + duration,
            "ms_played": duration,
            "kind": KIND_TRACK,
            "item": track,
            "pause_at_ms": 0,
            "pause_ms": 0,
            "ad_before": False,
            "context": -1,
        }
        for name, value in insert.items():
            setattr(t, name, np.insert(getattr(t, name), later, value))
        t._listed_cache = None

    def start_session(self, user: User, now_ms: int, tracks: int) -> None:
        """``user`` starts ``tracks`` tracks of their own taste at ``now_ms``, back to back
        (seeded, so the same world plays the same session)."""
        rng = np.random.default_rng([self.config.seed, 4, user.index])
        for _ in range(tracks):
            pick = int(np.searchsorted(user.track_cdf, rng.random(), side="right"))
            track = min(pick, self.catalog.size - 1)
            self.force_play(user, now_ms, track)
            now_ms += int(self.catalog.track_duration_ms[track]) + 1_000

    def ground_truth(self, now_ms: int, user_ids: set[str] | None = None) -> list[dict[str, Any]]:
        """Every play finished by ``now_ms``, oldest first per user."""
        self.extend_to(now_ms)
        rows: list[dict[str, Any]] = []
        for user in self.users:
            if user_ids is not None and user.user_id not in user_ids:
                continue
            t = self.timelines[user.index]
            done = int(np.searchsorted(t.end_ms, now_ms, side="right"))
            listed = t.listed
            for i in range(done):
                rows.append(self.play_record(user, t, i, bool(listed[i])))
        return rows

    def play_record(self, user: User, t: Timeline, i: int, listed: bool) -> dict[str, Any]:
        """A ground-truth row: enough to build the ``ListenEvent`` auxcord should store."""
        item = self.item(int(t.kind[i]), int(t.item[i]))
        end_ms = int(t.end_ms[i])
        return {
            "user_id": user.user_id,
            **item,
            "ms_played": int(t.ms_played[i]),
            "played_at": iso_ms(end_ms),
            "played_at_ms": end_ms,
            "started_at_ms": int(t.start_ms[i]),
            "listed": listed,
            "context_uri": self.contexts[int(t.context[i])][1] if t.context[i] >= 0 else None,
        }

    def item(self, kind: int, index: int) -> dict[str, Any]:
        """Names and ids of a track, local file or episode, as auxcord's events carry them."""
        c = self.catalog
        if kind == KIND_TRACK:
            album = int(c.track_album[index])
            artist = int(c.track_artist[index])
            return {
                "item_type": "track",
                "is_local": False,
                "track_id": c.track_ids[index],
                "track_name": c.track_names[index],
                "artist_id": c.artist_ids[artist],
                "artist_name": c.artist_names[artist],
                "album_id": c.album_ids[album],
                "album_name": c.album_names[album],
                "duration_ms": int(c.track_duration_ms[index]),
            }
        if kind == KIND_LOCAL:
            name, artist_name = _LOCAL_FILES[index % len(_LOCAL_FILES)]
            return {
                "item_type": "track",
                "is_local": True,
                "track_id": None,
                "track_name": name,
                "artist_id": None,
                "artist_name": artist_name,
                "album_id": None,
                "album_name": "Local Files",
                "duration_ms": 180_000 + 1_000 * index,
            }
        show = int(c.episode_show[index])
        return {
            "item_type": "episode",
            "is_local": False,
            "track_id": c.episode_ids[index],
            "track_name": c.episode_names[index],
            "artist_id": c.show_ids[show],
            "artist_name": c.show_names[show],
            "album_id": c.show_ids[show],
            "album_name": c.show_names[show],
            "duration_ms": int(c.episode_duration_ms[index]),
        }


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def iso_ms(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _day_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _make_users(config: WorldConfig, catalog: Catalog) -> list[User]:
    rng = np.random.default_rng([config.seed, 2])
    n_artists = len(catalog.artist_ids)
    clusters_per_group = 3
    cluster_favourites = {
        (g, c): rng.choice(n_artists, 12, replace=False)
        for g in range(config.groups)
        for c in range(clusters_per_group)
    }
    users = []
    for index in range(config.users):
        group = index % config.groups
        cluster = (index // config.groups) % clusters_per_group
        weights = 0.25 * catalog.artist_popularity / catalog.artist_popularity.sum()
        favourites = cluster_favourites[(group, cluster)]
        weights[favourites] += 0.55 / len(favourites)
        personal = rng.choice(n_artists, 5, replace=False)
        weights[personal] += 0.20 / len(personal)
        # Within an artist, the hits get most plays.
        track_weights = weights[catalog.track_artist] / (catalog.track_number**0.7)
        cdf = np.cumsum(track_weights)
        timezone, country = _TIMEZONES[int(rng.integers(len(_TIMEZONES)))]
        hours = np.exp(-0.5 * ((np.arange(24)[:, None] - np.array([8, 13, 18, 22])) / 1.8) ** 2)
        hour_weights = hours @ rng.dirichlet(np.ones(4) * 2)
        hour_weights = hour_weights / hour_weights.sum()
        name = _FIRST_NAMES[index % len(_FIRST_NAMES)]
        users.append(
            User(
                index=index,
                user_id=f"{name.lower().replace('é', 'e').replace('ë', 'e').replace('í', 'i')}"
                f".{index:03d}",
                display_name=f"{name} {chr(65 + index % 26)}.",
                timezone=timezone,
                country=country,
                group=group,
                cluster=cluster,
                premium=bool(rng.random() < 0.8),
                activity=float(rng.uniform(1.0, 3.0)),
                episode_rate=float(rng.choice([0.0, 0.02, 0.06])),
                track_cdf=cdf / cdf[-1],
                hour_weights=hour_weights,
            )
        )
    return users


def _generate_day(
    world: World, user: User, day: date, timeline: Timeline
) -> tuple[dict[str, np.ndarray], int]:
    """The plays of one local day of ``user``, starting after the timeline's last play."""
    rng = np.random.default_rng([world.config.seed, 10 + user.index, day.toordinal()])
    zone = ZoneInfo(user.timezone)
    midnight = datetime(day.year, day.month, day.day, tzinfo=zone)
    day_start_ms = _ms(midnight)
    day_end_ms = _ms(midnight + timedelta(days=1))
    sessions = int(rng.poisson(user.activity * (1.2 if day.weekday() >= 5 else 1.0)))
    hours = np.sort(rng.choice(24, size=sessions, p=user.hour_weights))
    last_end = int(timeline.end_ms[-1]) if len(timeline.end_ms) else 0
    columns: dict[str, list[np.ndarray]] = {
        name: []
        for name in (
            "start_ms",
            "end_ms",
            "ms_played",
            "kind",
            "item",
            "pause_at_ms",
            "pause_ms",
            "ad_before",
            "context",
        )
    }
    for hour in hours:
        n = 1 + int(rng.geometric(1 / 12))
        session_start = max(
            day_start_ms + int(hour) * 3_600_000 + int(rng.integers(0, 3_600_000)),
            last_end + 60_000,
        )
        roll = rng.random(n)
        kind = np.where(
            roll < user.episode_rate, KIND_EPISODE, np.where(roll > 0.99, KIND_LOCAL, KIND_TRACK)
        )
        tracks = np.searchsorted(user.track_cdf, rng.random(n), side="right")
        tracks = np.minimum(tracks, world.catalog.size - 1)
        item = np.where(
            kind == KIND_EPISODE,
            rng.integers(0, len(world.catalog.episode_ids), n),
            np.where(kind == KIND_LOCAL, rng.integers(0, 3, n), tracks),
        )
        duration = np.where(
            kind == KIND_EPISODE,
            world.catalog.episode_duration_ms[np.minimum(item, len(world.catalog.episode_ids) - 1)],
            np.where(
                kind == KIND_LOCAL, 180_000 + 1_000 * item, world.catalog.track_duration_ms[tracks]
            ),
        )
        outcome = rng.random(n)
        ms_played = np.where(
            outcome < 0.12,
            rng.integers(1_000, MIN_LISTED_MS, n),  # skipped early: never listed
            np.where(
                outcome < 0.17,
                (rng.random(n) * (duration - MIN_LISTED_MS)).astype(np.int64)
                + MIN_LISTED_MS,  # stopped part-way, still a play
                duration,
            ),
        )
        ms_played = np.minimum(ms_played, duration)
        paused = rng.random(n) < 0.05
        pause_ms = np.where(paused, rng.integers(20_000, 300_000, n), 0)
        pause_at = np.where(paused, (rng.random(n) * ms_played).astype(np.int64), 0)
        ad_before = (~np.bool_(user.premium)) & (rng.random(n) < 0.15)
        gaps = rng.integers(200, 3_000, n) + np.where(ad_before, 30_000, 0)
        spans = ms_played + pause_ms
        starts = (
            session_start
            + np.concatenate([[0], np.cumsum(spans + gaps)[:-1]])
            + np.where(ad_before, 30_000, 0)
        )
        context = np.full(n, int(rng.integers(-1, len(world.contexts))))
        columns["start_ms"].append(starts)
        columns["end_ms"].append(starts + spans)
        columns["ms_played"].append(ms_played)
        columns["kind"].append(kind)
        columns["item"].append(item)
        columns["pause_at_ms"].append(pause_at)
        columns["pause_ms"].append(pause_ms)
        columns["ad_before"].append(ad_before)
        columns["context"].append(context)
        last_end = int(starts[-1] + spans[-1])
    plays = {
        name: (np.concatenate(parts) if parts else getattr(Timeline.empty(0), name))
        for name, parts in columns.items()
    }
    for name in (
        "start_ms",
        "end_ms",
        "ms_played",
        "kind",
        "item",
        "pause_at_ms",
        "pause_ms",
        "context",
    ):
        plays[name] = plays[name].astype(np.int64)
    return plays, max(day_end_ms, last_end)
