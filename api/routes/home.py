"""The front page: sign-in for visitors, the signed-in user's groups otherwise."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.deps import GroupsDep, OptionalUser, SettingsDep
from api.templating import render

router = APIRouter(tags=["pages"])


@router.get("/")
def home(
    request: Request, user: OptionalUser, groups: GroupsDep, settings: SettingsDep
) -> Response:
    return render(
        request,
        "home.html",
        {
            "user": user,
            "groups": groups.groups_of(user.user_id) if user else [],
            "is_admin": bool(user and user.user_id in settings.admin_users),
            "signin_needed": request.session.get("next") and not user,
        },
    )
