"""/metrics: health gauges counted by MongoDB at most once per refresh, whatever the scrape
rate, and an optional bearer token."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from pymongo.database import Database

from api.app import create_app
from api.metrics import HealthCollector, count_health
from auxcord.names import Collection
from auxcord.settings import Settings

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def _seed(database: Database[dict[str, Any]]) -> None:
    fresh, old = NOW - timedelta(minutes=1), NOW - timedelta(hours=1)
    database[Collection.USERS].insert_many(
        [
            {"_id": "fresh"},
            {"_id": "old"},
            {"_id": "never-polled"},
            {"_id": "reauth-old", "needs_reauth": True},
            {"_id": "reauth-fresh", "needs_reauth": True},
        ]
    )
    database[Collection.POLL_STATE].insert_many(
        [
            {"_id": "fresh", "last_success_at": fresh},
            {"_id": "old", "last_success_at": old},
            {"_id": "reauth-old", "last_success_at": old},
            {"_id": "reauth-fresh", "last_success_at": fresh},
            {"_id": "gone", "last_success_at": old},  # a poll state without its user
        ]
    )
    database[Collection.LISTENS].insert_one({"_id": "p", "played_at": NOW - timedelta(seconds=90)})
    database[Collection.DEAD_LETTERS].insert_one({"_id": "d"})


def test_health_is_counted_by_the_same_rules_as_the_admin_page(
    mongo_db: Database[dict[str, Any]],
) -> None:
    _seed(mongo_db)
    counts = count_health(mongo_db, now=NOW)
    assert counts.stale_users == 2, "old and never-polled; users who must sign in again are not"
    assert counts.needs_reauth == 2
    assert counts.dead_letters == 1
    assert counts.pipeline_lag_s == 90


def test_scrapes_reuse_one_count_until_it_is_due(mongo_db: Database[dict[str, Any]]) -> None:
    _seed(mongo_db)
    moment = [0.0]
    collector = HealthCollector(mongo_db, refresh_s=30, clock=lambda: moment[0])

    def stale() -> float:
        family = next(f for f in collector.collect() if f.name == "auxcord_users_stale")
        return float(family.samples[0].value)

    first = stale()
    mongo_db[Collection.USERS].insert_one({"_id": "newcomer"})  # never polled: stale
    moment[0] = 29.0
    assert stale() == first, "a scrape within the refresh reads no database"
    moment[0] = 30.0
    assert stale() == first + 1


def _scrape(settings: Settings, headers: dict[str, str]) -> httpx.Response:
    app = create_app(settings)

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/metrics", headers=headers)

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("token", "authorization", "status"),
    [
        (None, "", 200),
        ("", "", 200),  # empty, as .env.example leaves it: unset
        ("s3cret-metrics-token", "", 401),
        ("s3cret-metrics-token", "Bearer wrong", 401),
        ("s3cret-metrics-token", "s3cret-metrics-token", 401),
        ("s3cret-metrics-token", "Bearer s3cret-metrics-token", 200),
    ],
)
def test_a_metrics_token_is_required_once_set(
    test_settings: Settings, token: str | None, authorization: str, status: int
) -> None:
    settings = Settings.model_validate(
        {**test_settings.model_dump(), "metrics_token": SecretStr(token) if token else token}
    )
    headers = {"authorization": authorization} if authorization else {}
    response = _scrape(settings, headers)
    assert response.status_code == status
    if status == 200:
        assert "auxcord_users_stale" in response.text
    else:
        assert response.headers["www-authenticate"] == "Bearer"
        assert "auxcord_" not in response.text
