"""Durable poller state in MongoDB: per-user cursors and health, per-user leases, and each
developer account's calls against its daily budget.

Cursor safety: a cursor only moves after Kafka acknowledged every event before it, and is
written with ``j=True`` so an acknowledged cursor survives a crash of the database too.

Scale-out uses leases rather than a Kafka consumer group: on the local broker a group join takes
half the session timeout, and a lease is one atomic update. A poller owns a user while its lease
is fresh (renewed every loop, :data:`LEASE_TTL` long); if a poller dies, its leases lapse and
another poller claims them within ``LEASE_TTL`` plus one loop, well inside a minute.

Budgets (``spotify_budgets``, one document per developer account) are shared by every poller
that polls users of the account. Each poller writes its own calls per Spotify hour under
``pollers.<name>`` and reads the others': every poller counts all of the account's calls in the
hard 24 h limit, and paces itself to its share of the account's users. A poller that dies
leaves its hours behind, and they go on counting until they leave the window, as Spotify
counts them. The top-level fields are what ``/admin`` shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError
from pymongo.write_concern import WriteConcern

from auxcord.names import Collection
from auxcord.pollhealth import STALE_AFTER

LEASE_TTL = timedelta(seconds=30)


class PollStateStore:
    """``poll_state``: one document per user with its cursor and health."""

    def __init__(self, database: Database[dict[str, Any]]) -> None:
        self._states = database.get_collection(
            Collection.POLL_STATE, write_concern=WriteConcern(w=1, j=True)
        )

    def cursor(self, user_id: str) -> int | None:
        """The played_at (Unix ms) of the newest play already safely on Kafka."""
        document = self._states.find_one({"_id": user_id}, {"cursor_ms": 1})
        return int(document["cursor_ms"]) if document and "cursor_ms" in document else None

    def reads(self, user_id: str) -> UserReads:
        """The cursor, when recently-played was last read, and whether the user had to link
        again since (what a gap's cause depends on)."""
        document = self._states.find_one(
            {"_id": user_id}, {"cursor_ms": 1, "recent_read_at": 1, "last_error": 1}
        )
        document = document or {}
        cursor = document.get("cursor_ms")
        return UserReads(
            cursor_ms=int(cursor) if cursor is not None else None,
            read_at=document.get("recent_read_at"),
            needs_reauth=document.get("last_error") == "needs_reauth",
        )

    def record_success(
        self,
        user_id: str,
        now: datetime,
        *,
        lag_s: float | None = None,
        cursor_ms: int | None = None,
        recent_read: bool = False,
    ) -> None:
        """A good poll: clear the error state, and after recently-played (``recent_read``)
        record when, its lag, and move the cursor forward (never back).

        Call it only after Kafka acknowledged every event up to ``cursor_ms``. One journaled
        write, not two: on the local server each costs tens of milliseconds, and a thousand
        users' reads add up.
        """
        healthy: dict[str, Any] = {"last_success_at": now, "last_error": None}
        healthy["consecutive_errors"] = 0
        if lag_s is not None:
            healthy["lag_s"] = lag_s
        if recent_read:
            healthy["recent_read_at"] = now
        update: dict[str, Any] = {"$set": healthy}
        if cursor_ms:
            update["$max"] = {"cursor_ms": cursor_ms}
        self._states.update_one({"_id": user_id}, update, upsert=True)

    def record_error(self, user_id: str, now: datetime, error: str) -> None:
        self._states.update_one(
            {"_id": user_id},
            {
                "$set": {"last_error": error, "last_error_at": now},
                "$inc": {"consecutive_errors": 1},
            },
            upsert=True,
        )

    def count_rejected(self, user_id: str, reason: str) -> None:
        self._states.update_one(
            {"_id": user_id},
            {"$inc": {"rejected": 1}, "$set": {"last_rejection": reason}},
            upsert=True,
        )

    def get(self, user_id: str) -> dict[str, Any] | None:
        return self._states.find_one({"_id": user_id})


@dataclass(frozen=True)
class UserReads:
    cursor_ms: int | None
    read_at: datetime | None
    needs_reauth: bool


def stale_users(database: Database[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """Active users not polled successfully for 10 minutes: the admin page's alert list."""
    active = {
        doc["_id"]
        for doc in database[Collection.USERS].find({"needs_reauth": {"$ne": True}}, {"_id": 1})
    }
    fresh = {
        doc["_id"]
        for doc in database[Collection.POLL_STATE].find(
            {"last_success_at": {"$gte": now - STALE_AFTER}}, {"_id": 1}
        )
    }
    states = {
        doc["_id"]: doc
        for doc in database[Collection.POLL_STATE].find({"_id": {"$in": sorted(active - fresh)}})
    }
    return [
        {
            "user_id": user,
            "last_success_at": states.get(user, {}).get("last_success_at"),
            "last_error": states.get(user, {}).get("last_error"),
        }
        for user in sorted(active - fresh)
    ]


class LeaseStore:
    """``poller_leases``: which poller process polls which user, for how long."""

    def __init__(self, database: Database[dict[str, Any]], owner: str) -> None:
        self._leases = database[Collection.POLLER_LEASES]
        self.owner = owner

    def claim(self, user_id: str, now: datetime) -> bool:
        """Take or renew the lease on ``user_id``; False if another live poller holds it."""
        try:
            document = self._leases.find_one_and_update(
                {"_id": user_id, "$or": [{"owner": self.owner}, {"expires_at": {"$lt": now}}]},
                {"$set": {"owner": self.owner, "kind": "user", "expires_at": now + LEASE_TTL}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            return False  # the lease exists and is someone else's, still fresh
        return document is not None and document["owner"] == self.owner

    def renew(self, user_ids: list[str], now: datetime) -> set[str]:
        """Extend this poller's leases among ``user_ids``; the ids that are still its own.

        One write for all of them: renewing a thousand leases one by one every few seconds
        was most of a large poller's database traffic.
        """
        if not user_ids:
            return set()
        ours = {"_id": {"$in": user_ids}, "owner": self.owner}
        self._leases.update_many(ours, {"$set": {"expires_at": now + LEASE_TTL}})
        return {doc["_id"] for doc in self._leases.find(ours, {"_id": 1})}

    def release(self, user_id: str) -> None:
        """Give ``user_id`` back, so a poller with fewer users can take it."""
        self._leases.delete_one({"_id": user_id, "owner": self.owner})

    def heartbeat(self, now: datetime) -> None:
        """Say this poller is alive, so the others leave it its fair share."""
        self._leases.update_one(
            {"_id": f"poller:{self.owner}"},
            {"$set": {"owner": self.owner, "kind": "poller", "expires_at": now + LEASE_TTL}},
            upsert=True,
        )

    def live_pollers(self, now: datetime) -> int:
        return self._leases.count_documents({"kind": "poller", "expires_at": {"$gte": now}})

    def release_all(self) -> None:
        self._leases.delete_many({"owner": self.owner})

    def owners(self) -> dict[str, str]:
        """Which poller holds each user's lease."""
        return {doc["_id"]: doc["owner"] for doc in self._leases.find({"kind": "user"})}


@dataclass(frozen=True)
class StoredBudget:
    """What ``spotify_budgets`` holds for one account, as a starting poller needs it."""

    locked_until: datetime | None
    lock_reason: str | None
    own_hours: dict[int, int]
    """This poller's calls per Spotify hour (Unix seconds times the speed, // 3600)."""
    others: list[tuple[int, int]]
    """Other pollers' calls as (Spotify hour, count)."""


def _poller_key(owner: str) -> str:
    """A poller name as a field name (MongoDB paths split at dots; ``$`` may not lead)."""
    return owner.replace(".", "_").replace("$", "_")


class BudgetStore:
    """``spotify_budgets``: one document per developer account (see the module docstring)."""

    def __init__(self, database: Database[dict[str, Any]], owner: str) -> None:
        self._budgets = database.get_collection(
            Collection.SPOTIFY_BUDGETS, write_concern=WriteConcern(w=1, j=True)
        )
        self._key = _poller_key(owner)

    def load(self, account_id: str) -> StoredBudget:
        document = self._budgets.find_one({"_id": account_id}) or {}
        pollers: dict[str, Any] = document.get("pollers") or {}
        hours = {
            key: {int(hour): int(count) for hour, count in (entry.get("hours") or {}).items()}
            for key, entry in pollers.items()
        }
        return StoredBudget(
            locked_until=document.get("locked_until"),
            lock_reason=document.get("lock_reason"),
            own_hours=hours.pop(self._key, {}),
            others=[(hour, n) for counts in hours.values() for hour, n in counts.items()],
        )

    def save(
        self,
        account_id: str,
        *,
        client_ids: list[str],
        budget: int,
        calls_24h: int,
        refused_24h: int,
        locked_until: datetime | None,
        lock_reason: str | None,
        projected_exhaustion_at: datetime | None,
        own_hours: dict[int, int],
        now: datetime,
    ) -> None:
        """Write this poller's hours and the account's figures. A lock only ever lengthens
        here: another poller's later lock is kept."""
        self._budgets.update_one(
            {"_id": account_id},
            {
                "$set": {
                    "client_ids": sorted(client_ids),
                    "budget": budget,
                    "calls_24h": calls_24h,
                    "refused_24h": refused_24h,
                    "projected_exhaustion_at": projected_exhaustion_at,
                    "updated_at": now,
                    f"pollers.{self._key}": {
                        "hours": {str(hour): n for hour, n in own_hours.items()},
                        "updated_at": now,
                    },
                },
            },
            upsert=True,
        )
        if locked_until is not None:
            self._budgets.update_one(
                {
                    "_id": account_id,
                    "$or": [
                        {"locked_until": None},
                        {"locked_until": {"$lt": locked_until}},
                    ],
                },
                {"$set": {"locked_until": locked_until, "lock_reason": lock_reason}},
            )
        else:
            # A lock that has ended is cleared, so /admin stops showing it.
            self._budgets.update_one(
                {"_id": account_id, "locked_until": {"$lte": now}},
                {"$set": {"locked_until": None, "lock_reason": None}},
            )
        self._budgets.update_one(
            {"_id": account_id, "locked_until": {"$exists": False}},
            {"$set": {"locked_until": None, "lock_reason": None}},
        )
