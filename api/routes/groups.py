"""Making and managing groups: create, invite by link (and revoke links), join, leave, remove
a member.

Every form posts a CSRF token. Actions on a group take :data:`~api.deps.MemberGroup`, so a
stranger's request fails as a 404 before anything is read or changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from api.deps import CurrentUser, GroupsDep, MemberGroup
from api.security import check_csrf
from api.templating import render
from auxcord.groups import Group, GroupError

log = logging.getLogger(__name__)
router = APIRouter(tags=["groups"])

CsrfField = Annotated[str | None, Form()]


def _back(path: str, message: str | None = None, request: Request | None = None) -> Response:
    if message and request is not None:
        request.session["flash"] = message
    return RedirectResponse(path, 303)


def _members_action(
    request: Request,
    group: Group,
    action: Callable[[], None],
    done: str,
    event: str,
    **ids: str,
) -> Response:
    """Do an action of the members page (remove a member, revoke a link), and go back to it
    saying what happened, or why not."""
    members = f"/groups/{group.group_id}/members"
    try:
        action()
    except GroupError as exc:
        return _back(members, str(exc), request)
    log.info(event, extra={"group_id": group.group_id, **ids})
    return _back(members, done, request)


@router.post("/groups")
def create_group(
    request: Request,
    user: CurrentUser,
    groups: GroupsDep,
    name: Annotated[str, Form(max_length=200)] = "",
    csrf_token: CsrfField = None,
) -> Response:
    check_csrf(request, csrf_token)
    try:
        group = groups.create(name, user.user_id)
    except GroupError as exc:
        return _back("/", str(exc), request)
    log.info("group created", extra={"user_id": user.user_id, "group_id": group.group_id})
    return _back(
        f"/groups/{group.group_id}/members", "Group created. Invite your friends.", request
    )


@router.get("/groups/{group_id}/members")
def members_page(
    request: Request, user: CurrentUser, group: MemberGroup, groups: GroupsDep
) -> Response:
    from api.reads import people

    invite = request.session.pop("invite_link", None)
    return render(
        request,
        "members.html",
        {
            "group": group,
            "people": people(request.app.state.database, group.members),
            "is_owner": group.owner == user.user_id,
            "invite_link": invite if invite and invite[0] == group.group_id else None,
            "open_invites": groups.open_invites(group),
        },
    )


@router.post("/groups/{group_id}/invites")
def create_invite(
    request: Request,
    user: CurrentUser,
    group: MemberGroup,
    groups: GroupsDep,
    csrf_token: CsrfField = None,
) -> Response:
    check_csrf(request, csrf_token)
    invite = groups.invite(group, user.user_id)
    link = str(request.url_for("join_page", token=invite.token))
    # Shown once, on the next page: the token is not stored anywhere readable.
    request.session["invite_link"] = [group.group_id, link, invite.expires_at.isoformat()]
    return _back(f"/groups/{group.group_id}/members")


@router.post("/groups/{group_id}/invites/{invite_id}/revoke")
def revoke_invite(
    request: Request,
    invite_id: str,
    user: CurrentUser,
    group: MemberGroup,
    groups: GroupsDep,
    csrf_token: CsrfField = None,
) -> Response:
    check_csrf(request, csrf_token)
    return _members_action(
        request,
        group,
        lambda: groups.revoke_invite(group, user.user_id, invite_id),
        "Invitation revoked.",
        "invitation revoked",
        user_id=user.user_id,
    )


@router.post("/groups/{group_id}/leave")
def leave_group(
    request: Request,
    user: CurrentUser,
    group: MemberGroup,
    groups: GroupsDep,
    csrf_token: CsrfField = None,
) -> Response:
    check_csrf(request, csrf_token)
    groups.leave(group, user.user_id)
    log.info("group left", extra={"user_id": user.user_id, "group_id": group.group_id})
    return _back("/", f"You left {group.name}.", request)


@router.post("/groups/{group_id}/members/{member_id}/remove")
def remove_member(
    request: Request,
    member_id: str,
    user: CurrentUser,
    group: MemberGroup,
    groups: GroupsDep,
    csrf_token: CsrfField = None,
) -> Response:
    check_csrf(request, csrf_token)
    return _members_action(
        request,
        group,
        lambda: groups.remove_member(group, user.user_id, member_id),
        "Removed. Every open invitation link was revoked with it; create a new one to invite.",
        "member removed",
        user_id=user.user_id,
        member_id=member_id,
    )


@router.get("/join/{token}", name="join_page")
def join_page(request: Request, token: str, user: CurrentUser, groups: GroupsDep) -> Response:
    group = groups.invited_group(token)
    if group is None:
        return render(
            request,
            "message.html",
            {
                "title": "Invitation expired",
                "message": (
                    "This invitation is invalid or has expired. Ask a member for a new link."
                ),
            },
            status_code=404,
        )
    if user.user_id in group.members:
        return _back(f"/groups/{group.group_id}")
    return render(request, "join.html", {"group": group, "token": token})


@router.post("/join/{token}")
def join_group(
    request: Request,
    token: str,
    user: CurrentUser,
    groups: GroupsDep,
    csrf_token: CsrfField = None,
) -> Response:
    check_csrf(request, csrf_token)
    try:
        group = groups.join(token, user.user_id)
    except GroupError as exc:
        return render(
            request,
            "message.html",
            {"title": "Could not join", "message": str(exc)},
            status_code=400,
        )
    log.info("group joined", extra={"user_id": user.user_id, "group_id": group.group_id})
    return _back(f"/groups/{group.group_id}", f"Welcome to {group.name}.", request)
