"""Dependencies of the web app, as ``Annotated`` aliases so handler signatures read like types.

Authorisation lives here, once: every route with a ``group_id`` takes :data:`MemberGroup`, which
answers 404 unless the signed-in user belongs to that group, whether the group exists or not.
Anonymous visitors of a page are sent to sign in first (and brought back afterwards); anonymous
API clients get the same 404 as strangers.

A session is signed in while it is younger than :data:`SESSION_LIFETIME`, carries the
account's current ``session_version`` and was not signed out: "sign out everywhere" increments
the version, and signing out records the session's id with the account, so a copied cookie
stops working without the browser's help.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any

from cachetools import TTLCache
from fastapi import Depends, HTTPException, Request
from pymongo.database import Database

from auxcord.accounts import AccountStore, LinkedAccount
from auxcord.groups import Group, GroupStore
from auxcord.settings import Settings

NOT_FOUND = "Not found. If a friend sent you here, ask them for an invitation link."

SESSION_LIFETIME = timedelta(days=30)
"""How long a sign-in lasts, however often it is used (the cookie itself also lapses after two
weeks unused)."""
CLOCK_SKEW_S = 60.0
"""A session signed in up to this far in the future still counts (web processes' clocks
differ a little); further, it is a forgery or a broken clock."""
SIGN_IN_FIELDS = ("user_id", "session_version", "signed_in_at", "session_id")


class SignInRequired(Exception):
    """A page needs a signed-in user; the app's handler redirects to the sign-in page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_database(request: Request) -> Database[dict[str, Any]]:
    database: Database[dict[str, Any]] = request.app.state.database
    return database


def get_accounts(request: Request) -> AccountStore:
    return AccountStore(request.app.state.database, request.app.state.cipher)


def get_groups(request: Request) -> GroupStore:
    return GroupStore(request.app.state.database)


def signed_in_session(
    user_id: str, session_version: int, now: float | None = None
) -> dict[str, Any]:
    """The session fields that sign ``user_id`` in at the account's ``session_version``, with
    a new session id (the sign-in callback sets them; benchmarks and tests make cookies with
    them)."""
    return {
        "user_id": user_id,
        "session_version": session_version,
        "signed_in_at": time.time() if now is None else now,
        "session_id": secrets.token_urlsafe(16),
    }


def session_is_current(
    session: Mapping[str, Any], account: LinkedAccount | None, now: float | None = None
) -> bool:
    """Whether ``session`` still signs ``account`` in: same version, not expired, not signed
    out.

    A session from before versions or session ids existed lacks them and is refused: such a
    cookie may be exactly the stolen one this check is for, and signing it out alone would
    have no id to record.
    """
    signed_in_at = session.get("signed_in_at")
    session_id = session.get("session_id")
    if (
        account is None
        or not isinstance(signed_in_at, int | float)
        or not isinstance(session_id, str)
    ):
        return False
    age = (time.time() if now is None else now) - signed_in_at
    current = (
        session.get("session_version") == account.session_version
        and session_id not in account.ended_sessions
    )
    return current and -CLOCK_SKEW_S <= age < SESSION_LIFETIME.total_seconds()


_accounts_cache: TTLCache[tuple[str, str], LinkedAccount | None] = TTLCache(maxsize=4096, ttl=5)
_accounts_lock = threading.Lock()


def read_account(request: Request, user_id: str, *, fresh: bool = False) -> LinkedAccount | None:
    """The account of ``user_id``, read at most every 5 s unless ``fresh``: every page needs
    it, and a changed account (re-linked, needs_reauth, signed out everywhere on another web
    process) shows within seconds."""
    key = (request.app.state.database.name, user_id)
    if not fresh:
        with _accounts_lock:
            if key in _accounts_cache:
                return _accounts_cache[key]
    account = get_accounts(request).get(user_id)
    with _accounts_lock:
        _accounts_cache[key] = account
    return account


def get_current_user(request: Request) -> LinkedAccount | None:
    """The signed-in account, if the session is still current (see :func:`session_is_current`);
    a stale session is signed out. Memberships are never cached: :func:`member_group` reads
    them on every request."""
    user_id = request.session.get("user_id")
    if not user_id:
        return None
    account = read_account(request, str(user_id))
    if not session_is_current(request.session, account):
        for field in SIGN_IN_FIELDS:
            request.session.pop(field, None)
        return None
    return account


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def require_user(request: Request) -> LinkedAccount:
    user = get_current_user(request)
    if user is None:
        if _is_api(request):
            raise HTTPException(status_code=404, detail=NOT_FOUND)
        raise SignInRequired(request.url.path)
    return user


def member_group(
    group_id: str,
    user: Annotated[LinkedAccount, Depends(require_user)],
    groups: Annotated[GroupStore, Depends(get_groups)],
) -> Group:
    group = groups.for_member(group_id, user.user_id)
    if group is None:
        raise HTTPException(status_code=404, detail=NOT_FOUND)
    return group


def member_group_now(request: Request, group_id: str) -> Group | None:
    """For a response that lasts (the live feed): the group, if this request's session still
    signs in one of its members, read afresh from MongoDB, uncached. Blocking."""
    user_id = str(request.session.get("user_id") or "")
    account = read_account(request, user_id, fresh=True) if user_id else None
    if not session_is_current(request.session, account):
        return None
    return get_groups(request).for_member(group_id, user_id)


def require_admin(
    user: Annotated[LinkedAccount, Depends(require_user)],
    settings: Annotated[Settings, Depends(get_settings_dep)],
) -> LinkedAccount:
    if user.user_id not in settings.admin_users:
        raise HTTPException(status_code=404, detail=NOT_FOUND)
    return user


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
DatabaseDep = Annotated[Database[dict[str, Any]], Depends(get_database)]
AccountsDep = Annotated[AccountStore, Depends(get_accounts)]
GroupsDep = Annotated[GroupStore, Depends(get_groups)]
OptionalUser = Annotated[LinkedAccount | None, Depends(get_current_user)]
CurrentUser = Annotated[LinkedAccount, Depends(require_user)]
MemberGroup = Annotated[Group, Depends(member_group)]
AdminUser = Annotated[LinkedAccount, Depends(require_admin)]
