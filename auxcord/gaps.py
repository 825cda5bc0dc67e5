"""Gaps in a user's collected history: spans where plays may be missing, and their repair.

Spotify's recently-played list holds only the last 50 plays. When a read cannot reach back to
the user's cursor (all 50 items are newer than it), the plays between the cursor and the oldest
item returned may be lost: the poller was locked out by the daily quota, was down, or the
user's sign-in expired. A gap records that span, so the user is told exactly which hours may be
missing, and an import of their Spotify data export that covers the span repairs it.

Writers: the pollers (:meth:`GapStore.record`) and the history import
(:meth:`GapStore.repair_covered`). Readers: the profile page and ``/admin``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from pymongo import DESCENDING
from pymongo.database import Database
from pymongo.write_concern import WriteConcern

from auxcord import indexes
from auxcord.names import Collection


class GapCause(StrEnum):
    """Why plays may be missing, in the words the profile shows."""

    QUOTA_LOCKOUT = "quota_lockout"
    POLLER_DOWN = "poller_down"
    TOKEN_EXPIRED = "token_expired"  # noqa: S105 - a cause, not a secret
    UNKNOWN = "unknown"

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS: dict[GapCause, str] = {
    GapCause.QUOTA_LOCKOUT: "Spotify refused auxcord's calls for a while (daily quota)",
    GapCause.POLLER_DOWN: "auxcord's poller was not running",
    GapCause.TOKEN_EXPIRED: "your Spotify sign-in had expired",
    GapCause.UNKNOWN: "auxcord could not read your plays",
}


@dataclass(frozen=True)
class Gap:
    """Plays of ``user_id`` that ended in ``(start, end)`` may be missing."""

    user_id: str
    start: datetime
    end: datetime
    cause: GapCause
    detected_at: datetime
    repaired_at: datetime | None = None

    @property
    def gap_id(self) -> str:
        return gap_id(self.user_id, self.start)

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Gap:
        return cls(
            user_id=document["user_id"],
            start=document["start"],
            end=document["end"],
            cause=GapCause(document["cause"]),
            detected_at=document["detected_at"],
            repaired_at=document.get("repaired_at"),
        )


def gap_id(user_id: str, start: datetime) -> str:
    """Deterministic, so the same gap seen twice (a retried read) is recorded once."""
    return f"{user_id}:{int(start.timestamp() * 1000)}"


class GapStore:
    """``gaps``: one document per span of possibly missing plays."""

    def __init__(self, database: Database[dict[str, Any]]) -> None:
        # Journaled: a gap is the only record that plays were lost, and it must survive a crash.
        self._gaps = database.get_collection(
            Collection.GAPS, write_concern=WriteConcern(w=1, j=True)
        )

    def record(
        self, user_id: str, start: datetime, end: datetime, cause: GapCause, now: datetime
    ) -> Gap:
        """Record (idempotently) that plays ending between ``start`` and ``end`` may be lost."""
        gap = Gap(user_id, start, end, cause, detected_at=now)
        self._gaps.update_one(
            {"_id": gap.gap_id},
            {
                "$setOnInsert": {
                    "user_id": user_id,
                    "start": start,
                    "cause": cause.value,
                    "detected_at": now,
                    "repaired_at": None,
                },
                # A retried read may see a later oldest item: the gap only ever widens.
                "$max": {"end": end},
            },
            upsert=True,
        )
        return gap

    def open_for_user(self, user_id: str) -> list[Gap]:
        """The user's unrepaired gaps, newest first."""
        cursor = self._gaps.find({"user_id": user_id, "repaired_at": None}).sort(
            "start", DESCENDING
        )
        return [Gap.from_document(document) for document in cursor]

    def open_all(self, limit: int = 200) -> list[Gap]:
        """Every unrepaired gap, newest first (for ``/admin``)."""
        cursor = self._gaps.find({"repaired_at": None}).sort("start", DESCENDING).limit(limit)
        return [Gap.from_document(document) for document in cursor]

    def repair_covered(
        self, user_id: str, first_play: datetime, last_play: datetime, now: datetime
    ) -> int:
        """Mark repaired the user's open gaps that an import spanning ``first_play`` to
        ``last_play`` (ends of its first and last plays) covers; returns how many.

        An export covers a gap when it reaches from before the gap to after it: every play that
        ended inside the gap is then in the export, and the import stores it (once).
        """
        result = self._gaps.update_many(
            {
                "user_id": user_id,
                "repaired_at": None,
                "start": {"$gte": first_play},
                "end": {"$lte": last_play},
            },
            {"$set": {"repaired_at": now}},
        )
        return int(result.modified_count)

    def ensure_indexes(self) -> None:
        indexes.ensure_indexes(self._gaps.database, Collection.GAPS)
