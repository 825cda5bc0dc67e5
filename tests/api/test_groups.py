"""Groups over HTTP: create, invite by link, join, leave, remove; invitations expire."""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from auxcord.clients import mongo_database
from auxcord.groups import INVITE_LIFETIME, GroupStore
from tests.api.world import World, browser, csrf_of


def test_a_group_is_made_joined_left_and_pruned_through_its_pages(world: World) -> None:
    database = mongo_database(world.settings)
    with browser(world, "dee") as dee, browser(world, "ana") as ana:
        created = dee.post(
            "/groups", data={"name": "  Vinyl   club ", "csrf_token": csrf_of(dee.get("/").text)}
        )
        assert created.status_code == 303
        group_id = created.headers["location"].split("/")[2]
        group = database["groups"].find_one({"_id": group_id})
        assert group and group["name"] == "Vinyl club" and group["members"] == ["dee"]
        assert ana.get(f"/groups/{group_id}").status_code == 404, "not invited yet"

        members = dee.get(f"/groups/{group_id}/members").text
        invited = dee.post(f"/groups/{group_id}/invites", data={"csrf_token": csrf_of(members)})
        link = (
            dee.get(invited.headers["location"])
            .text.split('id="invite-link" readonly value="')[1]
            .split('"')[0]
        )
        token_path = urlsplit(link).path
        assert token_path.startswith("/join/")
        stored = database["invites"].find_one({"group_id": group_id})
        assert stored and token_path.removeprefix("/join/") not in str(stored), (
            "only a hash is kept"
        )

        page = ana.get(token_path)
        assert page.status_code == 200 and "Join Vinyl club?" in page.text
        assert ana.post(token_path, data={"csrf_token": "forged"}).status_code == 400, "CSRF"
        joined = ana.post(token_path, data={"csrf_token": csrf_of(page.text)})
        assert joined.status_code == 303 and joined.headers["location"] == f"/groups/{group_id}"
        assert ana.get(f"/groups/{group_id}").status_code == 200
        assert "Vinyl club" in ana.get("/").text

        # Only the owner removes members; then the removed member sees nothing.
        members_page = ana.get(f"/groups/{group_id}/members").text
        assert "/remove" not in members_page, "ana is not the owner"
        refused = ana.post(
            f"/groups/{group_id}/members/dee/remove", data={"csrf_token": csrf_of(members_page)}
        )
        assert refused.status_code == 303
        assert database["groups"].find_one({"_id": group_id})["members"] == ["dee", "ana"]
        owner_page = dee.get(f"/groups/{group_id}/members").text
        dee.post(f"/groups/{group_id}/members/ana/remove", data={"csrf_token": csrf_of(owner_page)})
        assert database["groups"].find_one({"_id": group_id})["members"] == ["dee"]
        assert ana.get(f"/groups/{group_id}").status_code == 404

        # The last member leaving deletes the group and its invitations.
        dee.post(f"/groups/{group_id}/leave", data={"csrf_token": csrf_of(owner_page)})
        assert database["groups"].find_one({"_id": group_id}) is None
        assert database["invites"].count_documents({"group_id": group_id}) == 0


def test_invitations_expire_and_bad_names_are_refused(world: World) -> None:
    store = GroupStore(mongo_database(world.settings))
    group = store.create("Expiring", "cy")
    invite = store.invite(
        group, "cy", now=datetime.now(UTC) - INVITE_LIFETIME - timedelta(minutes=1)
    )
    with browser(world, "ana") as ana:
        page = ana.get(f"/join/{invite.token}")
        assert page.status_code == 404 and "expired" in page.text
        refused = ana.post(f"/join/{invite.token}", data={"csrf_token": "test-csrf-token"})
        assert refused.status_code == 400 and "Ask a member for a new link" in refused.text
        blank = ana.post("/groups", data={"name": "   ", "csrf_token": "test-csrf-token"})
        assert blank.status_code == 303
        assert "Give the group a name." in ana.get("/").text
    store.leave(group, "cy")


def test_an_owner_who_leaves_hands_the_group_on(world: World) -> None:
    store = GroupStore(mongo_database(world.settings))
    group = store.create("Hand-over", "cy")
    token = store.invite(group, "cy").token
    store.join(token, "ana")
    store.join(token, "dee")
    store.leave(store.get(group.group_id), "cy")  # type: ignore[arg-type]
    after = store.get(group.group_id)
    assert after is not None and after.owner == "ana" and after.members == ("ana", "dee")
    store.leave(after, "ana")
    store.leave(store.get(group.group_id), "dee")  # type: ignore[arg-type]
    assert store.get(group.group_id) is None


def _open_invite_ids(page: str) -> list[str]:
    """The revoke buttons' invitation ids on a members page."""
    return re.findall(r"/invites/([0-9a-f]{64})/revoke", page)


def test_removal_and_leaving_revoke_open_invitations_and_owners_revoke_links(
    world: World,
) -> None:
    store = GroupStore(mongo_database(world.settings))
    group = store.create("Revocable", "dee")
    base = f"/groups/{group.group_id}"
    kept = store.invite(group, "dee").token  # the link ana joins with, and keeps
    spare = store.invite(group, "dee").token
    joined = store.join(kept, "ana")
    anas_own = store.invite(joined, "ana").token
    form = {"csrf_token": "test-csrf-token"}
    try:
        with browser(world, "dee") as dee, browser(world, "ana") as ana:
            assert len(_open_invite_ids(dee.get(f"{base}/members").text)) == 3, "all listed"
            assert _open_invite_ids(ana.get(f"{base}/members").text) == [
                hashlib.sha256(anas_own.encode()).hexdigest()
            ], "a member may revoke only their own links"

            # A member cannot revoke the owner's link; the owner revokes any.
            spare_id = hashlib.sha256(spare.encode()).hexdigest()
            ana.post(f"{base}/invites/{spare_id}/revoke", data=form)
            assert store.invited_group(spare) is not None
            dee.post(f"{base}/invites/{spare_id}/revoke", data=form)
            assert store.invited_group(spare) is None

            # Removing ana revokes the rest: hers, and the one she joined with and kept.
            dee.post(f"{base}/members/ana/remove", data=form)
            assert store.invited_group(kept) is None and store.invited_group(anas_own) is None
            back = ana.post(f"/join/{kept}", data=form)
            assert back.status_code == 400, "a removed member cannot come back by a kept link"
            assert store.get(group.group_id) == replace(group, members=("dee",))

            # Leaving does the same: the link ben joined with dies when he leaves.
            fresh = store.invite(group, "dee").token
            store.leave(store.join(fresh, "ben"), "ben")
            assert store.invited_group(fresh) is None
            assert _open_invite_ids(dee.get(f"{base}/members").text) == []
    finally:
        for member in ("ben", "ana", "dee"):
            current = store.get(group.group_id)
            if current is not None and member in current.members:
                store.leave(current, member)
