"""spotipy, configured for auxcord: URLs from settings, tokens from the store, no hidden sleeps.

spotipy's own retry (urllib3) honours a Retry-After of up to six hours by putting the calling
thread to sleep, and a missing token sends it into an interactive login. Neither may happen in
a poller, so:

- API calls go through a plain ``requests.Session`` with no retry adapter; a 429 surfaces at
  once as :class:`RateLimited` with its Retry-After, and the scheduler pauses only that app.
- Tokens are refreshed here, 60 s before they expire, with spotipy's PKCE auth manager, and
  stored encrypted. A 401 triggers one refresh and one retry. ``invalid_grant`` marks the user
  ``needs_reauth`` and raises :class:`NeedsReauth`; other users are unaffected.
- spotipy logs request headers and token bodies at DEBUG, so its logger is held at WARNING.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import requests
import spotipy
from spotipy.cache_handler import MemoryCacheHandler
from spotipy.oauth2 import SpotifyOauthError, SpotifyPKCE

from auxcord.accounts import AccountStore, NotLinked
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


class SpotifyUserClient:
    """The Spotify calls auxcord makes for one linked user."""

    def __init__(
        self,
        settings: Settings,
        accounts: AccountStore,
        user_id: str,
        session: requests.Session | None = None,
    ) -> None:
        self.settings, self.accounts, self.user_id = settings, accounts, user_id
        account = accounts.get(user_id)
        if account is None:
            raise NotLinked(f"user {user_id} is not linked")
        self.client_id = account.client_id
        self._session = session or requests.Session()

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

    def _call(self, request: Callable[[spotipy.Spotify], T]) -> T:
        tokens = self.accounts.tokens(self.user_id)
        token = tokens.access_token
        if tokens.expires_at - REFRESH_MARGIN <= datetime.now(UTC):
            token = self._refresh(tokens.refresh_token)
        for attempt in (1, 2):
            try:
                return request(api_client(self.settings, token, self._session))
            except spotipy.SpotifyException as exc:
                if exc.http_status == 401 and attempt == 1:
                    log.info("401 from Spotify, refreshing once", extra={"user_id": self.user_id})
                    token = self._refresh(self.accounts.tokens(self.user_id).refresh_token)
                    continue
                raise self._translate(exc) from exc
            except requests.RequestException as exc:
                raise SpotifyUnavailable(f"Spotify unreachable: {type(exc).__name__}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _translate(self, exc: spotipy.SpotifyException) -> SpotifyError:
        status = exc.http_status
        if status == 429:
            headers = exc.headers or {}
            retry_after = float(headers.get("Retry-After") or headers.get("retry-after") or 1)
            return RateLimited(retry_after, self.client_id)
        if status is None or status >= 500:
            return SpotifyUnavailable(f"Spotify answered {status}")
        return SpotifyRequestError(f"Spotify answered {status}: {exc.msg}")

    def _refresh(self, refresh_token: str) -> str:
        manager = auth_manager(self.settings, self.client_id, self._session)
        try:
            token_info: dict[str, Any] = manager.refresh_access_token(refresh_token)
        except SpotifyOauthError as exc:
            if exc.error == "invalid_grant":
                reason = exc.error_description or "invalid_grant"
                self.accounts.mark_needs_reauth(self.user_id, reason)
                log.warning(
                    "refresh token refused; user needs to link again",
                    extra={"user_id": self.user_id, "reason": reason},
                )
                raise NeedsReauth(f"user {self.user_id} must link again ({reason})") from exc
            raise SpotifyUnavailable(f"token refresh failed: {exc.error}") from exc
        except requests.RequestException as exc:
            raise SpotifyUnavailable(f"token refresh failed: {type(exc).__name__}") from exc
        self.accounts.save_tokens(self.user_id, token_info)
        return str(token_info["access_token"])
