"""The aggregate documents MongoDB holds, defined once: what the Spark jobs store and the web
app reads.

``user_daily`` (:class:`UserDay`), ``group_daily`` (:class:`GroupDay`), ``user_rollups``
(:class:`UserRollup`), ``group_rollups`` (:class:`GroupRollup`), ``group_recaps``
(:class:`GroupRecap`) and ``recommendations`` (:class:`Recommendations`). The writers are
:mod:`analytics.aggregate` and :mod:`analytics.recommend.job`; ``tests/test_documents.py`` checks
every document of a real run against these models, so a writer that adds, drops or renames a
field fails there until the model says so too. Ids and period keys: :mod:`auxcord.periods`.

Extra fields are refused, which also lets a day and a rollup (``streak`` against
``longest_streak``, ``active_members`` against ``period``) tell themselves apart. Where a
document names a person (``user_id``, ``user_a``, ``user_b``) the id may be ``None``: the web
app reads group documents with people who left the group made anonymous.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Person = str | None
"""A user id, or ``None`` for someone who has left the group (as the web app reads it)."""
Number = int | float
"""A leaderboard's value: minutes are fractional, plays, discoveries and streaks whole."""


class Part(BaseModel):
    """A part of a stored document: exactly the fields listed."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class StoredDocument(Part):
    """A stored document: its ``_id`` (:func:`auxcord.periods.doc_id`) and its fields.

    The id is read but never dumped: pages and the API show the fields, not the key. MongoDB
    gives every stored document one; it is optional here so that the fields alone (what
    :mod:`api.reads` hands the pages and the API) validate too."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: str | None = Field(default=None, alias="_id", exclude=True)


# Entries of top lists and full counts.


class TrackCount(Part):
    """One track's plays, in a day's or period's full ``track_counts``."""

    track_key: str
    track_name: str
    artist_name: str
    plays: int


class ArtistCount(Part):
    artist_name: str
    plays: int


class AlbumCount(Part):
    album_name: str
    artist_name: str
    plays: int


class TopTrack(TrackCount):
    """A track of a top list: ``rank`` 1 is the most played."""

    rank: int


class TopArtist(ArtistCount):
    rank: int


class TopAlbum(AlbumCount):
    rank: int


class GroupTopTrack(TopTrack):
    """A track of a group's top list, and how many members played it."""

    listeners: int


class GroupTopArtist(TopArtist):
    listeners: int


# A group's figures.


class LeaderboardEntry(Part):
    value: Number
    user_id: Person


class Leaderboards(Part):
    """The members ranked, highest first, by each figure."""

    minutes: list[LeaderboardEntry]
    plays: list[LeaderboardEntry]
    discoveries: list[LeaderboardEntry]
    streak: list[LeaderboardEntry]


class SharedArtist(Part):
    """An artist behind a taste-match: ``together`` is the smaller of the two members' plays."""

    rank: int
    artist_name: str
    together: int


class TasteMatch(Part):
    """Two members' taste-match: the cosine similarity of their artist plays, 0 to 1."""

    score: float
    user_a: Person
    user_b: Person
    shared_artists: list[SharedArtist]


class MemberPlays(Part):
    user_id: Person
    plays: int


class SameSong(Part):
    """A track two or more members played on the day."""

    listeners: int
    plays: int
    track_key: str
    track_name: str
    artist_name: str
    members: list[MemberPlays]


class DayMinutes(Part):
    day: str
    minutes: float


# The documents.


class UserFigures(StoredDocument):
    """What a user's day and a user's rollup both hold."""

    user_id: str
    plays: int
    minutes: float
    distinct_tracks: int
    distinct_artists: int
    new_tracks: int
    new_artists: int
    hours: list[int] = Field(min_length=24, max_length=24)
    """Plays per local hour, 0 to 23."""
    top_tracks: list[TopTrack]
    top_artists: list[TopArtist]
    top_albums: list[TopAlbum]


class UserDay(UserFigures):
    """``user_daily``: one user's local day, ``_id`` ``user:YYYY-MM-DD``."""

    day: str
    """``YYYY-MM-DD``, on the user's clock."""
    streak: int
    """Days in a row with a play, ending this one."""
    track_counts: list[TrackCount]
    artist_counts: list[ArtistCount]
    album_counts: list[AlbumCount]


class UserRollup(UserFigures):
    """``user_rollups``: one user's week, month, year or all-time, ``_id`` ``user:period``."""

    period: str
    """The period's key (:func:`auxcord.periods.period_key`)."""
    active_days: int
    longest_streak: int
    track_counts: list[TrackCount] | None = None
    """Full counts: kept by months and years only (what the next level sums)."""
    artist_counts: list[ArtistCount] | None = None
    album_counts: list[AlbumCount] | None = None
    day_minutes: list[DayMinutes] | None = None
    """Months only: each active day's minutes, for the yearly recap's busiest day."""


class GroupFigures(StoredDocument):
    """What a group's day and a group's rollup both hold."""

    group_id: str
    plays: int
    minutes: float
    leaderboards: Leaderboards
    top_tracks: list[GroupTopTrack]
    top_artists: list[GroupTopArtist]
    taste_match: list[TasteMatch]
    """Every pair of members who share an artist, best matched first."""


class GroupDay(GroupFigures):
    """``group_daily``: one group's day, ``_id`` ``group:YYYY-MM-DD``."""

    day: str
    active_members: int
    same_songs: list[SameSong]


class GroupRollup(GroupFigures):
    """``group_rollups``: one group's week, month, year or all-time, ``_id`` ``group:period``."""

    period: str


class GroupRecap(StoredDocument):
    """``group_recaps``: a group's Wrapped-style year, ``_id`` ``group:YYYY``."""

    group_id: str
    year: str
    plays: int
    minutes: float
    top_tracks: list[GroupTopTrack]
    top_artists: list[GroupTopArtist]
    most_minutes: LeaderboardEntry | None
    most_discoveries: LeaderboardEntry | None
    longest_streak: LeaderboardEntry | None
    best_match: TasteMatch | None
    """None when no two members shared an artist all year."""
    busiest_day: DayMinutes


class FriendPlays(Part):
    """A friend who explains a recommendation, and how often they played the track."""

    user_id: str
    plays: int


class RecommendedTrack(Part):
    rank: int
    track_id: str
    track_name: str
    artist_name: str
    album_name: str | None = None
    album_image_url: str | None = None
    """Both stored by every run (``None`` when unknown); lists stored before they were lack
    them."""
    score: float
    friends: list[FriendPlays]


class Recommendations(StoredDocument):
    """``recommendations``: one run's list for one user, ``_id`` ``run_id:user``."""

    run_id: str
    user_id: str
    generated_at: datetime
    model: Literal["als", "popularity"]
    cold_start: bool
    fallback_reason: str | None
    items: list[RecommendedTrack]
