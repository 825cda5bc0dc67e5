"""The pollers against the simulator, Tansu and SecantusDB: every play once, through faults.

The poller runs as `auxcord poll` in its own process, so it can be killed with SIGKILL.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from auxcord.clients import ensure_topics, kafka_consumer, mongo_database
from auxcord.events import ListenEvent, NowPlayingEvent
from auxcord.names import Topic
from auxcord.settings import Settings, SpotifyApp
from cli.webserver import serve_in_thread
from devtools.linking import link_simulated_users
from devtools.simulator import RunningSimulator, SimulatorConfig, run_simulator_in_thread
from devtools.stack import free_port
from producers.state import LeaseStore, stale_users
from tests.conftest import simulator_settings

SPEED = 3600.0  # a virtual hour per real second: the ~30 s run covers more than a day
_prefixes = itertools.count()


@dataclass
class PollWorld:
    sim: RunningSimulator
    settings: Settings


@contextmanager
def poll_world_at(
    test_settings: Settings,
    speed: float,
    *,
    daily_quota: int | None = None,
    days_back: int = 3,
    **overrides: object,
) -> Iterator[PollWorld]:
    """Eight linked simulated users (four on each of two apps, each app its own developer
    account), their own Kafka topics, and time running at ``speed``."""
    # Virtual time starts in the past so that, running fast, it never passes real time:
    # auxcord rejects plays from the future as implausible.
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=days_back)
    config = SimulatorConfig(
        users=8,
        days=1,
        seed=33,
        speed=speed,
        rate_budget=100_000,
        start=start,
        daily_quota=daily_quota,
    )
    with run_simulator_in_thread(config) as sim:
        port = free_port()
        settings = simulator_settings(
            test_settings,
            sim,
            port,
            spotify_extra_apps=[SpotifyApp(client_id="second-app")],
            kafka_topic_prefix=f"poll{os.getpid()}x{next(_prefixes)}.",
            poller_speed=speed,
            poller_budget=100_000,
            poller_metrics_port=0,
            **overrides,
        )
        ensure_topics(settings)
        with serve_in_thread(settings, "127.0.0.1", port):
            link_simulated_users(settings)
        yield PollWorld(sim, settings)


@pytest.fixture
def poll_world(test_settings: Settings) -> Iterator[PollWorld]:
    # A restarted poller keeps its name, as under systemd or a StatefulSet.
    with poll_world_at(test_settings, SPEED, poller_id="poller-under-test") as world:
        yield world


def start_poller(settings: Settings, *args: str, **environment: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "from cli.main import main; main()", "poll", *args],
        env={**os.environ, **settings.as_environment(), **environment},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def stop(poller: subprocess.Popen[bytes]) -> None:
    if poller.poll() is None:
        poller.terminate()
        poller.wait(timeout=30)


def said(poller: subprocess.Popen[bytes]) -> str:
    """The end of what a stopped poller wrote to stderr."""
    return poller.stderr.read().decode()[-2000:] if poller.stderr else ""


def wait_for(
    done: Callable[[], bool], poller: subprocess.Popen[bytes], what: str, timeout: float = 90
) -> None:
    """Wait until ``done()``, failing with the poller's own words if it died or ``timeout``
    passed (a generous bound for a loaded machine, not a measurement)."""
    deadline = time.monotonic() + timeout
    while not done():
        if poller.poll() is not None:
            raise AssertionError(f"the poller died: {said(poller)}")
        if time.monotonic() > deadline:
            stop(poller)
            raise AssertionError(f"{what} (poller said: {said(poller)})")
        time.sleep(0.2)


def drain(settings: Settings, topic: Topic) -> list[bytes]:
    """Every message on ``topic`` (read until the high watermark of each partition)."""
    from kafka import TopicPartition

    consumer = kafka_consumer(settings)
    name = settings.topic(topic)
    partitions = [TopicPartition(name, p) for p in range(topic.partitions)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    values: list[bytes] = []
    quiet = 0
    while quiet < 3:
        batch = consumer.poll(timeout_ms=1_000)
        quiet = 0 if batch else quiet + 1
        for records in batch.values():
            values.extend(record.value for record in records)
    consumer.close()
    return values


def expected_ids(rows: list[dict[str, Any]]) -> set[str]:
    return {
        ListenEvent.from_dict(
            {
                "user_id": r["user_id"],
                "track_id": r["track_id"],
                "track_name": r["track_name"],
                "artist_name": r["artist_name"],
                "duration_ms": r["duration_ms"],
                "played_at": r["played_at"].replace("Z", "+00:00"),
                "source": "poll",
                "is_local": r["is_local"],
            }
        ).event_id
        for r in rows
        if r["listed"]
    }


def read_the_rest(world: PollWorld) -> None:
    """Freeze time and read what is left with one ``auxcord poll --once``."""
    world.sim.control("clock", {"speed": 0})
    once = subprocess.run(
        [sys.executable, "-c", "from cli.main import main; main()", "poll", "--once"],
        env={**os.environ, **world.settings.as_environment()},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert once.returncode == 0, once.stderr.decode()[-2000:]


def finish_and_compare(world: PollWorld, start_ms: int, at_least: int) -> None:
    """Read what is left, and compare Kafka with the ground truth."""
    read_the_rest(world)
    truth = world.sim.ground_truth()
    published = [ListenEvent.from_json(v) for v in drain(world.settings, Topic.LISTENS)]
    got = {event.event_id for event in published}
    after_start = expected_ids([r for r in truth if r["played_at_ms"] > start_ms])
    assert len(after_start) >= at_least, "the run produced enough plays to mean something"
    missing = after_start - got
    assert not missing, (
        f"{len(missing)} of {len(after_start)} plays never reached Kafka ({len(got)} events there, "
        f"newest published {max(e.played_at for e in published)}, "
        f"newest play {max(r['played_at'] for r in truth if r['listed'])})"
    )
    assert got <= expected_ids(truth), "Kafka holds plays that never happened"


RESTART_SPEED = 1800.0
"""A restart after SIGKILL takes a second or two, and at 3,600x a user finishes 50 plays (all
that recently-played holds) in under 3 s: that tested the machine's speed, not the poller.
At 1,800x the window holds about 6 s, still far shorter than a real restart allows (hours)."""


@pytest.fixture
def restart_world(test_settings: Settings) -> Iterator[PollWorld]:
    with poll_world_at(test_settings, RESTART_SPEED, poller_id="poller-under-test") as world:
        yield world


def test_no_loss_no_duplicates_through_faults_and_sigkill(restart_world: PollWorld) -> None:
    poll_world = restart_world
    sim = poll_world.sim
    database = mongo_database(poll_world.settings)
    start_ms, started = sim.clock.now_ms(), datetime.now(UTC)

    def refused(reason: str) -> int:
        return int(sim.control("stats", method="GET")["refused"].get(reason, 0))

    def everyone_polled_since(moment: datetime) -> bool:
        since = {"last_success_at": {"$gt": moment}}
        return database["poll_state"].count_documents(since) == len(sim.user_ids)

    def enough_plays() -> bool:
        truth = [r for r in sim.ground_truth() if r["played_at_ms"] > start_ms]
        return len(expected_ids(truth)) >= 60

    poller = start_poller(poll_world.settings)
    try:
        wait_for(lambda: everyone_polled_since(started), poller, "not every user was read")
        sim.control("faults", {"storm_seconds": 3, "storm_retry_after": 1})
        wait_for(lambda: refused("storm") > 0, poller, "the poller met no rate-limit storm")
        sim.control("faults", {"fail_next": 30, "fail_status": 503})
        sim.control("tokens/expire")
        expired = datetime.now(UTC)
        # Errors met, and everyone read again since, on refreshed tokens.
        wait_for(
            lambda: refused("injected_error") > 0 and everyone_polled_since(expired),
            poller,
            "the poller did not get past the errors and the expired tokens",
        )
        poller.send_signal(signal.SIGKILL)
        poller.wait(timeout=10)
        killed_ms = sim.clock.now_ms()
        # Plays keep finishing while no poller runs: a quarter of a virtual hour.
        while sim.clock.now_ms() - killed_ms < 15 * 60_000:
            time.sleep(0.05)
        poller = start_poller(poll_world.settings)
        restarted = datetime.now(UTC)
        wait_for(
            lambda: everyone_polled_since(restarted) and enough_plays(),
            poller,
            "the restarted poller did not read everyone",
        )
    finally:
        poller.terminate()
        poller.wait(timeout=30)
    finish_and_compare(poll_world, start_ms, at_least=60)
    # The live feed got state changes too, and they validate.
    states = [NowPlayingEvent.from_json(v) for v in drain(poll_world.settings, Topic.NOW_PLAYING)]
    assert {"started", "track_changed"} <= {s.state for s in states}


def test_revoked_user_needs_reauth_while_others_flow(poll_world: PollWorld) -> None:
    sim = poll_world.sim
    revoked = sim.user_ids[0]
    sim.control(f"users/{revoked}/revoke")
    sim.control("tokens/expire")
    started = datetime.now(UTC)
    database = mongo_database(poll_world.settings)

    def polled() -> set[str]:
        since = {"last_success_at": {"$gt": started}}
        return {doc["_id"] for doc in database["poll_state"].find(since)}

    def told_to_relink() -> bool:
        user = database["users"].find_one({"_id": revoked})
        return user is not None and user.get("needs_reauth") is True

    poller = start_poller(poll_world.settings)
    try:
        wait_for(
            lambda: told_to_relink() and polled() == set(sim.user_ids[1:]),
            poller,
            "the revoked user was not told to re-link, or the others were not polled",
        )
    finally:
        stop(poller)
    assert told_to_relink()
    # 2026's /me has no country: sign-in stores none, and polling does not need it.
    assert {user.get("country") for user in database["users"].find()} == {None}
    assert polled() == set(sim.user_ids[1:]), "everyone else kept being polled"
    stale = {row["user_id"] for row in stale_users(database, datetime.now(UTC))}
    assert revoked not in stale, "a user who must re-link is not an outage"


def test_malformed_responses_are_counted_and_skipped(poll_world: PollWorld) -> None:
    sim = poll_world.sim
    sim.control("faults", {"malformed_next": 12})
    start_ms = sim.clock.now_ms()
    database = mongo_database(poll_world.settings)
    poller = start_poller(poll_world.settings)
    try:
        wait_for(
            lambda: sum(doc.get("rejected", 0) for doc in database["poll_state"].find()) >= 1,
            poller,
            "no malformed answer was counted",
        )
        # Polling goes on past the bad answers: long enough for plays to compare.
        wait_for(
            lambda: (
                len(expected_ids([r for r in sim.ground_truth() if r["played_at_ms"] > start_ms]))
                >= 20
            ),
            poller,
            "the simulated friends made too few plays",
        )
    finally:
        stop(poller)
    finish_and_compare(poll_world, start_ms, at_least=20)


def test_bad_shard_argument_is_one_clear_line(poll_world: PollWorld) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from cli.main import main; main()", "poll", "--shard", "3/2"],
        env={**os.environ, **poll_world.settings.as_environment()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "--shard expects i/N" in result.stderr and "Traceback" not in result.stderr


def test_two_pollers_share_users_and_one_takes_over_within_a_minute(
    test_settings: Settings,
) -> None:
    # An hour a minute: the lapse of a dead poller's leases (30 s) is half an hour of music,
    # which Spotify's 50-play window still holds.
    with poll_world_at(test_settings, 60.0) as world:
        start_ms = world.sim.clock.now_ms()
        leases = LeaseStore(mongo_database(world.settings), owner="observer")
        first = start_poller(world.settings, AUXCORD_POLLER_ID="first")
        second = start_poller(world.settings, AUXCORD_POLLER_ID="second")
        try:
            # The first poller may take everyone before the second says it is alive; its next
            # refresh gives the second a fair share.
            deadline = time.monotonic() + 30
            while True:
                owners = list(leases.owners().values())
                if len(owners) == 8 and all(3 <= owners.count(p) <= 5 for p in ("first", "second")):
                    break
                assert time.monotonic() < deadline, f"no fair split: {leases.owners()}"
                time.sleep(0.5)
            assert set(leases.owners()) == set(world.sim.user_ids)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
            killed_at = time.monotonic()
            while set(leases.owners().values()) != {"second"} or len(leases.owners()) < 8:
                assert time.monotonic() - killed_at < 60, f"no takeover: {leases.owners()}"
                # Keep everyone listening, so the takeover has plays to lose (and must not).
                for user in world.sim.user_ids:
                    world.sim.control(f"users/{user}/play")
                time.sleep(4)
            took = time.monotonic() - killed_at
            time.sleep(3)
        finally:
            for poller in (first, second):
                if poller.poll() is None:
                    poller.terminate()
                    poller.wait(timeout=30)
        print(f"takeover after {took:.1f} s")
        finish_and_compare(world, start_ms, at_least=30)


QUOTA_SPEED = 1800.0
"""Half a virtual hour per real second: hours of polling in seconds, while a round that starts
a little late (a loaded machine) is still far inside the 25 minutes the window allows."""


def quota_stats(world: PollWorld) -> dict[str, Any]:
    stats: dict[str, Any] = world.sim.control("stats", method="GET")
    return stats


def test_pollers_stay_inside_a_small_daily_quota_and_miss_no_play(
    test_settings: Settings,
) -> None:
    budget, quota = 300, 350
    with poll_world_at(
        test_settings, QUOTA_SPEED, daily_quota=quota, spotify_daily_budget=budget
    ) as world:
        start_ms = world.sim.clock.now_ms()
        poller = start_poller(world.settings)
        try:
            # Twelve virtual hours: half a day of four friends on each developer account.
            wait_for(
                lambda: world.sim.clock.now_ms() - start_ms > 12 * 3_600_000,
                poller,
                "the virtual clock stalled",
            )
        finally:
            stop(poller)
        stats = quota_stats(world)
        accounts = stats["developer_accounts"]
        assert set(accounts) == {"auxcord-local", "second-app"}
        for account, figures in accounts.items():
            assert 0 < figures["calls_24h"] <= budget, (account, figures)
        assert not stats.get("refused", {}).get("quota_exceeded")
        # The pollers' own count agrees with Spotify's (both count token refreshes).
        database = mongo_database(world.settings)
        for document in database["spotify_budgets"].find():
            assert document["calls_24h"] <= budget
            assert document["calls_24h"] >= 0.9 * accounts[document["_id"]]["calls_24h"]
        finish_and_compare(world, start_ms, at_least=30)


def test_quota_exceeded_stops_that_account_until_retry_after_and_records_its_gaps(
    test_settings: Settings,
) -> None:
    with poll_world_at(test_settings, QUOTA_SPEED) as world:
        sim = world.sim
        start_ms = sim.clock.now_ms()
        database = mongo_database(world.settings)
        locked_users = {
            doc["_id"] for doc in database["users"].find({"client_id": "auxcord-local"})
        }
        poller = start_poller(world.settings)
        try:
            wait_for(
                lambda: database["poll_state"].count_documents({"cursor_ms": {"$gt": 0}}) == 8,
                poller,
                "not every user was read",
            )
            sim.control("faults", {"quota_lock": {"account": "auxcord-local", "hours": 14}})
            locked_at = sim.clock.now_ms()
            # A binge while locked out: 80 forced tracks about 50 virtual seconds apart, far more
            # than the 50 plays recently-played holds.
            binger = sorted(locked_users)[0]
            for _ in range(80):
                sim.control(f"users/{binger}/play")
                time.sleep(50 / QUOTA_SPEED)
            wait_for(
                lambda: bool(database["spotify_budgets"].find_one({"locked_until": {"$ne": None}})),
                poller,
                "the lockout was never written to spotify_budgets",
            )
            document = database["spotify_budgets"].find_one({"_id": "auxcord-local"})
            assert document is not None and document["lock_reason"] == "QUOTA_EXCEEDED"
            refused = quota_stats(world)["refused"]["quota_exceeded"]
            other_before = quota_stats(world)["developer_accounts"]["second-app"]["calls_24h"]
            # Most of the lockout: the locked account calls no more, the other goes on.
            wait_for(
                lambda: sim.clock.now_ms() - locked_at > 12 * 3_600_000,
                poller,
                "the virtual clock stalled",
                timeout=180,
            )
            during = quota_stats(world)
            assert during["refused"]["quota_exceeded"] == refused, "no call before Retry-After"
            other_after = during["developer_accounts"]["second-app"]["calls_24h"]
            assert other_after > other_before + 20, "the other developer account kept polling"
            # After the lock: the locked users are read again, and the binge's losses found.
            wait_for(
                lambda: (
                    database["gaps"].count_documents({}) > 0
                    and sim.clock.now_ms() - locked_at > 16 * 3_600_000
                ),
                poller,
                "no gap was recorded after the lockout",
                timeout=180,
            )
        finally:
            stop(poller)
        gaps = list(database["gaps"].find())
        assert {gap["cause"] for gap in gaps} == {"quota_lockout"}
        # The binger overflowed for sure; other locked friends may have too, in 14 hours.
        gap_users = {gap["user_id"] for gap in gaps}
        assert binger in gap_users and gap_users <= locked_users, gap_users
        # Every play lost is inside a gap of its user, and every gap holds a lost play.
        read_the_rest(world)
        truth = [r for r in sim.ground_truth() if r["listed"] and r["played_at_ms"] > start_ms]
        got = {ListenEvent.from_json(v).event_id for v in drain(world.settings, Topic.LISTENS)}
        lost = [r for r in truth if expected_ids([r]) - got]
        spans = [
            (g["user_id"], g["start"].timestamp() * 1000, g["end"].timestamp() * 1000) for g in gaps
        ]
        assert lost, "the lockout lost plays (else this test shows nothing)"
        for row in lost:
            assert row["user_id"] in locked_users
            assert any(
                user == row["user_id"] and begin < row["played_at_ms"] < end
                for user, begin, end in spans
            ), row
        for user, begin, end in spans:
            assert any(
                row["user_id"] == user and begin < row["played_at_ms"] < end for row in lost
            ), "a gap where nothing was lost"
