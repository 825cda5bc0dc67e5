"""Every simulator endpoint answers what the published Spotify schema describes.

The validator is openapi-core on the real schema. A malformed-body fault must fail validation,
which proves the validator can fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse

from devtools.simulator import RunningSimulator, SimulatorConfig, run_simulator_in_thread
from tests.simulator.helpers import authorized_session
from tests.simulator.spotify_schema import removed_in_2026, spotify_openapi


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSimulator]:
    # Slow virtual time, so "now" barely moves while the module runs.
    with run_simulator_in_thread(SimulatorConfig(users=6, days=4, seed=3, speed=1)) as running:
        yield running


def _validated(openapi: Any, session: requests.Session, url: str) -> requests.Response:
    response = session.get(url, timeout=10)
    openapi.validate_response(
        RequestsOpenAPIRequest(response.request), RequestsOpenAPIResponse(response)
    )
    if response.status_code == 200:
        assert list(removed_in_2026(response.json())) == [], "fields gone since February 2026"
    return response


def test_every_endpoint_validates_for_every_user(sim: RunningSimulator) -> None:
    openapi = spotify_openapi(sim.api_base)
    seen_types: set[str] = set()
    for user in sim.user_ids:
        session = authorized_session(sim, user)
        _validated(openapi, session, f"{sim.api_base}/me")
        page = _validated(openapi, session, f"{sim.api_base}/me/player/recently-played?limit=50")
        items = page.json()["items"]
        assert items, "each user has history"
        track_id = next(i["track"]["id"] for i in items if i["track"]["id"])
        _validated(openapi, session, f"{sim.api_base}/tracks/{track_id}")
        _validated(
            openapi,
            session,
            f"{sim.api_base}/me/player/recently-played?limit=5&before="
            f"{page.json()['cursors']['before']}",
        )
        # Walk virtual time so currently-playing shows tracks, episodes, ads and silence
        # (a new token each step: access tokens expire after a virtual hour).
        for _ in range(40):
            session = authorized_session(sim, user)
            current = _validated(
                openapi,
                session,
                f"{sim.api_base}/me/player/currently-playing?additional_types=episode",
            )
            seen_types.add(
                current.json()["currently_playing_type"]
                if current.status_code == 200
                else "nothing"
            )
            sim.control("clock", {"advance_seconds": 1800})
    assert {"track", "nothing"} <= seen_types
    assert seen_types - {"track", "nothing"}, f"no episode or ad seen: {seen_types}"


def test_malformed_body_fault_fails_validation(sim: RunningSimulator) -> None:
    openapi = spotify_openapi(sim.api_base)
    session = authorized_session(sim, sim.user_ids[0])
    sim.control("faults", {"malformed_next": 1, "only_user": sim.user_ids[0]})
    try:
        response = session.get(f"{sim.api_base}/me/player/recently-played", timeout=10)
        with pytest.raises(Exception) as caught:
            openapi.validate_response(
                RequestsOpenAPIRequest(response.request), RequestsOpenAPIResponse(response)
            )
        assert "valid" in type(caught.value).__name__.lower() or "Invalid" in str(caught.value)
    finally:
        sim.control("faults", method="DELETE")
    good = _validated(openapi, session, f"{sim.api_base}/me/player/recently-played")
    assert good.status_code == 200


def test_error_bodies_validate(sim: RunningSimulator) -> None:
    openapi = spotify_openapi(sim.api_base)
    response = requests.get(
        f"{sim.api_base}/me", headers={"Authorization": "Bearer nope"}, timeout=10
    )
    assert response.status_code == 401
    openapi.validate_response(
        RequestsOpenAPIRequest(response.request), RequestsOpenAPIResponse(response)
    )


def test_me_has_the_2026_development_mode_shape(sim: RunningSimulator) -> None:
    openapi = spotify_openapi(sim.api_base)
    me = _validated(openapi, authorized_session(sim, sim.user_ids[0]), f"{sim.api_base}/me")
    assert set(me.json()) == {
        "account_id",
        "display_name",
        "explicit_content",
        "external_urls",
        "href",
        "id",
        "images",
        "type",
        "uri",
    }


def test_the_2026_check_finds_fields_that_development_mode_apps_no_longer_get() -> None:
    old_track = {
        "type": "track",
        "popularity": 40,
        "available_markets": ["DE"],
        "id": "x",
        "album": {"type": "album", "label": "L", "available_markets": []},
        "artists": [{"type": "artist", "genres": ["pop"], "name": "A"}],
    }
    assert list(removed_in_2026({"items": [{"track": old_track}]})) == [
        "$.items[0].track.available_markets",
        "$.items[0].track.popularity",
        "$.items[0].track.album.available_markets",
        "$.items[0].track.album.label",
        "$.items[0].track.artists[0].genres",
    ]
    assert list(removed_in_2026({"type": "user", "country": "DE", "product": "free"})) == [
        "$.country",
        "$.product",
    ]
