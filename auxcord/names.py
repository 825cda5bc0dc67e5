"""Names shared by every component: Kafka topics, MongoDB collections and GCS paths.

Keeping them in one module means a producer and a consumer can never disagree on a topic name,
and a rename is a one-line change.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum


class Topic(StrEnum):
    """Kafka topics, with the partition count each is created with."""

    LISTENS = "auxcord.listens"
    NOW_PLAYING = "auxcord.now-playing"

    @property
    def partitions(self) -> int:
        return _PARTITIONS[self]


# Listens are keyed by user id, so per-user order holds within a partition. Four partitions let
# the streaming job read in parallel on a small cluster; now-playing is lighter.
_PARTITIONS: dict[Topic, int] = {Topic.LISTENS: 4, Topic.NOW_PLAYING: 2}


class Collection(StrEnum):
    """MongoDB collections in the ``auxcord`` database."""

    # Accounts and groups (account linking, dashboard).
    USERS = "users"
    OAUTH_STATES = "oauth_states"
    GROUPS = "groups"
    INVITES = "invites"
    # Ingestion (producers, streaming).
    POLL_STATE = "poll_state"
    POLLER_LEASES = "poller_leases"
    HISTORY_IMPORTS = "history_imports"
    LISTENS = "listens"
    NOW_PLAYING = "now_playing"
    DEAD_LETTERS = "dead_letters"
    PIPELINE_STATUS = "pipeline_status"
    JOB_LOCKS = "job_locks"
    # The Spotify daily quota: spans of possibly missing plays, and each developer account's
    # calls against its budget.
    GAPS = "gaps"
    SPOTIFY_BUDGETS = "spotify_budgets"
    # Analytics (one collection per kind of aggregate) and recommendations.
    USER_DAILY = "user_daily"
    GROUP_DAILY = "group_daily"
    USER_ROLLUPS = "user_rollups"
    GROUP_ROLLUPS = "group_rollups"
    GROUP_RECAPS = "group_recaps"
    RECOMMENDATIONS = "recommendations"
    MODEL_RUNS = "model_runs"


RAW_LISTENS_PREFIX = "raw/listens"


def raw_listens_partition(played_at: datetime) -> str:
    """The GCS prefix ``raw/listens/dt=YYYY-MM-DD/hour=HH`` for plays ending at ``played_at``."""
    return f"{RAW_LISTENS_PREFIX}/dt={played_at:%Y-%m-%d}/hour={played_at:%H}"
