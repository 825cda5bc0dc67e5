"""A small dashboard world: four friends in two groups, a month of plays aggregated by the real
daily job, someone listening now, recommendations, and hostile names from "Spotify".

Clients sign in by carrying the session cookie the app itself would set (signed with the app's
secret), so authorisation tests need no browser; the browser tests sign in through the
simulator instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx

from analytics.aggregate import aggregate_days
from api.deps import signed_in_session
from api.security import session_cookie as signed_session
from auxcord.accounts import AccountStore
from auxcord.clients import mongo_database
from auxcord.events import ListenEvent
from auxcord.names import Collection
from auxcord.settings import Settings
from auxcord.tokens import TokenCipher
from tests.analytics.test_daily import FIRST, LAST, ZONES, make_plays

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

SCRIPT_NAME = "<script>alert(1)</script>"
IMG_NAME = '"><img src=x onerror=alert(1)>'
NAMES = {"ana": "Ana", "ben": SCRIPT_NAME, "cy": "Cy", "dee": "Dee"}
GROUP_NAMES = {"g1": "Night owls", "g2": "Secret society"}
GROUPS = {"g1": ["ana", "ben", "cy"], "g2": ["cy", "dee"]}
HOSTILE_TRACK = "t0"
"""Every play of this track is renamed to an ``<img onerror>`` attack, and one artist to a
``<script>``: both must render as text."""


@dataclass(frozen=True)
class World:
    settings: Settings
    base: str
    first: date
    last: date


def seed_world(settings: Settings, spark: SparkSession) -> None:
    database = mongo_database(settings)
    accounts = AccountStore(database, TokenCipher(settings.secret_key_value()))
    for user, zone in ZONES.items():
        accounts.link(
            user_id=user,
            display_name=NAMES[user],
            country="SE",
            timezone=zone,
            client_id="auxcord-local",
            token_info={
                "access_token": "a",
                "refresh_token": "r",
                "expires_in": 3600,
                "scope": "user-read-recently-played",
            },
        )
    for group, members in GROUPS.items():
        database[Collection.GROUPS].insert_one(
            {"_id": group, "name": GROUP_NAMES[group], "members": members, "owner": members[0]}
        )
    documents = []
    for play in make_plays():
        if play["track_id"] == HOSTILE_TRACK:
            play = {**play, "track_name": IMG_NAME, "artist_name": SCRIPT_NAME}
        documents.append(ListenEvent.from_dict({**play, "source": "poll"}).to_document())
    database[Collection.LISTENS].insert_many(documents)
    database[Collection.LISTENS].create_index([("user_id", 1), ("played_at", -1)])
    aggregate_days(settings, FIRST, LAST, spark=spark)
    now = datetime.now(UTC)
    for user, track in (("ana", IMG_NAME), ("cy", "Track 3")):
        database[Collection.NOW_PLAYING].insert_one(
            {
                "_id": user,
                "user_id": user,
                "state": "started",
                "is_playing": True,
                "track_id": "t3",
                "track_name": track,
                "artist_name": SCRIPT_NAME,
                "album_name": "Album 3",
                "album_image_url": None,
                "progress_ms": 1000,
                "duration_ms": 600_000,
                "observed_at": now,
                "started_at": now,
                "expires_at": now + timedelta(minutes=15),
            }
        )
    database[Collection.RECOMMENDATIONS].insert_one(
        {
            "_id": "2026-04-01:ana",
            "run_id": "2026-04-01",
            "user_id": "ana",
            "generated_at": now,
            "cold_start": False,
            "items": [
                {
                    "rank": 1,
                    "track_id": "t9",
                    "track_name": "Track 9",
                    "artist_name": "Artist 2",
                    "album_name": "Album 4",
                    "album_image_url": None,
                    "score": 0.9,
                    "friends": [{"user_id": "ben", "plays": 4}, {"user_id": "dee", "plays": 2}],
                },
            ],
        }
    )


def session_cookie(settings: Settings, session: dict[str, Any]) -> str:
    """The cookie of a browser with ``session``; one naming a ``user_id`` is signed in the way
    the sign-in callback does it (now, at the account's current session version)."""
    if "user_id" in session and "signed_in_at" not in session:
        account = AccountStore(
            mongo_database(settings), TokenCipher(settings.secret_key_value())
        ).get(session["user_id"])
        if account is not None:
            session = {**session, **signed_in_session(account.user_id, account.session_version)}
    return signed_session(settings.secret_key_value(), session)


@contextmanager
def browser(world: World, user_id: str | None) -> Iterator[httpx.Client]:
    """An HTTP client signed in as ``user_id`` (anonymous for ``None``), with a CSRF token."""
    session: dict[str, Any] = {"csrf": "test-csrf-token"}
    if user_id:
        session["user_id"] = user_id
    cookies = {"auxcord_session": session_cookie(world.settings, session)}
    with httpx.Client(base_url=world.base, cookies=cookies, timeout=20) as client:
        yield client


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "the page has a form with a CSRF token"
    return found.group(1)


def stream_rest(lines: Iterator[str], most: int) -> list[str]:
    """A live feed's next messages (``event: feed``, ``event: end``, ``: keepalive``) until the
    server ends it; fails if it sends more than ``most`` without ending. The feed re-checks its
    session and membership before each message, so a count bounds the wait, not a clock."""
    messages: list[str] = []
    current: list[str] = []
    for line in lines:
        if line:
            current.append(line)
            continue
        if current:
            messages.append(current[0])
            current = []
            assert len(messages) <= most, f"the feed goes on: {messages}"
    return messages
