"""Every MongoDB index auxcord relies on, in one registry.

`auxcord provision` creates them all; each component also creates those of the collections it
writes before it writes them (cheap when they exist), so a fresh database works without a
provision. Index names are pymongo's defaults (``user_id_1_played_at_-1``), the names these
indexes always had, so an existing deployment sees no change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from auxcord.names import Collection

if TYPE_CHECKING:
    from pymongo import IndexModel
    from pymongo.database import Database

ASCENDING, DESCENDING = 1, -1


@dataclass(frozen=True)
class Index:
    """One index: its keys in order, and for a TTL index the seconds after the date in its
    only key at which MongoDB deletes the document (0: at that date)."""

    keys: tuple[tuple[str, int], ...]
    expire_after_seconds: int | None = None

    @property
    def name(self) -> str:
        """The name MongoDB knows it by (pymongo's default)."""
        return "_".join(f"{field}_{direction}" for field, direction in self.keys)

    def model(self) -> IndexModel:
        from pymongo import IndexModel

        options: dict[str, Any] = {}
        if self.expire_after_seconds is not None:
            options["expireAfterSeconds"] = self.expire_after_seconds
        return IndexModel(list(self.keys), **options)


INDEXES: dict[Collection, tuple[Index, ...]] = {
    # Accounts and groups: a user's groups; invitations expire by themselves.
    Collection.GROUPS: (Index((("members", ASCENDING),)),),
    Collection.INVITES: (Index((("expires_at", ASCENDING),), expire_after_seconds=0),),
    # Sign-ins in progress: MongoDB drops expired states; the callback also checks the expiry.
    Collection.OAUTH_STATES: (Index((("expires_at", ASCENDING),), expire_after_seconds=0),),
    # The streaming sinks and the dashboard's reads: a user's latest plays, everyone's latest.
    Collection.LISTENS: (
        Index((("user_id", ASCENDING), ("played_at", DESCENDING))),
        Index((("played_at", DESCENDING),)),
    ),
    # A TTL index clears stale states; readers also filter on expires_at, so the feed is right
    # even before the TTL monitor runs.
    Collection.NOW_PLAYING: (Index((("expires_at", ASCENDING),), expire_after_seconds=0),),
    Collection.DEAD_LETTERS: (Index((("stored_at", DESCENDING),)),),
    # A user's open gaps, latest first (the pollers and the history import).
    Collection.GAPS: (
        Index((("user_id", ASCENDING), ("repaired_at", ASCENDING), ("start", DESCENDING))),
    ),
    # The dashboard's reads of aggregates: one user's days, one group's days, a day's
    # leaderboard, and the same for rollup periods.
    Collection.USER_DAILY: (
        Index((("user_id", ASCENDING), ("day", DESCENDING))),
        Index((("day", ASCENDING),)),
    ),
    Collection.GROUP_DAILY: (
        Index((("group_id", ASCENDING), ("day", DESCENDING))),
        Index((("day", ASCENDING),)),
    ),
    Collection.USER_ROLLUPS: (
        Index((("user_id", ASCENDING), ("period", ASCENDING))),
        Index((("period", ASCENDING),)),
    ),
    Collection.GROUP_ROLLUPS: (Index((("group_id", ASCENDING), ("period", ASCENDING))),),
    # A user's latest recommendation run.
    Collection.RECOMMENDATIONS: (Index((("user_id", ASCENDING), ("run_id", DESCENDING))),),
}
"""Collection -> its indexes besides ``_id``. Collections not named here need none."""

STREAMING = (Collection.LISTENS, Collection.NOW_PLAYING, Collection.DEAD_LETTERS)
AGGREGATES = (
    Collection.USER_DAILY,
    Collection.GROUP_DAILY,
    Collection.USER_ROLLUPS,
    Collection.GROUP_ROLLUPS,
)


def ensure_indexes(database: Database[dict[str, Any]], *collections: Collection) -> list[str]:
    """Create the registered indexes of ``collections`` (all of them when none is named) in
    ``database``; cheap when they exist. Returns their names as ``collection.index``."""
    ensured: list[str] = []
    for collection in collections or tuple(INDEXES):
        indexes = INDEXES.get(collection, ())
        if indexes:
            database[collection].create_indexes([index.model() for index in indexes])
            ensured.extend(f"{collection}.{index.name}" for index in indexes)
    return ensured
