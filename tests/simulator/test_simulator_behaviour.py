"""The simulator behaves like Spotify where auxcord depends on it, and its history is seeded."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests
from openapi_schema_validator import OAS30Validator

from devtools.simulator import RunningSimulator, SimulatorConfig, run_simulator_in_thread
from devtools.simulator.model import World, WorldConfig
from devtools.simulator.objects import SpotifyObjects
from tests.simulator.helpers import (
    REDIRECT_URI,
    authorization_code,
    authorized_session,
    pkce_pair,
    tokens_for,
)
from tests.simulator.spotify_schema import _patched_spec

START = datetime(2026, 11, 20, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSimulator]:
    config = SimulatorConfig(users=4, days=5, seed=5, speed=1, rate_budget=40, start=START)
    with run_simulator_in_thread(config) as running:
        yield running


def test_recently_played_pages_through_exactly_the_last_fifty_listed_plays(
    sim: RunningSimulator,
) -> None:
    user = sim.user_ids[1]
    session = authorized_session(sim, user)
    url: str | None = f"{sim.api_base}/me/player/recently-played?limit=7"
    seen: list[str] = []
    while url:
        page = session.get(url, timeout=10).json()
        stamps = [item["played_at"] for item in page["items"]]
        assert stamps == sorted(stamps, reverse=True), "newest first"
        seen.extend(stamps)
        url = page["next"]
    truth = [row for row in sim.ground_truth({user}) if row["listed"]]
    assert len(seen) == 50 == len(set(seen))
    assert seen == [row["played_at"] for row in truth[-50:]][::-1]
    unlisted = [row for row in sim.ground_truth({user}) if not row["listed"]]
    assert all(row["ms_played"] < 30_000 or row["item_type"] == "episode" for row in unlisted)


def test_after_cursor_returns_only_newer_plays_and_is_exclusive(sim: RunningSimulator) -> None:
    user = sim.user_ids[2]
    session = authorized_session(sim, user)
    newest = session.get(f"{sim.api_base}/me/player/recently-played?limit=50", timeout=10).json()
    tenth = newest["items"][9]
    cursor = next(r for r in sim.ground_truth({user}) if r["played_at"] == tenth["played_at"])
    page = session.get(
        f"{sim.api_base}/me/player/recently-played",
        params={"after": cursor["played_at_ms"], "limit": 50},
        timeout=10,
    ).json()
    assert [i["played_at"] for i in page["items"]] == [i["played_at"] for i in newest["items"][:9]]


@pytest.mark.parametrize("query", ["limit=0", "limit=51", "after=1&before=2", "limit=x"])
def test_bad_recently_played_arguments_answer_400(sim: RunningSimulator, query: str) -> None:
    session = authorized_session(sim, sim.user_ids[0])
    response = session.get(f"{sim.api_base}/me/player/recently-played?{query}", timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["status"] == 400


def test_same_seed_same_history_other_seed_other_history() -> None:
    def history(seed: int) -> list[dict[str, object]]:
        world = World(WorldConfig(users=3, seed=seed, history_days=3, start=START))
        return world.ground_truth(int(START.timestamp() * 1000))

    assert history(9) == history(9)
    assert history(9) != history(10)


def test_catalog_has_untrusted_names_and_local_files_fit_the_schema() -> None:
    world = World(WorldConfig(users=2, seed=1, history_days=1, start=START))
    names = world.catalog.track_names + world.catalog.artist_names
    assert any("<script>" in name for name in names) or any("<img" in name for name in names)
    spec = copy.deepcopy(_patched_spec())
    schema = {"$ref": "#/components/schemas/TrackObject", "components": spec["components"]}
    local = SpotifyObjects(world, "http://sim").local_track(0)
    assert local["id"] is None and local["is_local"] is True
    assert list(OAS30Validator(schema).iter_errors(local)) == []


def test_refresh_sometimes_omits_the_refresh_token_and_revocation_is_invalid_grant(
    sim: RunningSimulator,
) -> None:
    user = sim.user_ids[3]
    tokens = tokens_for(sim, user)
    refresh = tokens["refresh_token"]
    omitted = 0
    for _ in range(6):
        answer = requests.post(
            f"{sim.url}/api/token",
            timeout=10,
            data={
                "grant_type": "refresh_token",
                "refresh_token": refresh,
                "client_id": "test-client",
            },
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        omitted += "refresh_token" not in body
        refresh = body.get("refresh_token", refresh)
    assert 0 < omitted < 6
    sim.control(f"users/{user}/revoke")
    answer = requests.post(
        f"{sim.url}/api/token",
        timeout=10,
        data={"grant_type": "refresh_token", "refresh_token": refresh, "client_id": "test-client"},
    )
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"


def test_codes_are_single_use_and_pkce_is_checked(sim: RunningSimulator) -> None:
    verifier, challenge = pkce_pair()
    code = authorization_code(sim, sim.user_ids[0], challenge)

    def exchange(code_verifier: str) -> requests.Response:
        return requests.post(
            f"{sim.url}/api/token",
            timeout=10,
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT_URI,
                "client_id": "test-client",
                "code_verifier": code_verifier,
            },
        )

    wrong = exchange("not-the-verifier")
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    again = exchange(verifier)
    assert again.status_code == 400, "a code is consumed by its first use"


def test_access_tokens_expire_on_the_virtual_clock(sim: RunningSimulator) -> None:
    session = authorized_session(sim, sim.user_ids[0], client_id="expiry-client")
    assert session.get(f"{sim.api_base}/me", timeout=10).status_code == 200
    sim.control("tokens/expire")
    expired = session.get(f"{sim.api_base}/me", timeout=10)
    assert expired.status_code == 401
    assert expired.json()["error"]["message"] == "The access token expired"


def test_rate_limit_is_per_client_id_with_retry_after(sim: RunningSimulator) -> None:
    busy = authorized_session(sim, sim.user_ids[0], client_id="busy-app")
    statuses = [busy.get(f"{sim.api_base}/me", timeout=10) for _ in range(45)]
    limited = [r for r in statuses if r.status_code == 429]
    assert len(limited) == 5
    assert 1 <= int(limited[0].headers["Retry-After"]) <= 30
    # No "reason": only the daily quota's 429 says QUOTA_EXCEEDED.
    assert limited[0].json() == {"error": {"status": 429, "message": "API rate limit exceeded"}}
    stats = sim.control("stats", method="GET")
    assert stats["refused"]["rate_limit"] == stats["429"] >= 5
    assert "quota_exceeded" not in stats["refused"]
    calm = authorized_session(sim, sim.user_ids[0], client_id="calm-app")
    assert calm.get(f"{sim.api_base}/me", timeout=10).status_code == 200


def test_injected_5xx_and_429_storm(sim: RunningSimulator) -> None:
    session = authorized_session(sim, sim.user_ids[1], client_id="fault-app")
    sim.control("faults", {"fail_next": 2, "fail_status": 502})
    try:
        codes = [session.get(f"{sim.api_base}/me", timeout=10).status_code for _ in range(3)]
        assert codes == [502, 502, 200]
        sim.control("faults", {"storm_seconds": 30, "storm_retry_after": 7})
        storm = session.get(f"{sim.api_base}/me", timeout=10)
        assert storm.status_code == 429 and storm.headers["Retry-After"] == "7"
    finally:
        sim.control("faults", method="DELETE")
    assert session.get(f"{sim.api_base}/me", timeout=10).status_code == 200


def test_forced_track_change_shows_in_currently_playing(sim: RunningSimulator) -> None:
    user = sim.user_ids[2]
    track = sim.world.catalog.track_ids[5]
    sim.control(f"users/{user}/play", {"track_id": track})
    session = authorized_session(sim, user, client_id="play-app")
    current = session.get(f"{sim.api_base}/me/player/currently-playing", timeout=10)
    assert current.status_code == 200
    assert current.json()["item"]["id"] == track and current.json()["is_playing"] is True


def test_refresh_tokens_die_six_months_after_sign_in_however_often_refreshed() -> None:
    config = SimulatorConfig(users=1, days=0, seed=5, speed=1, start=START)
    with run_simulator_in_thread(config) as fresh:
        first = tokens_for(fresh, fresh.user_ids[0])["refresh_token"]

        def refresh(token: str) -> requests.Response:
            return requests.post(
                f"{fresh.url}/api/token",
                timeout=10,
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": token,
                    "client_id": "test-client",
                },
            )

        fresh.control("clock", {"advance_seconds": 181 * 86_400})
        answers = [refresh(first) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 200]
        renewed = [a.json()["refresh_token"] for a in answers if "refresh_token" in a.json()]
        assert renewed, "one in three refresh replies carries a new refresh token"
        fresh.control("clock", {"advance_seconds": 1 * 86_400 + 60})  # 182 days and a minute
        for token in (first, renewed[0]):
            expired = refresh(token)
            assert expired.status_code == 400
            assert expired.json() == {
                "error": "invalid_grant",
                "error_description": "Refresh token expired",
            }
