"""spotipy, configured for auxcord: URLs from settings, tokens from the store, no hidden sleeps.

spotipy's own retry (urllib3) honours a Retry-After of up to six hours by putting the calling
thread to sleep, and a missing token sends it into an interactive login. Neither may happen in
a poller, so:

- API calls go through a plain ``requests.Session`` with no retry adapter (spotipy builds its
  urllib3 Retry only into sessions it creates itself); a 429 surfaces at once as
  :class:`RateLimited` with its Retry-After, and the scheduler pauses only that app, or, for
  the daily quota's ``QUOTA_EXCEEDED`` (:class:`QuotaExceeded`), the whole developer account.
- Tokens are refreshed here, 60 Spotify seconds before they expire, with spotipy's PKCE auth
  manager, and stored encrypted. A 401 triggers one refresh and one retry. ``invalid_grant``
  marks the user ``needs_reauth`` and raises :class:`NeedsReauth`; other users are unaffected.
- A :class:`TokenCache` keeps a poller's decrypted tokens in memory (read from MongoDB once,
  refreshes written through), and each user keeps one spotipy client per access token.
- spotipy logs request headers and token bodies at DEBUG, so its logger is held at WARNING.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import requests
import spotipy
from spotipy.cache_handler import MemoryCacheHandler
from spotipy.oauth2 import SpotifyOauthError, SpotifyPKCE

from auxcord.accounts import AccountStore, NotLinked, TokenSet
from auxcord.errors import AuxcordError
from auxcord.settings import Settings

log = logging.getLogger(__name__)

SCOPES = (
    "user-read-recently-played",
    "user-read-currently-playing",
    "user-read-playback-state",
    "user-read-private",
)
REFRESH_MARGIN = timedelta(seconds=60)
T = TypeVar("T")


class SpotifyError(AuxcordError):
    """A Spotify call failed in a way the caller should know about."""


class RateLimited(SpotifyError):
    """429: the app (client id) must pause for ``retry_after`` seconds."""

    def __init__(self, retry_after: float, client_id: str) -> None:
        super().__init__(f"Spotify rate limit for app {client_id}: retry after {retry_after:g} s")
        self.retry_after, self.client_id = retry_after, client_id


class QuotaExceeded(RateLimited):
    """429 with ``reason: QUOTA_EXCEEDED``: the developer account's rolling 24 h quota is spent,
    and every call of the account fails until ``retry_after`` (hours) has passed."""

    def __init__(self, retry_after: float, client_id: str) -> None:
        super().__init__(retry_after, client_id)
        self.args = (
            f"Spotify daily quota exceeded for app {client_id}: retry after {retry_after:g} s",
        )


def rate_limited(
    client_id: str, headers: Mapping[str, str] | None, reason: str | None
) -> RateLimited:
    """The 429 as the right error: the daily quota's lockout or the short 30 s limit."""
    headers = headers or {}
    retry_after = float(headers.get("Retry-After") or headers.get("retry-after") or 1)
    if reason == "QUOTA_EXCEEDED":
        return QuotaExceeded(retry_after, client_id)
    return RateLimited(retry_after, client_id)


class SpotifyUnavailable(SpotifyError):
    """5xx or a network failure: transient, back off and try again."""


class NeedsReauth(SpotifyError):
    """The refresh token is dead (revoked or older than six months): the user must link again."""


class SpotifyRequestError(SpotifyError):
    """Spotify refused the request for another reason (400, 403, 404)."""


def _quiet_spotipy() -> None:
    logging.getLogger("spotipy").setLevel(logging.WARNING)


def auth_manager(settings: Settings, client_id: str, session: requests.Session) -> SpotifyPKCE:
    """spotipy's PKCE auth manager, pointed at the configured accounts service.

    Its cache lives in memory only: spotipy's default cache is a plaintext file, and auxcord
    keeps tokens nowhere but encrypted in MongoDB.
    """
    manager = SpotifyPKCE(
        client_id=client_id,
        redirect_uri=settings.spotify_redirect_uri,
        scope=" ".join(SCOPES),
        requests_session=session,
        requests_timeout=10,
        open_browser=False,
        cache_handler=MemoryCacheHandler(),
    )
    # Instance attributes shadow spotipy's class constants: the simulator locally, Spotify live.
    manager.OAUTH_AUTHORIZE_URL = f"{settings.spotify_accounts_base}/authorize"
    manager.OAUTH_TOKEN_URL = f"{settings.spotify_accounts_base}/api/token"
    return manager


def exchange_code(
    settings: Settings,
    client_id: str,
    code: str,
    verifier: str,
    challenge: str,
    session: requests.Session,
) -> dict[str, Any]:
    """Trade an authorization code (and its PKCE verifier) for tokens."""
    manager = auth_manager(settings, client_id, session)
    manager.code_verifier, manager.code_challenge = verifier, challenge
    manager.get_access_token(code=code, check_cache=False)
    token_info: dict[str, Any] = manager.cache_handler.get_cached_token()
    return token_info


def api_client(settings: Settings, access_token: str, session: requests.Session) -> spotipy.Spotify:
    """A spotipy client for one access token, with no retries of its own."""
    _quiet_spotipy()
    client = spotipy.Spotify(
        auth=access_token,
        requests_session=session,
        requests_timeout=10,
        retries=0,
        status_retries=0,
    )
    client.prefix = settings.spotify_api_base.rstrip("/") + "/"
    return client


class TokenCache:
    """Decrypted tokens of the users one process calls for, read from MongoDB once each.

    A poller calls Spotify for each user many times an hour; reading and decrypting the tokens
    from MongoDB every time was most of its database traffic at scale. Refreshes are written
    through (MongoDB first, then here), and :meth:`forget` drops a user whose stored tokens may
    have changed elsewhere (a 401, a re-link).
    """

    def __init__(self, accounts: AccountStore) -> None:
        self.accounts = accounts
        self._tokens: dict[str, TokenSet] = {}
        self._lock = threading.Lock()

    def get(self, user_id: str) -> TokenSet:
        with self._lock:
            cached = self._tokens.get(user_id)
        if cached is None:
            cached = self.accounts.tokens(user_id)
            with self._lock:
                self._tokens[user_id] = cached
        return cached

    def save(self, user_id: str, token_info: dict[str, Any]) -> TokenSet:
        tokens = self.accounts.save_tokens(user_id, token_info)
        with self._lock:
            self._tokens[user_id] = tokens
        return tokens

    def forget(self, user_id: str) -> None:
        with self._lock:
            self._tokens.pop(user_id, None)


class SpotifyUserClient:
    """The Spotify calls auxcord makes for one linked user."""

    def __init__(
        self,
        settings: Settings,
        accounts: AccountStore,
        user_id: str,
        session: requests.Session | None = None,
        tokens: TokenCache | None = None,
    ) -> None:
        self.settings, self.accounts, self.user_id = settings, accounts, user_id
        account = accounts.get(user_id)
        if account is None:
            raise NotLinked(f"user {user_id} is not linked")
        self.client_id = account.client_id
        self._session = session or requests.Session()
        self._tokens = tokens or TokenCache(accounts)
        self._spotipy: tuple[str, spotipy.Spotify] | None = None
        # Tokens last real seconds; the margin is Spotify's minute, at the simulator's speed too.
        self._margin = REFRESH_MARGIN / settings.poller_speed

    def refresh_due(self) -> bool:
        """Whether the next call refreshes the access token first (one more call to Spotify)."""
        return self._tokens.get(self.user_id).expires_at - self._margin <= datetime.now(UTC)

    def recently_played(self, *, after_ms: int | None = None, limit: int = 50) -> dict[str, Any]:
        result = self._call(lambda sp: sp.current_user_recently_played(limit=limit, after=after_ms))
        return result if isinstance(result, dict) else {}

    def currently_playing(self) -> dict[str, Any] | None:
        """What plays now, or None when nothing does (Spotify's 204)."""
        result = self._call(lambda sp: sp.currently_playing(additional_types="episode"))
        return result if isinstance(result, dict) else None

    def me(self) -> dict[str, Any]:
        result = self._call(lambda sp: sp.current_user())
        return result if isinstance(result, dict) else {}

    def _client(self, token: str) -> spotipy.Spotify:
        """One spotipy client per access token (an hour), on the app's pooled session."""
        if self._spotipy is None or self._spotipy[0] != token:
            self._spotipy = (token, api_client(self.settings, token, self._session))
        return self._spotipy[1]

    def _call(self, request: Callable[[spotipy.Spotify], T]) -> T:
        tokens = self._tokens.get(self.user_id)
        token = tokens.access_token
        if tokens.expires_at - self._margin <= datetime.now(UTC):
            token = self._refresh(tokens.refresh_token)
        for attempt in (1, 2):
            try:
                return request(self._client(token))
            except spotipy.SpotifyException as exc:
                if exc.http_status == 401 and attempt == 1:
                    log.info("401 from Spotify, refreshing once", extra={"user_id": self.user_id})
                    # The stored tokens may be newer than ours (a re-link): read them again.
                    self._tokens.forget(self.user_id)
                    token = self._refresh(self._tokens.get(self.user_id).refresh_token)
                    continue
                raise self._translate(exc) from exc
            except requests.RequestException as exc:
                raise SpotifyUnavailable(f"Spotify unreachable: {type(exc).__name__}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _translate(self, exc: spotipy.SpotifyException) -> SpotifyError:
        status = exc.http_status
        if status == 429:
            return rate_limited(self.client_id, exc.headers, exc.reason)
        if status is None or status >= 500:
            return SpotifyUnavailable(f"Spotify answered {status}")
        return SpotifyRequestError(f"Spotify answered {status}: {exc.msg}")

    def _refresh(self, refresh_token: str) -> str:
        manager = auth_manager(self.settings, self.client_id, self._session)
        try:
            token_info: dict[str, Any] = manager.refresh_access_token(refresh_token)
        except SpotifyOauthError as exc:
            refusal = _quota_refusal(self.client_id, exc)
            if refusal is not None:
                raise refusal from exc
            if exc.error == "invalid_grant":
                reason = exc.error_description or "invalid_grant"
                self._tokens.forget(self.user_id)
                self.accounts.mark_needs_reauth(self.user_id, reason)
                log.warning(
                    "refresh token refused; user needs to link again",
                    extra={"user_id": self.user_id, "reason": reason},
                )
                raise NeedsReauth(f"user {self.user_id} must link again ({reason})") from exc
            raise SpotifyUnavailable(f"token refresh failed: {exc.error}") from exc
        except requests.RequestException as exc:
            raise SpotifyUnavailable(f"token refresh failed: {type(exc).__name__}") from exc
        return self._tokens.save(self.user_id, token_info).access_token


def _quota_refusal(client_id: str, exc: SpotifyOauthError) -> RateLimited | None:
    """A 429 from the accounts service (its calls may count against the daily quota too)."""
    response = getattr(exc.__context__, "response", None)
    if response is None or response.status_code != 429:
        return None
    reason = exc.error.get("reason") if isinstance(exc.error, dict) else None
    return rate_limited(client_id, response.headers, reason)
