"""``/admin`` reads like a status page: one table per component, human units, the Spotify
budget per developer account and the open gaps; ``/api/v1/admin/health`` carries the budgets."""

from __future__ import annotations

import html
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from api.humanize import time_span
from auxcord.accounts import AccountStore
from auxcord.clients import mongo_database
from auxcord.gaps import GapCause, GapStore
from auxcord.names import Collection
from auxcord.settings import Settings
from auxcord.tokens import TokenCipher
from devtools.stack import free_port
from tests.analytics.test_daily import FIRST, LAST
from tests.api.world import SCRIPT_NAME, World, browser

IDLE = timedelta(days=7, hours=11, minutes=30)
"""How long ago ana's newest play ended: the admin page must say "7 d 11 h", not seconds."""


ADMIN_ZONE = "Europe/Berlin"
"""The admin's own zone: the page's times are in it."""


@dataclass(frozen=True)
class Seeded:
    site: World
    now: datetime
    gap_start: datetime
    gap_end: datetime


@pytest.fixture
def site(test_settings: Settings) -> Iterator[World]:
    """The web app on this test's own database, with three linked friends and cy the admin:
    no aggregates needed, so no Spark."""
    from cli.webserver import serve_in_thread

    settings = test_settings.model_copy(update={"admin_users": ["cy"]})
    accounts = AccountStore(mongo_database(settings), TokenCipher(settings.secret_key_value()))
    for user, name, zone in (
        ("ana", "Ana", "UTC"),
        ("ben", SCRIPT_NAME, "UTC"),
        ("cy", "Cy", ADMIN_ZONE),
    ):
        accounts.link(
            user_id=user,
            display_name=name,
            country=None,
            timezone=zone,
            client_id="auxcord-local",
            token_info={"access_token": "a", "refresh_token": "r", "expires_in": 3600},
        )
    with serve_in_thread(settings, "127.0.0.1", free_port()) as base:
        yield World(settings=settings, base=base, first=FIRST, last=LAST)


@pytest.fixture
def seeded(site: World) -> Seeded:
    """What the stream, the pollers and their quota bookkeeping write, as they write it."""
    now = datetime.now(UTC)
    gap_start = now - timedelta(hours=20)
    gap_end = gap_start + timedelta(hours=2, minutes=30)
    database = mongo_database(site.settings)
    database[Collection.SPOTIFY_BUDGETS].insert_many(
        [
            {
                "_id": "dev-ana",
                "client_ids": ["auxcord-local"],
                "budget": 1000,
                "calls_24h": 812,
                "refused_24h": 0,
                "locked_until": None,
                "lock_reason": None,
                "projected_exhaustion_at": now + timedelta(hours=5, minutes=30),
                "updated_at": now,
            },
            {
                "_id": "dev-cy",
                "client_ids": ["auxcord-local-2"],
                "budget": 1000,
                "calls_24h": 1000,
                "refused_24h": 3,
                "locked_until": now + timedelta(hours=13, minutes=30),
                "lock_reason": "QUOTA_EXCEEDED, Retry-After 48600 s",
                "projected_exhaustion_at": None,
                "updated_at": now,
            },
        ]
    )
    GapStore(database).record("ben", gap_start, gap_end, GapCause.QUOTA_LOCKOUT, now)
    database[Collection.PIPELINE_STATUS].insert_one(
        {
            "_id": "stream",
            "run_id": "r1",
            "batch_id": 41,
            "batch_records": 1234,
            "batch_seconds": 0.42,
            "updated_at": now - timedelta(minutes=2, seconds=30),
            "newest_record": now - timedelta(minutes=2, seconds=31.5),
            "partition_ends": [
                {"topic": "auxcord.listens", "partition": 0, "end": 5120, "batch_id": 41}
            ],
        }
    )
    database[Collection.POLL_STATE].insert_one(
        {
            "_id": "ana",
            "last_success_at": now - timedelta(minutes=2, seconds=30),
            "lag_s": IDLE.total_seconds(),
            "cursor_ms": int((now - IDLE).timestamp() * 1000),
        }
    )
    database[Collection.POLLER_LEASES].insert_many(
        [
            {
                "_id": "poller:vm:1",
                "owner": "vm:1",
                "kind": "poller",
                "expires_at": now + timedelta(seconds=30),
            },
            {
                "_id": "ana",
                "owner": "vm:1",
                "kind": "user",
                "expires_at": now + timedelta(seconds=30),
            },
        ]
    )
    return Seeded(site, now, gap_start, gap_end)


def test_admin_shows_each_component_in_human_units(seeded: Seeded) -> None:
    with browser(seeded.site, "cy") as client:
        page = client.get("/admin")
    assert page.status_code == 200
    text = html.unescape(page.text)
    # The stream: its last batch and its own lag, not a raw status dict.
    assert "#41, 2 min ago: 1.2k records in 0.4 s" in text
    assert "1.5 s" in text and "from Kafka to MongoDB" in text
    assert "auxcord.listens[0] offset 5.1k" in text
    assert "partition_ends" not in text and "batch_records=" not in text
    # Pollers: ana's newest play is days old, said in days and hours, never in seconds.
    assert "7 d 11 h ago" in text
    assert "vm:1</code> polls 1 user" in text
    assert f"Times in {ADMIN_ZONE}" in text
    assert "647198" not in text, "no raw seconds"


def test_admin_shows_the_budget_and_lock_of_each_developer_account(
    seeded: Seeded,
) -> None:
    with browser(seeded.site, "cy") as client:
        page = client.get("/admin")
        api = client.get("/api/v1/admin/health")
    text = html.unescape(page.text)
    budgets = text.split('id="budgets"')[1].split("</section>")[0]
    assert "812 of 1,000" in budgets and "1,000 of 1,000" in budgets
    assert 'aria-label="81% of the budget used"' in budgets
    assert "at the current rate" in budgets, "dev-ana's projected exhaustion"
    assert "not at the current rate" in budgets, "dev-cy has no projection"
    assert "3 refused" in budgets
    assert "Spotify locked out" in text and "QUOTA_EXCEEDED, Retry-After 48600 s" in text
    assert "(in 13 h" in budgets, "when the lock ends, relative to now"
    accounts = {a["account_id"]: a for a in api.json()["spotify_budgets"]}
    assert accounts["dev-ana"]["calls_24h"] == 812 and not accounts["dev-ana"]["locked"]
    assert accounts["dev-cy"]["locked"] and accounts["dev-cy"]["refused_24h"] == 3


def test_admin_lists_open_gaps_with_their_cause(seeded: Seeded) -> None:
    with browser(seeded.site, "cy") as client:
        page = client.get("/admin")
    gaps = page.text.split('id="gaps"')[1].split("</section>")[0]
    assert html.escape(SCRIPT_NAME) in gaps and SCRIPT_NAME not in gaps, "names are escaped"
    span = time_span(seeded.gap_start, seeded.gap_end, ADMIN_ZONE)
    assert html.escape(span) in gaps and "(2 h 30 min)" in gaps
    assert GapCause.QUOTA_LOCKOUT.description in html.unescape(gaps)
    assert '<span class="tile-value" id="open-gaps">1</span>' in page.text


def test_admin_says_what_is_missing_before_anything_ran(site: World) -> None:
    """No stream batch, no poller, no budget yet: each section says so instead of a blank."""
    with browser(site, "cy") as client:
        text = html.unescape(client.get("/admin").text)
    assert "The stream has not stored a batch yet" in text
    assert "No poller is running" in text
    assert "No poller has reported its calls yet" in text
    assert "None: every user's history is complete" in text
