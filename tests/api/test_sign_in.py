"""Signing in with Spotify through the real HTTP flow, and every way a forged one must fail."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pymongo.database import Database

from api.app import check_redirect_uri
from api.deps import SESSION_LIFETIME, session_is_current, signed_in_session
from api.security import session_cookie
from auxcord.accounts import ENDED_SESSIONS_KEPT, AccountStore, LinkedAccount
from auxcord.clients import mongo_database
from auxcord.errors import AuxcordError, ConfigError
from auxcord.groups import GroupStore
from auxcord.settings import Settings
from auxcord.tokens import TokenCipher
from cli.webserver import serve_in_thread
from devtools.linking import link_one, link_simulated_users, simulated_users
from devtools.simulator import RunningSimulator, run_simulator_in_thread
from tests.api.world import csrf_of, stream_rest
from tests.conftest import LINK_SIMULATOR, LinkWorld, free_port, link_world_on


@pytest.fixture(scope="module")
def simulator() -> Iterator[RunningSimulator]:
    """One simulator for the module: every test signs in on a database of its own, and none
    changes the simulator's users, clock or faults."""
    with run_simulator_in_thread(LINK_SIMULATOR) as sim:
        yield sim


@pytest.fixture
def link_world(simulator: RunningSimulator, test_settings: Settings) -> Iterator[LinkWorld]:
    with link_world_on(simulator, test_settings) as world:
        yield world


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
    settings = link_world.settings.model_copy(
        update={
            "spotify_extra_apps": [],
            "spotify_redirect_uri": f"http://127.0.0.1:{port}/auth/callback",
        }
    )
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


def _sign_in(world: LinkWorld, browser: httpx.Client, user_id: str) -> None:
    assert browser.get(_start(world, browser, user_id)).status_code == 303


def _signed_in(world: LinkWorld, browser: httpx.Client) -> bool:
    return browser.get(f"{world.base}/api/v1/me").status_code == 200


def test_the_time_zone_is_taken_on_the_first_sign_in_only(link_world: LinkWorld) -> None:
    """A page elsewhere can send a signed-in browser to /auth/login?tz=…, and Spotify approves
    again without asking: that must not change the account's zone."""
    user = simulated_users(link_world.settings)[0]
    assert user["timezone"] != "Pacific/Kiritimati"
    link_one(link_world.base, user)
    link_one(link_world.base, {**user, "timezone": "Pacific/Kiritimati"})
    (stored,) = _users(link_world)
    assert stored["timezone"] == user["timezone"]


def test_the_time_zone_changes_through_the_profile_form_only(link_world: LinkWorld) -> None:
    user_id = link_world.sim.user_ids[0]
    users = mongo_database(link_world.settings)["users"]
    with httpx.Client(base_url=link_world.base, follow_redirects=False) as browser:
        _sign_in(link_world, browser, user_id)
        before = users.find_one({"_id": user_id})["timezone"]  # type: ignore[index]
        group = GroupStore(mongo_database(link_world.settings)).create("Zones", user_id)
        profile = f"/groups/{group.group_id}/members/{user_id}"
        page = browser.get(profile).text
        assert 'id="timezone-form"' in page and f"<option selected>{before}</option>" in page
        token = csrf_of(page)

        forged = browser.post("/auth/timezone", data={"timezone": "Pacific/Kiritimati"})
        assert forged.status_code == 400, "no CSRF token, no change"
        unknown = browser.post(
            "/auth/timezone", data={"timezone": "Mars/Olympus", "csrf_token": token}
        )
        assert unknown.status_code == 303
        assert "not a time zone" in browser.get("/").text
        assert users.find_one({"_id": user_id})["timezone"] == before  # type: ignore[index]

        changed = browser.post(
            "/auth/timezone",
            data={"timezone": "Pacific/Kiritimati", "csrf_token": token, "back": profile},
        )
        assert changed.status_code == 303 and changed.headers["location"] == profile
        assert users.find_one({"_id": user_id})["timezone"] == "Pacific/Kiritimati"  # type: ignore[index]
        assert browser.get("/api/v1/me").json()["timezone"] == "Pacific/Kiritimati"
        elsewhere = browser.post(
            "/auth/timezone",
            data={"timezone": "UTC", "csrf_token": token, "back": "//evil.example/"},
        )
        assert elsewhere.headers["location"] == "/", "back only to a page of this site"


def test_sign_out_everywhere_ends_every_session_and_open_feed(link_world: LinkWorld) -> None:
    user_id = link_world.sim.user_ids[1]
    with (
        httpx.Client(base_url=link_world.base, follow_redirects=False, timeout=20) as phone,
        httpx.Client(base_url=link_world.base, follow_redirects=False) as laptop,
    ):
        _sign_in(link_world, phone, user_id)
        _sign_in(link_world, laptop, user_id)
        copied = phone.cookies["auxcord_session"]
        group = GroupStore(mongo_database(link_world.settings)).create("Devices", user_id)
        with phone.stream("GET", f"/groups/{group.group_id}/live") as feed:
            lines = feed.iter_lines()
            assert next(lines) == "event: feed"
            page = laptop.get("/").text
            assert "Sign out everywhere" in page
            assert laptop.post("/auth/logout-everywhere", data={}).status_code == 400, "CSRF"
            out = laptop.post("/auth/logout-everywhere", data={"csrf_token": csrf_of(page)})
            assert out.status_code == 303
            assert stream_rest(lines, most=3)[-1] == "event: end"
        assert not _signed_in(link_world, phone) and not _signed_in(link_world, laptop)
        with httpx.Client(base_url=link_world.base, cookies={"auxcord_session": copied}) as thief:
            assert not _signed_in(link_world, thief), "a copy of the cookie is as dead"
        _sign_in(link_world, phone, user_id)
        assert _signed_in(link_world, phone), "signing in again works"


def test_signing_out_ends_that_session_its_copies_and_open_feeds(link_world: LinkWorld) -> None:
    user_id = link_world.sim.user_ids[3]
    with (
        httpx.Client(base_url=link_world.base, follow_redirects=False) as phone,
        httpx.Client(base_url=link_world.base, follow_redirects=False) as laptop,
    ):
        _sign_in(link_world, phone, user_id)
        _sign_in(link_world, laptop, user_id)
        copied = {"auxcord_session": phone.cookies["auxcord_session"]}
        group = GroupStore(mongo_database(link_world.settings)).create("Tabs", user_id)
        with (
            httpx.Client(base_url=link_world.base, cookies=copied, timeout=20) as other_tab,
            other_tab.stream("GET", f"/groups/{group.group_id}/live") as feed,
        ):
            lines = feed.iter_lines()
            assert next(lines) == "event: feed"
            out = phone.post("/auth/logout", data={"csrf_token": csrf_of(phone.get("/").text)})
            assert out.status_code == 303
            assert stream_rest(lines, most=3)[-1] == "event: end"
        assert not _signed_in(link_world, phone)
        with httpx.Client(base_url=link_world.base, cookies=copied) as thief:
            assert not _signed_in(link_world, thief), "a copy of the cookie is signed out too"
        assert _signed_in(link_world, laptop), "the account's other sessions go on"


def test_sessions_expire_and_unversioned_sessions_are_refused(link_world: LinkWorld) -> None:
    user = simulated_users(link_world.settings)[2]
    link_one(link_world.base, user)
    account = AccountStore(
        mongo_database(link_world.settings), TokenCipher(link_world.settings.secret_key_value())
    ).get(user["user_id"])
    assert account is not None
    secret = link_world.settings.secret_key_value()
    now = time.time()
    sessions = {
        "current": signed_in_session(account.user_id, account.session_version, now),
        "expired": signed_in_session(
            account.user_id, account.session_version, now - SESSION_LIFETIME.total_seconds() - 1
        ),
        "from before versions": {"user_id": account.user_id},
        "from before session ids": {
            field: value
            for field, value in signed_in_session(
                account.user_id, account.session_version, now
            ).items()
            if field != "session_id"
        },
        "older version": signed_in_session(account.user_id, account.session_version - 1, now),
    }
    for name, session in sessions.items():
        cookie = session_cookie(secret, session)
        with httpx.Client(base_url=link_world.base, cookies={"auxcord_session": cookie}) as b:
            assert _signed_in(link_world, b) is (name == "current"), name


@pytest.mark.parametrize(
    ("age_s", "version", "current"),
    [
        (0, 3, True),
        (SESSION_LIFETIME.total_seconds() - 1, 3, True),
        (SESSION_LIFETIME.total_seconds(), 3, False),
        (0, 2, False),
        (-3600, 3, False),
    ],
)
def test_a_session_is_current_while_young_and_of_the_current_version(
    age_s: float, version: int, current: bool
) -> None:
    account = LinkedAccount("u", "U", None, "UTC", "app", False, session_version=3)
    session = signed_in_session("u", version, now=1_000_000.0)
    assert session_is_current(session, account, now=1_000_000.0 + age_s) is current


def test_a_signed_out_session_stays_out_however_many_sign_outs_follow(
    mongo_db: Database[dict[str, Any]], test_settings: Settings
) -> None:
    """The list of signed-out ids is bounded, yet never forgets one whose cookie would work:
    the sign-out that finds it full signs every session out instead."""
    accounts = AccountStore(mongo_db, TokenCipher(test_settings.secret_key_value()))
    accounts.link(
        user_id="u",
        display_name="U",
        country="SE",
        timezone="UTC",
        client_id="app",
        token_info={
            "access_token": "a",
            "refresh_token": "r",
            "expires_in": 3600,
            "scope": "user-read-recently-played",
        },
    )

    def account() -> LinkedAccount:
        found = accounts.get("u")
        assert found is not None
        return found

    stolen = signed_in_session("u", account().session_version)
    accounts.end_session("u", stolen["session_id"])
    for _ in range(ENDED_SESSIONS_KEPT):
        accounts.end_session("u", signed_in_session("u", account().session_version)["session_id"])
        assert not session_is_current(stolen, account()), "the first signed-out cookie"
    assert len(account().ended_sessions) < ENDED_SESSIONS_KEPT
    assert session_is_current(signed_in_session("u", account().session_version), account())
