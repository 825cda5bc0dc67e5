"""Schemathesis against ``/api/v1``'s OpenAPI schema, as a signed-in member: whatever the
parameters, the API answers without a server error, and responses match the schema."""

from __future__ import annotations

from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.api.world import World, session_cookie


@pytest.fixture(scope="module")
def api_schema(world: World) -> Any:
    schema = schemathesis.openapi.from_url(f"{world.base}/openapi.json")
    assert all(path.startswith("/api/v1/") for path in schema.raw_schema["paths"])
    return schema


@pytest.fixture(scope="module")
def member_session(world: World) -> requests.Session:
    session = requests.Session()
    session.cookies.set("auxcord_session", session_cookie(world.settings, {"user_id": "cy"}))
    return session


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_never_answers_with_a_server_error(
    case: Any, world: World, member_session: requests.Session
) -> None:
    # Half the cases name cy's real group, so generated values reach the data, not just 404s.
    if "group_id" in (case.path_parameters or {}) and case.path_parameters["group_id"][:1] < "m":
        case.path_parameters["group_id"] = "g2"
    case.call_and_validate(base_url=world.base, session=member_session, checks=[not_a_server_error])
