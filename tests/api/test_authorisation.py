"""Every group route and API endpoint, generated from the app's router: strangers, anonymous
clients and people who were members but left or were removed get 404 or a redirect to sign in,
never the data; a former member's open live feed is closed.

A route added later is covered automatically if it names a group; any other route must be added
to PUBLIC_ROUTES on purpose, or this test fails.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from api.app import create_app
from api.deps import require_admin
from auxcord.clients import mongo_database
from auxcord.groups import GroupStore
from auxcord.names import Collection
from tests.api.world import GROUP_NAMES, World, browser, stream_rest

PUBLIC_ROUTES = {
    ("GET", "/"),
    ("GET", "/auth/login"),
    ("GET", "/auth/callback"),
    ("POST", "/auth/logout"),
    ("POST", "/auth/logout-everywhere"),
    ("POST", "/auth/timezone"),
    ("POST", "/groups"),
    ("GET", "/join/{token}"),
    ("POST", "/join/{token}"),
    ("GET", "/healthz"),
    ("GET", "/favicon.ico"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/api/v1/me"),
    ("GET", "/api/v1/groups"),
    ("POST", "/imports"),
    ("GET", "/imports/{job_id}"),
    ("GET", "/api/v1/imports/{job_id}"),
}
"""Routes that name no group: each one's own checks are tested where it is built."""

# g2 is "Secret society" (cy and dee); ana is not in it.
PARAMETERS = {
    "group_id": "g2",
    "member_id": "dee",
    "year": "2026",
    "token": "no-such-token",
    "job_id": "no-such-job",
    "invite_id": "no-such-invite",
}
SECRETS = (GROUP_NAMES["g2"], "Dee")
FORMER_GROUP = "Old haunt"
"""dee's group that ben was in: ben shares no other group with dee, so "Dee" is a secret too."""


def _depends_on(route: APIRoute, dependency: Any) -> bool:
    stack = list(route.dependant.dependencies)
    while stack:
        found = stack.pop()
        if found.call is dependency:
            return True
        stack.extend(found.dependencies)
    return False


def _routes(world: World) -> list[tuple[str, str, APIRoute | None]]:
    app = create_app(world.settings)
    found: list[tuple[str, str, APIRoute | None]] = []
    for route in app.routes:
        if isinstance(route, APIRoute):
            for method in sorted(route.methods - {"HEAD"}):
                found.append((method, route.path, route))
        elif hasattr(route, "path") and route.path.startswith("/openapi"):
            found.append(("GET", route.path, None))
    return found


def _url(path: str, parameters: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: parameters[m.group(1)], path)


def _protected(world: World) -> list[tuple[str, str]]:
    protected = []
    for method, path, route in _routes(world):
        if "{group_id}" in path or (route is not None and _depends_on(route, require_admin)):
            protected.append((method, path))
        else:
            assert (method, path) in PUBLIC_ROUTES, (
                f"{method} {path} names no group and is not in PUBLIC_ROUTES: decide who may "
                "use it, and add it there (with its own test) or give it a group"
            )
    return protected


def _refused(response: httpx.Response) -> bool:
    if response.status_code == 404:
        return True
    return response.status_code in (302, 303, 307) and response.headers["location"] == "/"


def _assert_every_group_route_refuses(
    world: World,
    client: httpx.Client,
    who: str,
    parameters: dict[str, str],
    secrets: tuple[str, ...],
) -> None:
    protected = _protected(world)
    assert len(protected) >= 20, "the table is generated from the router"
    group_id = parameters["group_id"]
    groups = mongo_database(world.settings)[Collection.GROUPS]
    invites = mongo_database(world.settings)[Collection.INVITES]
    before = groups.find_one({"_id": group_id}), invites.count_documents({"group_id": group_id})
    for method, path in protected:
        response = client.request(
            method,
            _url(path, parameters),
            data={"csrf_token": "test-csrf-token"} if method == "POST" else None,
        )
        assert _refused(response), f"{who}: {method} {path} → {response.status_code}"
        for secret in secrets:
            assert secret not in response.text, f"{who}: {method} {path} leaked {secret!r}"
    after = groups.find_one({"_id": group_id}), invites.count_documents({"group_id": group_id})
    assert after == before, f"{who} changed the group"


@pytest.mark.parametrize("who", ["anonymous", "stranger"])
def test_group_routes_refuse_strangers_and_anonymous_clients(world: World, who: str) -> None:
    with browser(world, None if who == "anonymous" else "ana") as client:
        _assert_every_group_route_refuses(world, client, who, PARAMETERS, SECRETS)


@pytest.mark.parametrize("how", ["left", "removed"])
def test_former_members_lose_every_route_their_feed_and_their_way_back(
    world: World, how: str
) -> None:
    """ben was in dee's group with ana; he leaves, or dee removes him. His open live feed
    ends, every group route refuses him, and the invitation he joined with is dead."""
    store = GroupStore(mongo_database(world.settings))
    group = store.create(FORMER_GROUP, "dee")
    token = store.invite(group, "dee").token
    store.join(token, "ana")
    store.join(token, "ben")
    try:
        with browser(world, "ben") as ben, browser(world, "dee") as dee:
            with ben.stream("GET", f"/groups/{group.group_id}/live") as feed:
                assert feed.status_code == 200
                lines = feed.iter_lines()
                assert next(lines) == "event: feed"
                if how == "left":
                    left = ben.post(
                        f"/groups/{group.group_id}/leave", data={"csrf_token": "test-csrf-token"}
                    )
                    assert left.status_code == 303
                else:
                    removed = dee.post(
                        f"/groups/{group.group_id}/members/ben/remove",
                        data={"csrf_token": "test-csrf-token"},
                    )
                    assert removed.status_code == 303
                # The rest of the first message, and one that may have been on its way; the next
                # check ends the stream.
                assert stream_rest(lines, most=3)[-1] == "event: end"

            parameters = {**PARAMETERS, "group_id": group.group_id, "member_id": "dee"}
            _assert_every_group_route_refuses(world, ben, how, parameters, (FORMER_GROUP, "Dee"))
            assert ben.get(f"/join/{token}").status_code == 404
            back = ben.post(f"/join/{token}", data={"csrf_token": "test-csrf-token"})
            assert back.status_code == 400, "the link ben kept must not bring him back"
        after = store.get(group.group_id)
        assert after is not None and after.members == ("dee", "ana")
    finally:
        for member in ("ana", "dee"):
            current = store.get(group.group_id)
            if current is not None:
                store.leave(current, member)


def test_former_members_are_anonymous_in_the_api_as_on_the_pages(world: World) -> None:
    """A copy of g1's figures in a group ben is no longer in: the API, like the pages, shows
    his figures without his id."""
    database = mongo_database(world.settings)
    store = GroupStore(database)
    group = store.create("Without ben", "ana")
    store.join(store.invite(group, "ana").token, "cy")
    copied = {}
    for collection in (Collection.GROUP_DAILY, Collection.GROUP_ROLLUPS, Collection.GROUP_RECAPS):
        documents = [
            {
                **doc,
                "_id": doc["_id"].replace("g1:", f"{group.group_id}:", 1),
                "group_id": group.group_id,
            }
            for doc in database[collection].find({"group_id": "g1"})
        ]
        database[collection].insert_many(documents)
        copied[collection] = len(documents)
    try:
        assert all(copied.values()), copied
        year = world.last.year
        base = f"/api/v1/groups/{group.group_id}"
        with browser(world, "ana") as ana:
            responses = [
                ana.get(f"{base}/stats", params={"period": "all"}),
                ana.get(f"{base}/stats", params={"period": "day", "day": str(world.last)}),
                ana.get(f"{base}/recap/{year}"),
            ]
            for response in responses:
                assert response.status_code == 200, response.text
                assert '"ben"' not in response.text, f"{response.url} names a former member"
                assert '"user_id":null' in response.text, "his figures stay, without his id"
            page = ana.get(f"/groups/{group.group_id}/leaderboard", params={"period": "all"})
            assert "a former member" in page.text and "/members/ben" not in page.text
    finally:
        for collection in copied:
            database[collection].delete_many({"group_id": group.group_id})
        for member in ("cy", "ana"):
            current = store.get(group.group_id)
            if current is not None:
                store.leave(current, member)


def test_members_see_their_group_but_not_profiles_of_outsiders(world: World) -> None:
    with browser(world, "cy") as client:
        assert client.get("/groups/g2").status_code == 200
        assert client.get("/api/v1/groups/g2").json()["name"] == GROUP_NAMES["g2"]
    with browser(world, "ana") as client:
        # dee exists, and is in a group with cy, who is in ana's group: still not ana's business.
        assert client.get("/groups/g1/members/dee").status_code == 404
        assert client.get("/api/v1/groups/g1/members/dee/stats").status_code == 404
        assert client.get("/admin").status_code == 404, "ana is not an admin"
    with browser(world, "cy") as client:
        assert client.get("/admin").status_code == 200
