"""The simulator's mutable state: virtual clock, OAuth codes and tokens, rate budgets, faults.

Kept apart from the HTTP layer so each rule (token expiry, rolling rate window, single-use codes)
reads as plain code and can be unit-tested without a server.

Client credentials: by default any client id is accepted, with any secret or with PKCE. Passing
``apps={"id": "secret"}`` (``--apps id:secret,...``) makes the simulator check secrets for those
ids like Spotify does. Each client id has its own rolling 30 s rate budget.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from devtools.simulator.model import iso_ms

ACCESS_TOKEN_TTL_S = 3600
REFRESH_TOKEN_TTL_S = 182 * 24 * 3600
"""Spotify's refresh tokens now die six months after authorisation."""
CODE_TTL_S = 600


class VirtualClock:
    """Virtual time that runs ``speed`` times faster than real time, and can jump forward."""

    def __init__(self, start: datetime, speed: float) -> None:
        self._start_ms = int(start.astimezone(UTC).timestamp() * 1000)
        self._real_start = time.monotonic()
        self._offset_ms = 0
        self.speed = speed

    def now_ms(self) -> int:
        elapsed = time.monotonic() - self._real_start
        return self._start_ms + self._offset_ms + int(elapsed * 1000 * self.speed)

    def advance(self, seconds: float) -> None:
        self._offset_ms += int(seconds * 1000)

    def set_speed(self, speed: float) -> None:
        """Run at ``speed`` from now on (0 freezes virtual time), without a jump."""
        now_ms = self.now_ms()
        self._start_ms, self._offset_ms, self._real_start = now_ms, 0, time.monotonic()
        self.speed = speed

    def real_seconds(self, virtual_seconds: float) -> float:
        """How long ``virtual_seconds`` take in real time."""
        return virtual_seconds / self.speed if self.speed > 0 else virtual_seconds


@dataclass
class AuthCode:
    client_id: str
    redirect_uri: str
    user_id: str
    scope: str
    code_challenge: str | None
    expires_ms: int


@dataclass
class AccessToken:
    client_id: str
    user_id: str
    scope: str
    expires_ms: int


@dataclass
class RefreshToken:
    client_id: str
    user_id: str
    scope: str
    expires_ms: int
    revoked: bool = False


class OAuthError(Exception):
    """An accounts-service error, answered as ``{"error": code, "error_description": ...}``."""

    def __init__(self, code: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.code, self.description, self.status = code, description, status


class Accounts:
    """Authorization codes, access tokens and refresh tokens, timed on the virtual clock."""

    def __init__(self, clock: VirtualClock, apps: dict[str, str] | None = None) -> None:
        self.clock = clock
        self.apps = apps or {}
        self.codes: dict[str, AuthCode] = {}
        self.access: dict[str, AccessToken] = {}
        self.refresh: dict[str, RefreshToken] = {}
        self.refreshes = 0
        self._lock = threading.Lock()

    def issue_code(
        self,
        client_id: str,
        redirect_uri: str,
        user_id: str,
        scope: str,
        code_challenge: str | None,
    ) -> str:
        code = secrets.token_urlsafe(32)
        with self._lock:
            self.codes[code] = AuthCode(
                client_id,
                redirect_uri,
                user_id,
                scope,
                code_challenge,
                self.clock.now_ms() + CODE_TTL_S * 1000,
            )
        return code

    def _check_client(self, client_id: str, secret: str | None, pkce: bool) -> None:
        if not client_id:
            raise OAuthError("invalid_client", "Invalid client", 400)
        expected = self.apps.get(client_id)
        if self.apps and expected is None:
            raise OAuthError("invalid_client", "Invalid client", 400)
        if expected is not None and not pkce and not secrets.compare_digest(secret or "", expected):
            raise OAuthError("invalid_client", "Invalid client secret", 400)

    def exchange_code(
        self, code: str, redirect_uri: str, client_id: str, secret: str | None, verifier: str | None
    ) -> dict[str, object]:
        with self._lock:
            grant = self.codes.pop(code, None)  # single use, like Spotify's
        if grant is None or grant.expires_ms < self.clock.now_ms():
            raise OAuthError("invalid_grant", "Invalid authorization code")
        if grant.client_id != client_id:
            raise OAuthError("invalid_grant", "Invalid authorization code")
        if grant.redirect_uri != redirect_uri:
            raise OAuthError("invalid_grant", "Invalid redirect URI")
        if grant.code_challenge is not None:
            # PKCE proves the caller started the flow; no client secret is needed.
            if not verifier or _s256(verifier) != grant.code_challenge:
                raise OAuthError("invalid_grant", "code_verifier was incorrect")
        elif verifier is not None:
            raise OAuthError("invalid_grant", "code_verifier given without a code_challenge")
        else:
            self._check_client(client_id, secret, pkce=False)
        refresh = secrets.token_urlsafe(48)
        with self._lock:
            self.refresh[refresh] = RefreshToken(
                client_id,
                grant.user_id,
                grant.scope,
                self.clock.now_ms() + REFRESH_TOKEN_TTL_S * 1000,
            )
        return {**self._new_access(client_id, grant.user_id, grant.scope), "refresh_token": refresh}

    def refresh_access(self, token: str, client_id: str, secret: str | None) -> dict[str, object]:
        with self._lock:
            grant = self.refresh.get(token)
        if grant is None or grant.revoked:
            raise OAuthError("invalid_grant", "Refresh token revoked")
        if grant.expires_ms < self.clock.now_ms():
            raise OAuthError("invalid_grant", "Refresh token expired")
        if client_id and client_id != grant.client_id:
            raise OAuthError("invalid_client", "Invalid client")
        self._check_client(grant.client_id, secret, pkce=secret is None)
        answer = self._new_access(grant.client_id, grant.user_id, grant.scope)
        with self._lock:
            self.refreshes += 1
            # Spotify's refresh replies sometimes carry a new refresh token and sometimes not;
            # a client must keep the old one when none comes back.
            if self.refreshes % 3 == 0:
                renewed = secrets.token_urlsafe(48)
                self.refresh[renewed] = RefreshToken(
                    grant.client_id, grant.user_id, grant.scope, grant.expires_ms
                )
                answer["refresh_token"] = renewed
        return answer

    def _new_access(self, client_id: str, user_id: str, scope: str) -> dict[str, object]:
        token = secrets.token_urlsafe(48)
        with self._lock:
            self.access[token] = AccessToken(
                client_id, user_id, scope, self.clock.now_ms() + ACCESS_TOKEN_TTL_S * 1000
            )
        # expires_in is real seconds, so a client's own refresh timing works at any speed.
        return {
            "access_token": token,
            "token_type": "Bearer",
            "scope": scope,
            "expires_in": max(1, int(self.clock.real_seconds(ACCESS_TOKEN_TTL_S))),
        }

    def authenticate(self, bearer: str) -> AccessToken:
        grant = self.access.get(bearer)
        if grant is None:
            raise OAuthError("invalid_token", "Invalid access token", 401)
        if grant.expires_ms < self.clock.now_ms():
            raise OAuthError("invalid_token", "The access token expired", 401)
        return grant

    def revoke_user(self, user_id: str) -> int:
        with self._lock:
            grants = [g for g in self.refresh.values() if g.user_id == user_id and not g.revoked]
            for grant in grants:
                grant.revoked = True
        return len(grants)

    def expire_access_tokens(self) -> int:
        with self._lock:
            for grant in self.access.values():
                grant.expires_ms = 0
            return len(self.access)


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class Faults:
    """Injected failures, consumed by the API endpoints (the accounts service is spared)."""

    fail_next: int = 0
    fail_status: int = 503
    malformed_next: int = 0
    slow_ms: int = 0
    storm_until: float = 0.0
    """While ``time.monotonic()`` is below this, every API call answers 429."""
    storm_retry_after: int = 2
    only_user: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def clear(self) -> None:
        with self._lock:
            self.fail_next = self.malformed_next = self.slow_ms = 0
            self.fail_status, self.storm_until, self.only_user = 503, 0.0, None

    def applies_to(self, user_id: str) -> bool:
        return self.only_user is None or self.only_user == user_id

    def take(self, name: str) -> bool:
        """Consume one of the ``name`` faults (``fail_next`` or ``malformed_next``)."""
        with self._lock:
            left = getattr(self, name)
            if left > 0:
                setattr(self, name, left - 1)
                return True
            return False


QUOTA_WINDOW_S = 24 * 3600
"""Spotify's daily quota counts calls over a rolling 24 hours (virtual), not per calendar day."""


class DailyQuota:
    """Spotify's rolling 24 h request quota per developer account, timed on the virtual clock.

    In 2026 each developer has one development-mode client id, so by default each client id is
    its own developer account; ``developer_accounts`` (account -> client ids) groups several.
    A refused call is not counted. While an account's window holds ``quota`` calls it is
    refused until enough of its oldest calls leave the window; :meth:`lock` forces a lockout.
    ``quota=None`` counts calls (for ``/_sim/stats``) but refuses none.

    Calls are counted per virtual second, so an account holds at most 86,400 counters however
    fast the simulator runs.
    """

    def __init__(
        self,
        clock: VirtualClock,
        quota: int | None,
        developer_accounts: dict[str, tuple[str, ...]] | None = None,
    ) -> None:
        self.clock = clock
        self.configured = self.quota = quota
        self.account_of = {
            client: account
            for account, clients in (developer_accounts or {}).items()
            for client in clients
        }
        self._seconds: dict[str, deque[list[int]]] = {}
        self._totals: dict[str, int] = {}
        self._locked_until_ms: dict[str, int] = {}
        self._lock = threading.Lock()

    def account(self, client_id: str) -> str:
        """The developer account that owns ``client_id``."""
        return self.account_of.get(client_id, client_id)

    def _prune(self, account: str, now_s: int) -> deque[list[int]]:
        seconds = self._seconds.setdefault(account, deque())
        while seconds and seconds[0][0] <= now_s - QUOTA_WINDOW_S:
            self._totals[account] -= seconds.popleft()[1]
        return seconds

    def _wait_ms(self, account: str, now_ms: int) -> int:
        """Virtual ms until ``account`` may call again (0: now); the caller holds the lock."""
        locked = self._locked_until_ms.get(account, 0) - now_ms
        if locked > 0:
            return locked
        seconds = self._prune(account, now_ms // 1000)
        excess = self._totals.get(account, 0) - (self.quota or 0) + 1
        if self.quota is None or excess <= 0:
            return 0
        # The lock lifts when enough of the oldest calls have left the window.
        for second, count in seconds:
            excess -= count
            if excess <= 0:
                return max(1, (second + QUOTA_WINDOW_S) * 1000 - now_ms)
        raise AssertionError(f"{account}: the window holds fewer calls than its total")

    def admit(self, account: str) -> int:
        """0 if ``account`` may call now (and counts the call), else virtual ms until it may."""
        now_ms = self.clock.now_ms()
        now_s = now_ms // 1000
        with self._lock:
            wait = self._wait_ms(account, now_ms)
            if wait > 0:
                return wait
            seconds = self._seconds[account]
            if seconds and seconds[-1][0] == now_s:
                seconds[-1][1] += 1
            else:
                seconds.append([now_s, 1])
            self._totals[account] = self._totals.get(account, 0) + 1
            return 0

    def lock(self, account: str, seconds: float) -> None:
        """Refuse every call of ``account`` for the next ``seconds`` (virtual), from now."""
        until = self.clock.now_ms() + int(seconds * 1000)
        with self._lock:
            self._locked_until_ms[account] = max(self._locked_until_ms.get(account, 0), until)

    def clear_faults(self) -> None:
        """Drop forced lockouts and restore the configured quota (the calls stay counted)."""
        with self._lock:
            self._locked_until_ms.clear()
            self.quota = self.configured

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per developer account: calls in the last 24 h (virtual), and when a refusal ends."""
        now_ms = self.clock.now_ms()
        with self._lock:
            waits = {
                account: self._wait_ms(account, now_ms)
                for account in sorted(set(self._seconds) | set(self._locked_until_ms))
            }
            return {
                account: {
                    "calls_24h": self._totals.get(account, 0),
                    "refused_until": iso_ms(now_ms + wait) if wait else None,
                }
                for account, wait in waits.items()
            }
