"""Dependencies of the web app, as ``Annotated`` aliases so handler signatures read like types.

Authorisation lives here, once: every route with a ``group_id`` takes :data:`MemberGroup`, which
answers 404 unless the signed-in user belongs to that group, whether the group exists or not.
Anonymous visitors of a page are sent to sign in first (and brought back afterwards); anonymous
API clients get the same 404 as strangers.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

from cachetools import TTLCache
from fastapi import Depends, HTTPException, Request
from pymongo.database import Database

from auxcord.accounts import AccountStore, LinkedAccount
from auxcord.groups import Group, GroupStore
from auxcord.settings import Settings

NOT_FOUND = "Not found. If a friend sent you here, ask them for an invitation link."


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


_accounts_cache: TTLCache[tuple[str, str], LinkedAccount | None] = TTLCache(maxsize=4096, ttl=5)
_accounts_lock = threading.Lock()


def get_current_user(request: Request) -> LinkedAccount | None:
    """The signed-in account, read at most every 5 s per user: every page needs it, and a
    changed account (re-linked, needs_reauth) shows within seconds. Memberships are never
    cached: :func:`member_group` reads them on every request."""
    user_id = request.session.get("user_id")
    if not user_id:
        return None
    key = (request.app.state.database.name, str(user_id))
    with _accounts_lock:
        if key in _accounts_cache:
            return _accounts_cache[key]
    account = get_accounts(request).get(user_id)
    with _accounts_lock:
        _accounts_cache[key] = account
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
