"""Sign in with Spotify (Authorization Code with PKCE), sign out (here or everywhere), and the
account's own settings (its time zone)."""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from typing import Annotated
from urllib.parse import urlencode

import requests
from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from spotipy import SpotifyException
from spotipy.oauth2 import SpotifyOauthError

from api.deps import (
    SIGN_IN_FIELDS,
    AccountsDep,
    CurrentUser,
    DatabaseDep,
    OptionalUser,
    SettingsDep,
    read_account,
    signed_in_session,
)
from api.oauth_states import OAuthStates
from api.security import check_csrf, limit_auth, session_secret
from api.templating import render
from auxcord.accounts import AppsFull, valid_timezone
from auxcord.spotify import SCOPES, SpotifyError, api_client, exchange_code

log = logging.getLogger(__name__)
router = APIRouter(prefix="/auth", tags=["auth"], dependencies=[Depends(limit_auth)])


def _pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def _browser(request: Request) -> str:
    """A random id for this browser's session, which binds a pending sign-in to it."""
    return session_secret(request, "browser")


def _refused(request: Request, message: str, status: int = 400) -> Response:
    return render(request, "auth_error.html", {"message": message}, status_code=status)


@router.get("/login")
def login(
    request: Request,
    settings: SettingsDep,
    database: DatabaseDep,
    accounts: AccountsDep,
    tz: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Send the browser to Spotify's consent page, remembering how to finish.

    ``tz`` (the browser's time zone) is only used if this sign-in creates the account: a page
    elsewhere can send a signed-in browser here and Spotify re-approves silently, so an
    existing account's zone changes only through the CSRF-protected form below."""
    app = accounts.choose_app(settings.spotify_apps)
    verifier, challenge = _pkce_pair()
    state = OAuthStates(database).begin(
        browser=_browser(request),
        code_verifier=verifier,
        code_challenge=challenge,
        client_id=app.client_id,
        timezone=tz,
    )
    query = urlencode(
        {
            "client_id": app.client_id,
            "response_type": "code",
            "redirect_uri": settings.spotify_redirect_uri,
            "state": state,
            "scope": " ".join(SCOPES),
            "code_challenge_method": "S256",
            "code_challenge": challenge,
        }
    )
    return RedirectResponse(f"{settings.spotify_accounts_base}/authorize?{query}", 302)


@router.get("/callback")
def callback(
    request: Request,
    settings: SettingsDep,
    database: DatabaseDep,
    accounts: AccountsDep,
    code: str | None = None,
    state: str | None = None,
    error: str | None = None,
) -> Response:
    """Finish the sign-in: check the state, trade the code for tokens, store them encrypted."""
    if not state:
        return _refused(
            request, "This sign-in link has no state. Start again from the sign-in button."
        )
    pending = OAuthStates(database).consume(state, request.session.get("browser", ""))
    if pending is None:
        return _refused(
            request,
            "This sign-in link is invalid, expired or already used. Start "
            "again from the sign-in button.",
        )
    if error or not code:
        return _refused(request, f"Spotify did not authorise auxcord ({error or 'no code'}).")
    session = requests.Session()
    try:
        token_info = exchange_code(
            settings,
            pending.client_id,
            code,
            pending.code_verifier,
            pending.code_challenge,
            session,
        )
        profile = api_client(settings, token_info["access_token"], session).current_user()
    except (SpotifyOauthError, SpotifyException, SpotifyError, requests.RequestException) as exc:
        log.warning("sign-in failed at Spotify: %s", type(exc).__name__)
        return _refused(request, "Spotify refused the sign-in. Start again.", 502)
    try:
        accounts.check_room(pending.client_id, profile["id"])
    except AppsFull as exc:
        return _refused(request, str(exc), 503)
    first_sign_in = accounts.get(profile["id"]) is None
    accounts.link(
        user_id=profile["id"],
        display_name=profile.get("display_name"),
        country=profile.get("country"),
        timezone=pending.timezone if first_sign_in else None,
        client_id=pending.client_id,
        token_info=token_info,
    )
    account = read_account(request, profile["id"], fresh=True)
    assert account is not None, "just linked"
    request.session.update(signed_in_session(account.user_id, account.session_version))
    log.info("user linked", extra={"user_id": profile["id"], "client_id": pending.client_id})
    return RedirectResponse(_next_path(request.session.pop("next", None)), 303)


def _next_path(candidate: object) -> str:
    """Where to go after sign-in: a path on this site only (never ``//elsewhere``)."""
    if isinstance(candidate, str) and candidate.startswith("/") and not candidate.startswith("//"):
        return candidate
    return "/"


CsrfField = Annotated[str | None, Form()]


@router.post("/logout")
def logout(
    request: Request, user: OptionalUser, accounts: AccountsDep, csrf_token: CsrfField = None
) -> Response:
    """Sign this browser out, and its session with it: a copy of the cookie stops working and
    the session's open live feeds end."""
    check_csrf(request, csrf_token)
    if user is not None:
        # A current session always has its id (see session_is_current).
        accounts.end_session(user.user_id, request.session["session_id"])
        read_account(request, user.user_id, fresh=True)  # this process knows at once
    request.session.clear()
    return RedirectResponse("/", 303)


@router.post("/logout-everywhere")
def logout_everywhere(
    request: Request, user: CurrentUser, accounts: AccountsDep, csrf_token: CsrfField = None
) -> Response:
    """Sign the account out of every browser, open live feeds included (a lost phone, a
    copied cookie): every session made before now carries an outdated version."""
    check_csrf(request, csrf_token)
    accounts.end_sessions(user.user_id)
    read_account(request, user.user_id, fresh=True)  # this process knows at once
    log.info("signed out everywhere", extra={"user_id": user.user_id})
    for field in SIGN_IN_FIELDS:
        request.session.pop(field, None)
    request.session["flash"] = "You are signed out on every device."
    return RedirectResponse("/", 303)


@router.post("/timezone")
def set_timezone(
    request: Request,
    user: CurrentUser,
    accounts: AccountsDep,
    timezone: Annotated[str, Form(max_length=64)] = "",
    back: Annotated[str, Form(max_length=500)] = "/",
    csrf_token: CsrfField = None,
) -> Response:
    """Change the account's time zone (days are counted on the listener's own clock), then
    go back to the page of the form."""
    check_csrf(request, csrf_token)
    back = _next_path(back)
    if valid_timezone(timezone) != timezone:
        request.session["flash"] = f"{timezone!r} is not a time zone auxcord knows."
        return RedirectResponse(back, 303)
    accounts.set_timezone(user.user_id, timezone)
    read_account(request, user.user_id, fresh=True)
    log.info("time zone changed", extra={"user_id": user.user_id, "timezone": timezone})
    request.session["flash"] = f"Your time zone is now {timezone}. New days count in it."
    return RedirectResponse(back, 303)
