"""A seeded music catalog: artists, albums, tracks, podcast shows and episodes.

Names are real-looking and deliberately untrusted: some carry Unicode, emoji and HTML-special
characters (even script tags), because auxcord renders names from Spotify and must treat them as
text. Everything derives from the seed, so two runs with one seed serve the same catalog.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_BASE62 = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))

_SYLLABLES = (
    "ka",
    "lo",
    "mi",
    "ra",
    "ne",
    "su",
    "ta",
    "vi",
    "zo",
    "el",
    "an",
    "or",
    "ix",
    "um",
    "ba",
    "de",
    "fi",
    "go",
    "hu",
    "ja",
    "ke",
    "lu",
    "ma",
    "no",
    "pe",
    "qui",
    "ro",
    "sa",
    "te",
    "va",
    "wy",
    "xo",
    "yu",
    "za",
    "bri",
    "cla",
    "dro",
    "fle",
    "gri",
    "kra",
    "plo",
    "sne",
    "tra",
    "vor",
)
_WORDS = (
    "midnight",
    "echo",
    "velvet",
    "neon",
    "river",
    "golden",
    "static",
    "paper",
    "summer",
    "ghost",
    "honey",
    "glass",
    "wild",
    "electric",
    "silent",
    "ocean",
    "broken",
    "lunar",
    "crimson",
    "fever",
    "satellite",
    "garden",
    "thunder",
    "polaroid",
    "cherry",
    "dream",
    "highway",
    "kingdom",
    "mirror",
    "shadow",
    "silver",
    "sugar",
    "winter",
    "youth",
    "signal",
    "bloom",
)
# Names people really use, and names that break careless HTML: all must render as text.
_SPECIAL_NAMES = (
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "Beyoncé",
    "Sigur Rós",
    "坂本龍一",
    "🔥 Fire & Ice 🔥",
    'Tom & Jerry\'s "Best" <Hits>',
    "Mötley Crüe",
    "Ólafur Arnalds",
    "Fairuz فيروز",
    "Zoë </title> <3",
    "Ё-моё",
)


def spotify_id(rng: np.random.Generator) -> str:
    """A 22-character base62 id, like Spotify's."""
    return "".join(_BASE62[rng.integers(0, 62, 22)])


def _title(rng: np.random.Generator, words: int) -> str:
    return " ".join(str(rng.choice(_WORDS)).capitalize() for _ in range(words))


def _artist_name(rng: np.random.Generator) -> str:
    first = "".join(str(s) for s in rng.choice(_SYLLABLES, rng.integers(2, 4))).capitalize()
    if rng.random() < 0.5:
        return f"{first} {str(rng.choice(_WORDS)).capitalize()}"
    return f"The {_title(rng, 1)}s" if rng.random() < 0.3 else first


def _maybe_special(rng: np.random.Generator, name: str, rate: float) -> str:
    return str(rng.choice(_SPECIAL_NAMES)) if rng.random() < rate else name


@dataclass(frozen=True)
class Catalog:
    """Column-oriented catalog: track ``i`` is described by element ``i`` of each track array."""

    artist_ids: list[str]
    artist_names: list[str]
    album_ids: list[str]
    album_names: list[str]
    album_artist: np.ndarray
    album_release: list[str]
    album_type: list[str]
    album_tracks: np.ndarray
    track_ids: list[str]
    track_names: list[str]
    track_album: np.ndarray
    track_artist: np.ndarray
    track_number: np.ndarray
    track_duration_ms: np.ndarray
    track_explicit: np.ndarray
    artist_popularity: np.ndarray
    """A Zipf-like weight per artist: a few artists everybody plays, a long tail."""
    show_ids: list[str]
    show_names: list[str]
    show_publishers: list[str]
    episode_ids: list[str]
    episode_names: list[str]
    episode_show: np.ndarray
    episode_duration_ms: np.ndarray
    episode_release: list[str]

    @property
    def size(self) -> int:
        return len(self.track_ids)


def build_catalog(seed: int, artists: int = 300, shows: int = 12) -> Catalog:
    """Generate the catalog for ``seed``: about 10 tracks per album, 1 to 4 albums per artist."""
    rng = np.random.default_rng([seed, 1])
    artist_ids = [spotify_id(rng) for _ in range(artists)]
    artist_names = [_maybe_special(rng, _artist_name(rng), 0.03) for _ in range(artists)]

    album_artist: list[int] = []
    for artist in range(artists):
        album_artist.extend([artist] * int(rng.integers(1, 5)))
    n_albums = len(album_artist)
    album_ids = [spotify_id(rng) for _ in range(n_albums)]
    album_names = [
        _maybe_special(rng, _title(rng, int(rng.integers(1, 4))), 0.02) for _ in range(n_albums)
    ]
    album_tracks = rng.integers(4, 15, n_albums)
    single = album_tracks <= 5
    album_tracks = np.where(single & (rng.random(n_albums) < 0.5), 1, album_tracks)
    album_type = ["single" if count == 1 else "album" for count in album_tracks]
    years = rng.integers(1968, 2026, n_albums)
    album_release = [
        f"{year}-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}" for year in years
    ]

    track_album = np.repeat(np.arange(n_albums), album_tracks)
    n_tracks = len(track_album)
    track_number = np.concatenate([np.arange(1, count + 1) for count in album_tracks])
    track_artist = np.asarray(album_artist)[track_album]
    # Pop songs cluster around 3:30; a few long pieces, nothing under a minute.
    durations = rng.lognormal(mean=np.log(215_000), sigma=0.3, size=n_tracks)
    track_duration_ms = np.clip(durations, 60_000, 900_000).astype(np.int64)
    track_ids = [spotify_id(rng) for _ in range(n_tracks)]
    track_names = [
        _maybe_special(rng, _title(rng, int(rng.integers(1, 4))), 0.02) for _ in range(n_tracks)
    ]
    artist_popularity = 1.0 / np.arange(1, artists + 1) ** 0.8
    rng.shuffle(artist_popularity)
    # Tracks had a popularity drawn here until Spotify dropped the field (February 2026); the
    # draw stays so that every seed still builds the same world as before.
    rng.normal(0, 8, n_tracks)

    show_ids = [spotify_id(rng) for _ in range(shows)]
    show_names = [f"The {_title(rng, 2)} Podcast" for _ in range(shows)]
    show_publishers = [_artist_name(rng) for _ in range(shows)]
    episode_show = np.repeat(np.arange(shows), 20)
    n_episodes = len(episode_show)
    return Catalog(
        artist_ids=artist_ids,
        artist_names=artist_names,
        album_ids=album_ids,
        album_names=album_names,
        album_artist=np.asarray(album_artist),
        album_release=album_release,
        album_type=album_type,
        album_tracks=album_tracks,
        track_ids=track_ids,
        track_names=track_names,
        track_album=track_album,
        track_artist=track_artist,
        track_number=track_number,
        track_duration_ms=track_duration_ms,
        track_explicit=rng.random(n_tracks) < 0.15,
        artist_popularity=artist_popularity,
        show_ids=show_ids,
        show_names=show_names,
        show_publishers=show_publishers,
        episode_ids=[spotify_id(rng) for _ in range(n_episodes)],
        episode_names=[f"Episode {i % 20 + 1}: {_title(rng, 3)}" for i in range(n_episodes)],
        episode_show=episode_show,
        episode_duration_ms=rng.integers(15 * 60_000, 90 * 60_000, n_episodes),
        episode_release=[
            f"2026-{int(rng.integers(1, 11)):02d}-{int(rng.integers(1, 29)):02d}"
            for _ in range(n_episodes)
        ],
    )
