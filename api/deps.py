"""Dependencies of the web app, as ``Annotated`` aliases so handler signatures read like types."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from pymongo.database import Database

from auxcord.accounts import AccountStore, LinkedAccount
from auxcord.settings import Settings


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_database(request: Request) -> Database[dict[str, Any]]:
    database: Database[dict[str, Any]] = request.app.state.database
    return database


def get_accounts(request: Request) -> AccountStore:
    return AccountStore(request.app.state.database, request.app.state.cipher)


def get_current_user(request: Request) -> LinkedAccount | None:
    user_id = request.session.get("user_id")
    if not user_id:
        return None
    return get_accounts(request).get(user_id)


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
DatabaseDep = Annotated[Database[dict[str, Any]], Depends(get_database)]
AccountsDep = Annotated[AccountStore, Depends(get_accounts)]
OptionalUser = Annotated[LinkedAccount | None, Depends(get_current_user)]
