"""Every group route and API endpoint, generated from the app's router: strangers and anonymous
clients get 404 or a redirect to sign in, never the data.

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
from tests.api.world import GROUP_NAMES, World, browser

PUBLIC_ROUTES = {
    ("GET", "/"),
    ("GET", "/auth/login"),
    ("GET", "/auth/callback"),
    ("POST", "/auth/logout"),
    ("POST", "/groups"),
    ("GET", "/join/{token}"),
    ("POST", "/join/{token}"),
    ("GET", "/healthz"),
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
    "group_id": "g2", "member_id": "dee", "year": "2026", "token": "no-such-token",
    "job_id": "no-such-job",
}  # fmt: skip
SECRETS = (GROUP_NAMES["g2"], "Dee")


def _depends_on(route: APIRoute, dependency: Any) -> bool:
    stack = list(route.dependant.dependencies)
    while stack:
        found = stack.pop()
        if found.call is dependency:
            return True
        stack.extend(found.dependencies)
    return False


def _routes(world: World) -> list[tuple[str, str, APIRoute]]:
    app = create_app(world.settings)
    found = []
    for route in app.routes:
        if isinstance(route, APIRoute):
            for method in sorted(route.methods - {"HEAD"}):
                found.append((method, route.path, route))
        elif hasattr(route, "path") and route.path.startswith("/openapi"):
            found.append(("GET", route.path, None))
    return found  # type: ignore[return-value]


def _url(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PARAMETERS[m.group(1)], path)


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


@pytest.mark.parametrize("who", ["anonymous", "stranger"])
def test_group_routes_refuse_strangers_and_anonymous_clients(world: World, who: str) -> None:
    protected = _protected(world)
    assert len(protected) >= 20, "the table is generated from the router"
    groups_before = mongo_database(world.settings)["groups"].find_one({"_id": "g2"})
    with browser(world, None if who == "anonymous" else "ana") as client:
        for method, path in protected:
            response = client.request(
                method,
                _url(path),
                data={"csrf_token": "test-csrf-token"} if method == "POST" else None,
            )
            assert _refused(response), f"{who}: {method} {path} → {response.status_code}"
            for secret in SECRETS:
                assert secret not in response.text, f"{who}: {method} {path} leaked {secret!r}"
    assert mongo_database(world.settings)["groups"].find_one({"_id": "g2"}) == groups_before


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
