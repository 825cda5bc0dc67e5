"""Pending sign-ins: the OAuth ``state``, its PKCE verifier and the browser it belongs to.

A state is random, bound to one browser session, valid for ten minutes, and consumed
atomically by the callback, so a forged, replayed, stolen or stale callback finds nothing.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.database import Database

from auxcord import indexes
from auxcord.names import Collection

STATE_TTL = timedelta(minutes=10)


@dataclass(frozen=True)
class PendingSignIn:
    state: str
    code_verifier: str
    code_challenge: str
    client_id: str
    timezone: str | None


class OAuthStates:
    def __init__(self, database: Database[dict[str, Any]]) -> None:
        self._states = database[Collection.OAUTH_STATES]

    def ensure_indexes(self) -> None:
        # MongoDB drops expired states by itself; the callback also checks the expiry.
        indexes.ensure_indexes(self._states.database, Collection.OAUTH_STATES)

    def begin(
        self,
        *,
        browser: str,
        code_verifier: str,
        code_challenge: str,
        client_id: str,
        timezone: str | None,
    ) -> str:
        state = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        self._states.insert_one(
            {
                "_id": state,
                "browser": browser,
                "code_verifier": code_verifier,
                "code_challenge": code_challenge,
                "client_id": client_id,
                "timezone": timezone,
                "created_at": now,
                "expires_at": now + STATE_TTL,
            }
        )
        return state

    def consume(self, state: str, browser: str) -> PendingSignIn | None:
        """The pending sign-in for ``state`` in this browser, removed; None if not valid."""
        document = self._states.find_one_and_delete({"_id": state, "browser": browser})
        if document is None or document["expires_at"] <= datetime.now(UTC):
            return None
        return PendingSignIn(
            state,
            document["code_verifier"],
            document["code_challenge"],
            document["client_id"],
            document.get("timezone"),
        )
