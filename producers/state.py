"""Durable poller state in MongoDB: per-user cursors and health, and per-user leases.

Cursor safety: a cursor only moves after Kafka acknowledged every event before it, and is
written with ``j=True`` so an acknowledged cursor survives a crash of the database too.

Scale-out uses leases rather than a Kafka consumer group: on the local broker a group join takes
half the session timeout, and a lease is one atomic update. A poller owns a user while its lease
is fresh (renewed every loop, :data:`LEASE_TTL` long); if a poller dies, its leases lapse and
another poller claims them within ``LEASE_TTL`` plus one loop, well inside a minute.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError
from pymongo.write_concern import WriteConcern

from auxcord.names import Collection

LEASE_TTL = timedelta(seconds=30)
STALE_AFTER = timedelta(minutes=10)


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

    def record_success(
        self,
        user_id: str,
        now: datetime,
        *,
        lag_s: float | None = None,
        cursor_ms: int | None = None,
    ) -> None:
        """A good poll: clear the error state, and after recently-played record its lag and
        move the cursor forward (never back).

        Call it only after Kafka acknowledged every event up to ``cursor_ms``. One journaled
        write, not two: on the local server each costs tens of milliseconds, and a thousand
        users' reads add up.
        """
        healthy: dict[str, Any] = {"last_success_at": now, "last_error": None}
        healthy["consecutive_errors"] = 0
        if lag_s is not None:
            healthy["lag_s"] = lag_s
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
