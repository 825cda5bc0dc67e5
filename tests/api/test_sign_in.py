"""Signing in with Spotify through the real HTTP flow, and every way a forged one must fail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from api.app import check_redirect_uri
from auxcord.clients import mongo_database
from auxcord.errors import AuxcordError, ConfigError
from cli.webserver import serve_in_thread
from devtools.linking import link_one, link_simulated_users, simulated_users
from tests.conftest import LinkWorld, free_port


def _users(world: LinkWorld) -> list[dict[str, object]]:
    return list(mongo_database(world.settings)["users"].find())


def test_linking_five_users_stores_them_with_encrypted_tokens_only(link_world: LinkWorld) -> None:
    sim_users = simulated_users(link_world.settings)[:5]
    for user in sim_users:
        link_one(link_world.base, user)
    stored = {doc["_id"]: doc for doc in _users(link_world)}
    assert set(stored) == {u["user_id"] for u in sim_users}
    for user in sim_users:
        doc = stored[user["user_id"]]
        assert doc["timezone"] == user["timezone"]
        assert doc["client_id"] in {"auxcord-local", "auxcord-local-2"}
        assert doc["needs_reauth"] is False
    # Scan every document of every collection for any token the simulator ever issued.
    issued = list(link_world.sim.accounts.access) + list(link_world.sim.accounts.refresh)
    assert len(issued) >= 10
    database = mongo_database(link_world.settings)
    dump = "".join(
        str(doc) for name in database.list_collection_names() for doc in database[name].find()
    )
    assert dump
    for token in issued:
        assert token not in dump


def test_simulated_link_command_links_everyone(link_world: LinkWorld) -> None:
    linked = link_simulated_users(link_world.settings)
    assert {user.user_id for user in linked} == set(link_world.sim.user_ids)
    stored = _users(link_world)
    assert len(stored) == len(link_world.sim.user_ids) == 6
    per_app = {
        app: sum(doc["client_id"] == app for doc in stored)
        for app in ("auxcord-local", "auxcord-local-2")
    }
    assert per_app == {"auxcord-local": 3, "auxcord-local-2": 3}


def test_a_sixth_user_of_one_app_is_refused_but_members_relink(link_world: LinkWorld) -> None:
    port = free_port()
    settings = link_world.settings.model_copy(update={
        "spotify_extra_apps": [],
        "spotify_redirect_uri": f"http://127.0.0.1:{port}/auth/callback",
    })  # fmt: skip
    users = simulated_users(settings)
    with serve_in_thread(settings, "127.0.0.1", port) as base:
        for user in users[:5]:
            link_one(base, user)
        with pytest.raises(AuxcordError, match="AUXCORD_SPOTIFY_EXTRA_APPS"):
            link_one(base, users[5])
        link_one(base, users[0])  # an existing member re-links freely
    assert len(_users(link_world)) == 5


def _start(world: LinkWorld, browser: httpx.Client, user_id: str) -> str:
    """Begin a sign-in in ``browser`` and return the callback URL the simulator sends back."""
    login = browser.get(f"{world.base}/auth/login")
    assert login.status_code == 302
    consent = browser.get(f"{login.headers['location']}&sim_user={user_id}")
    assert consent.status_code == 302
    return str(consent.headers["location"])


def _refused(response: httpx.Response) -> bool:
    return response.status_code == 400 and "Sign-in did not work" in response.text


def test_callback_without_state_is_refused(link_world: LinkWorld) -> None:
    with httpx.Client(follow_redirects=False) as browser:
        callback = _start(link_world, browser, link_world.sim.user_ids[0])
        code = parse_qs(urlsplit(callback).query)["code"][0]
        assert _refused(browser.get(f"{link_world.base}/auth/callback", params={"code": code}))
    assert _users(link_world) == []


def test_forged_state_is_refused(link_world: LinkWorld) -> None:
    with httpx.Client(follow_redirects=False) as browser:
        callback = _start(link_world, browser, link_world.sim.user_ids[0])
        code = parse_qs(urlsplit(callback).query)["code"][0]
        forged = browser.get(
            f"{link_world.base}/auth/callback", params={"code": code, "state": "forged-state"}
        )
        assert _refused(forged)
    assert _users(link_world) == []


def test_replayed_state_is_refused(link_world: LinkWorld) -> None:
    with httpx.Client(follow_redirects=False) as browser:
        callback = _start(link_world, browser, link_world.sim.user_ids[0])
        assert browser.get(callback).status_code == 303
        before = _users(link_world)
        assert _refused(browser.get(callback))
    assert _users(link_world) == before


def test_expired_state_is_refused(link_world: LinkWorld) -> None:
    with httpx.Client(follow_redirects=False) as browser:
        callback = _start(link_world, browser, link_world.sim.user_ids[0])
        mongo_database(link_world.settings)["oauth_states"].update_many(
            {}, {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}}
        )
        assert _refused(browser.get(callback))
    assert _users(link_world) == []


def test_state_from_another_browser_is_refused(link_world: LinkWorld) -> None:
    with httpx.Client(follow_redirects=False) as victim:
        callback = _start(link_world, victim, link_world.sim.user_ids[0])
    with httpx.Client(follow_redirects=False) as attacker:
        assert _refused(attacker.get(callback))
    assert _users(link_world) == []


def test_session_cookie_is_signed_httponly_and_lax(link_world: LinkWorld) -> None:
    with httpx.Client(follow_redirects=False) as browser:
        login = browser.get(f"{link_world.base}/auth/login")
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie
        tampered = httpx.Client(follow_redirects=False)
        tampered.cookies.set("auxcord_session", "eyJ1c2VyX2lkIjogIngifQ==.forged.sig")
        assert "Sign in with Spotify" in tampered.get(f"{link_world.base}/").text


def test_logout_needs_the_csrf_token(link_world: LinkWorld) -> None:
    with httpx.Client(follow_redirects=False) as browser:
        assert (
            browser.get(_start(link_world, browser, link_world.sim.user_ids[1])).status_code == 303
        )
        page = browser.get(f"{link_world.base}/").text
        assert "Sign out" in page
        assert browser.post(f"{link_world.base}/auth/logout", data={}).status_code == 400
        token = page.split('name="csrf_token" value="')[1].split('"')[0]
        out = browser.post(f"{link_world.base}/auth/logout", data={"csrf_token": token})
        assert out.status_code == 303
        assert "Sign in with Spotify" in browser.get(f"{link_world.base}/").text


def test_pages_carry_a_content_security_policy(link_world: LinkWorld) -> None:
    response = httpx.get(f"{link_world.base}/")
    assert "script-src 'self'" in response.headers["content-security-policy"]


@pytest.mark.parametrize(
    ("uri", "https"),
    [
        ("https://aux.example.org/auth/callback", True),
        ("http://127.0.0.1:8000/auth/callback", False),
        ("http://localhost:8000/auth/callback", False),
        ("http://[::1]:8000/auth/callback", False),
    ],
)
def test_redirect_uri_must_be_https_off_loopback(uri: str, https: bool) -> None:
    assert check_redirect_uri(uri) is https


def test_plain_http_redirect_uri_off_loopback_is_refused() -> None:
    with pytest.raises(ConfigError, match="AUXCORD_SPOTIFY_REDIRECT_URI"):
        check_redirect_uri("http://aux.example.org/auth/callback")
