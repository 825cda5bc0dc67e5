"""Linked Spotify accounts: who they are, which app they came through, and their tokens.

Every component reads and writes users through :class:`AccountStore`, never with raw queries,
so the encryption of tokens cannot be forgotten in one place. Documents look like::

    {_id: spotify user id, display_name, country, timezone, client_id,
     tokens: {access_token: <ciphertext>, refresh_token: <ciphertext>, expires_at, scope},
     needs_reauth: bool, needs_reauth_reason, linked_at, updated_at, session_version,
     ended_sessions: [session id, ...]}

``session_version`` is copied into each signed-in browser's session; "sign out everywhere"
increments it, and every session carrying an older version stops working. Signing out one
browser adds its session's id to ``ended_sessions``, so a copy of that cookie stops working
too; when that list is full, the sign-out signs the account out everywhere instead (and starts
an empty list), so no signed-out cookie ever works again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pymongo.database import Database

from auxcord.errors import AuxcordError
from auxcord.names import Collection
from auxcord.settings import SpotifyApp
from auxcord.tokens import TokenCipher

USERS_PER_APP = 5
"""Spotify development-mode apps admit five users each."""
ENDED_SESSIONS_KEPT = 50
"""Signed-out session ids kept per account: the sign-out after this many signs every session
out (a new ``session_version``), so the list stays small and forgets nothing that still works."""


class AppsFull(AuxcordError):
    """Every configured Spotify app already has its five users."""


class NotLinked(AuxcordError):
    """The user has no usable tokens: they must link (again)."""


@dataclass(frozen=True)
class LinkedAccount:
    """A linked user, without tokens."""

    user_id: str
    display_name: str
    country: str | None
    timezone: str
    client_id: str
    needs_reauth: bool
    session_version: int = 0
    ended_sessions: frozenset[str] = frozenset()


@dataclass(frozen=True)
class TokenSet:
    """Decrypted tokens, held in memory only for the call that needs them."""

    access_token: str
    refresh_token: str
    expires_at: datetime
    scope: str


def valid_timezone(name: str | None) -> str:
    """``name`` if it is an IANA zone, else ``UTC``."""
    if not name:
        return "UTC"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return "UTC"
    return name


def _account(document: dict[str, Any]) -> LinkedAccount:
    return LinkedAccount(
        user_id=document["_id"],
        display_name=document.get("display_name") or document["_id"],
        country=document.get("country"),
        timezone=document.get("timezone", "UTC"),
        client_id=document["client_id"],
        needs_reauth=bool(document.get("needs_reauth")),
        session_version=int(document.get("session_version") or 0),
        ended_sessions=frozenset(document.get("ended_sessions") or ()),
    )


class AccountStore:
    """The users collection, with tokens encrypted by ``cipher``."""

    def __init__(self, database: Database[dict[str, Any]], cipher: TokenCipher) -> None:
        self._users = database[Collection.USERS]
        self._cipher = cipher

    def _users_per_app(self) -> dict[str, int]:
        pipeline = [{"$group": {"_id": "$client_id", "n": {"$sum": 1}}}]
        return {row["_id"]: row["n"] for row in self._users.aggregate(pipeline)}

    def choose_app(self, apps: list[SpotifyApp]) -> SpotifyApp:
        """The configured app with the fewest linked users (the sign-in's app)."""
        counts = self._users_per_app()
        return min(apps, key=lambda app: counts.get(app.client_id, 0))

    def check_room(self, client_id: str, user_id: str) -> None:
        """Raise :class:`AppsFull` if ``user_id`` would be a sixth user of ``client_id``.

        A user already linked through that app re-links freely; only new users count.
        """
        existing = self._users.find_one({"_id": user_id}, {"client_id": 1})
        if existing and existing.get("client_id") == client_id:
            return
        if self._users_per_app().get(client_id, 0) >= USERS_PER_APP:
            raise AppsFull(
                f"every Spotify app already has {USERS_PER_APP} users; the host must add "
                "another app to AUXCORD_SPOTIFY_EXTRA_APPS"
            )

    def link(
        self,
        *,
        user_id: str,
        display_name: str | None,
        country: str | None,
        timezone: str | None,
        client_id: str,
        token_info: dict[str, Any],
    ) -> None:
        """Store (or refresh) a linked account; clears any needs-reauth mark."""
        now = datetime.now(UTC)
        existing = self._users.find_one({"_id": user_id}, {"client_id": 1, "timezone": 1})
        self._users.update_one(
            {"_id": user_id},
            {
                "$set": {
                    "display_name": display_name or user_id,
                    "country": country,
                    "timezone": valid_timezone(timezone or (existing or {}).get("timezone")),
                    "client_id": client_id,
                    "tokens": self._encrypted(token_info),
                    "needs_reauth": False,
                    "needs_reauth_reason": None,
                    "updated_at": now,
                },
                "$setOnInsert": {"linked_at": now},
            },
            upsert=True,
        )

    def _encrypted(self, token_info: dict[str, Any]) -> dict[str, Any]:
        expires_at = datetime.now(UTC) + timedelta(seconds=int(token_info["expires_in"]))
        return {
            "access_token": self._cipher.encrypt(token_info["access_token"]),
            "refresh_token": self._cipher.encrypt(token_info["refresh_token"]),
            "expires_at": expires_at,
            "scope": token_info.get("scope", ""),
        }

    def save_tokens(self, user_id: str, token_info: dict[str, Any]) -> TokenSet:
        """Store refreshed tokens (``token_info`` must carry the refresh token to keep); returns
        them as stored, for a caller that caches them (write-through)."""
        encrypted = self._encrypted(token_info)
        self._users.update_one(
            {"_id": user_id},
            {"$set": {"tokens": encrypted, "updated_at": datetime.now(UTC)}},
        )
        return TokenSet(
            access_token=token_info["access_token"],
            refresh_token=token_info["refresh_token"],
            expires_at=encrypted["expires_at"],
            scope=encrypted["scope"],
        )

    def get(self, user_id: str) -> LinkedAccount | None:
        document = self._users.find_one({"_id": user_id}, {"tokens": 0})
        return _account(document) if document else None

    def tokens(self, user_id: str) -> TokenSet:
        document = self._users.find_one({"_id": user_id}, {"tokens": 1, "needs_reauth": 1})
        if not document or not document.get("tokens") or document.get("needs_reauth"):
            raise NotLinked(f"user {user_id} must link their Spotify account again")
        stored = document["tokens"]
        return TokenSet(
            access_token=self._cipher.decrypt(stored["access_token"]),
            refresh_token=self._cipher.decrypt(stored["refresh_token"]),
            expires_at=stored["expires_at"],
            scope=stored.get("scope", ""),
        )

    def mark_needs_reauth(self, user_id: str, reason: str) -> None:
        """Stop using this user's tokens until they link again (the dashboard shows why)."""
        self._users.update_one(
            {"_id": user_id},
            {
                "$set": {
                    "needs_reauth": True,
                    "needs_reauth_reason": reason,
                    "updated_at": datetime.now(UTC),
                }
            },
        )

    def end_session(self, user_id: str, session_id: str) -> None:
        """Sign one browser's session out, for good, whoever holds a copy of its cookie.

        The id is recorded while the list has room. A full list is never trimmed, since the
        trimmed id's cookie would work again: the account is signed out everywhere instead,
        which outdates every listed session too, so the list starts afresh. (Concurrent
        sign-outs at a full list may each do so: still safe.)
        """
        recorded = self._users.update_one(
            {"_id": user_id, f"ended_sessions.{ENDED_SESSIONS_KEPT - 1}": {"$exists": False}},
            {"$push": {"ended_sessions": session_id}},
        )
        if recorded.matched_count == 0:
            self._users.update_one(
                {"_id": user_id}, {"$inc": {"session_version": 1}, "$set": {"ended_sessions": []}}
            )

    def end_sessions(self, user_id: str) -> None:
        """Sign ``user_id`` out of every browser: sessions carry the version they began with."""
        self._users.update_one({"_id": user_id}, {"$inc": {"session_version": 1}})

    def set_timezone(self, user_id: str, timezone: str) -> None:
        self._users.update_one({"_id": user_id}, {"$set": {"timezone": valid_timezone(timezone)}})

    def list_active(self, client_id: str | None = None) -> list[LinkedAccount]:
        """Linked users whose tokens can be used, optionally for one app."""
        query: dict[str, Any] = {"needs_reauth": {"$ne": True}}
        if client_id is not None:
            query["client_id"] = client_id
        return [_account(d) for d in self._users.find(query, {"tokens": 0}).sort("_id", 1)]
