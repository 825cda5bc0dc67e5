"""spotipy, as auxcord configures it, against the simulator: paging, refresh, 401, 429, reauth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from auxcord.accounts import AccountStore, NotLinked, TokenSet
from auxcord.clients import mongo_database
from auxcord.spotify import (
    NeedsReauth,
    QuotaExceeded,
    RateLimited,
    SpotifyUnavailable,
    SpotifyUserClient,
    TokenCache,
)
from auxcord.tokens import TokenCipher
from devtools.linking import link_simulated_users
from tests.conftest import LinkWorld


@pytest.fixture
def linked(link_world: LinkWorld) -> LinkWorld:
    link_simulated_users(link_world.settings)
    return link_world


def _store(world: LinkWorld) -> AccountStore:
    return AccountStore(
        mongo_database(world.settings), TokenCipher(world.settings.secret_key_value())
    )


def _client(world: LinkWorld, user_id: str) -> SpotifyUserClient:
    return SpotifyUserClient(world.settings, _store(world), user_id)


def test_recently_played_pages_with_after_cursor(linked: LinkWorld) -> None:
    truth_of = {
        u: [r for r in linked.sim.ground_truth({u}) if r["listed"]] for u in linked.sim.user_ids
    }
    user = max(truth_of, key=lambda u: len(truth_of[u]))
    assert len(truth_of[user]) > 60
    client = _client(linked, user)
    first = client.recently_played(limit=50)
    played = [item["played_at"] for item in first["items"]]
    assert len(played) == 50 and played == sorted(played, reverse=True)
    truth = truth_of[user]
    middle = truth[-20]
    newer = client.recently_played(after_ms=middle["played_at_ms"], limit=50)
    assert [i["played_at"] for i in newer["items"]] == [r["played_at"] for r in truth[-19:]][::-1]
    assert int(newer["cursors"]["after"]) == truth[-1]["played_at_ms"]


def test_currently_playing_track_nothing_and_episode(linked: LinkWorld) -> None:
    kinds: set[str] = set()
    for user in linked.sim.user_ids:
        client = _client(linked, user)
        for _ in range(25):
            state = client.currently_playing()
            kinds.add("nothing" if state is None else state["currently_playing_type"])
            if state is not None and state["currently_playing_type"] == "episode":
                assert state["item"]["type"] == "episode"
            linked.sim.control("clock", {"advance_seconds": 1500})
            _store(linked).save_tokens(user, _refresh_now(linked, user))
    assert {"track", "nothing"} <= kinds


def _refresh_now(world: LinkWorld, user: str) -> dict[str, object]:
    """Fresh tokens for ``user`` (advancing the virtual clock expires access tokens)."""
    client = _client(world, user)
    token = client._refresh(_store(world).tokens(user).refresh_token)
    stored = _store(world).tokens(user)
    return {
        "access_token": token,
        "refresh_token": stored.refresh_token,
        "expires_in": 3600,
        "scope": stored.scope,
    }


def test_refresh_happens_before_expiry(linked: LinkWorld) -> None:
    user = linked.sim.user_ids[1]
    mongo_database(linked.settings)["users"].update_one(
        {"_id": user}, {"$set": {"tokens.expires_at": datetime.now(UTC) + timedelta(seconds=30)}}
    )
    before = linked.sim.accounts.refreshes
    assert _client(linked, user).me()["id"] == user
    assert linked.sim.accounts.refreshes == before + 1
    assert _store(linked).tokens(user).expires_at > datetime.now(UTC) + timedelta(minutes=5)


def test_401_refreshes_once_and_retries(linked: LinkWorld) -> None:
    user = linked.sim.user_ids[2]
    linked.sim.control("tokens/expire")
    before = linked.sim.accounts.refreshes
    assert _client(linked, user).me()["id"] == user
    assert linked.sim.accounts.refreshes == before + 1


def test_invalid_grant_marks_only_that_user_needs_reauth(linked: LinkWorld) -> None:
    revoked, other = linked.sim.user_ids[3], linked.sim.user_ids[4]
    linked.sim.control(f"users/{revoked}/revoke")
    linked.sim.control("tokens/expire")
    with pytest.raises(NeedsReauth):
        _client(linked, revoked).recently_played()
    account = _store(linked).get(revoked)
    assert account is not None and account.needs_reauth
    with pytest.raises(NotLinked):
        _client(linked, revoked).recently_played()
    assert _client(linked, other).recently_played()["items"]
    assert revoked not in {a.user_id for a in _store(linked).list_active()}


def test_429_surfaces_with_retry_after_and_no_sleep(linked: LinkWorld) -> None:
    user = linked.sim.user_ids[5]
    linked.sim.control("faults", {"storm_seconds": 60, "storm_retry_after": 7200})
    try:
        started = datetime.now(UTC)
        with pytest.raises(RateLimited) as caught:
            _client(linked, user).currently_playing()
        assert caught.value.retry_after == 7200
        assert caught.value.client_id in {"auxcord-local", "auxcord-local-2"}
        assert datetime.now(UTC) - started < timedelta(seconds=30), "no thread slept"
    finally:
        linked.sim.control("faults", method="DELETE")


def test_5xx_is_transient(linked: LinkWorld) -> None:
    linked.sim.control("faults", {"fail_next": 1, "fail_status": 503})
    with pytest.raises(SpotifyUnavailable):
        _client(linked, linked.sim.user_ids[0]).me()
    assert _client(linked, linked.sim.user_ids[0]).me()["id"] == linked.sim.user_ids[0]


def test_quota_exceeded_is_told_apart_from_the_short_429_and_locks_no_one_out(
    linked: LinkWorld,
) -> None:
    store = _store(linked)
    by_app: dict[str, list[str]] = {}
    for account in store.list_active():
        by_app.setdefault(account.client_id, []).append(account.user_id)
    locked, other = by_app["auxcord-local"][0], by_app["auxcord-local-2"][0]
    # The simulator's clock barely moves here: 14 virtual hours are 14,000 hours of real time.
    linked.sim.control("faults", {"quota_lock": {"account": "auxcord-local", "hours": 14}})
    try:
        with pytest.raises(QuotaExceeded) as caught:
            _client(linked, locked).currently_playing()
        assert caught.value.client_id == "auxcord-local"
        assert caught.value.retry_after > 3600, "Retry-After of the lockout, not a short pause"
        # A token refresh during the lockout is refused the same way (the accounts service
        # counts against the quota): a lockout, not a dead sign-in.
        linked.sim.control("tokens/expire")
        with pytest.raises(QuotaExceeded):
            _client(linked, locked).recently_played()
        locked_account = store.get(locked)
        assert locked_account is not None and not locked_account.needs_reauth
        # Another developer account is not locked.
        assert _client(linked, other).me()["id"] == other
    finally:
        linked.sim.control("faults", method="DELETE")
    linked.sim.control("faults", {"storm_seconds": 60, "storm_retry_after": 5})
    try:
        with pytest.raises(RateLimited) as short:
            _client(linked, other).currently_playing()
        assert not isinstance(short.value, QuotaExceeded)
    finally:
        linked.sim.control("faults", method="DELETE")


class CountingStore(AccountStore):
    """The accounts store, counting how often tokens are read from MongoDB."""

    reads = 0

    def tokens(self, user_id: str) -> TokenSet:
        self.reads += 1
        return super().tokens(user_id)


def test_a_token_cache_reads_mongodb_once_and_writes_refreshes_through(
    linked: LinkWorld,
) -> None:
    user = linked.sim.user_ids[1]
    store = CountingStore(
        mongo_database(linked.settings), TokenCipher(linked.settings.secret_key_value())
    )
    client = SpotifyUserClient(linked.settings, store, user, tokens=TokenCache(store))
    for _ in range(3):
        assert client.me()["id"] == user
    assert store.reads == 1
    # A refresh is written to MongoDB and used from the cache.
    mongo_database(linked.settings)["users"].update_one(
        {"_id": user}, {"$set": {"tokens.expires_at": datetime.now(UTC)}}
    )
    client = SpotifyUserClient(linked.settings, store, user, tokens=TokenCache(store))
    assert client.refresh_due()
    before = linked.sim.accounts.refreshes
    assert client.me()["id"] == user and client.me()["id"] == user
    assert linked.sim.accounts.refreshes == before + 1
    assert store.tokens(user).expires_at > datetime.now(UTC) + timedelta(minutes=5)
