"""The demo's start: months of history through the import path, and someone listening now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np

from auxcord.clients import mongo_database
from auxcord.names import Collection
from cli.demo_history import import_demo_history
from devtools.linking import link_simulated_users
from devtools.simulator import SimulatorConfig, run_simulator_in_thread
from devtools.simulator.model import World, WorldConfig
from devtools.stack import free_port
from tests.conftest import simulator_settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from auxcord.settings import Settings

START = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)


def _playing(world: World, user: int, at: datetime) -> bool:
    timeline = world.timeline(world.users[user], int(at.timestamp() * 1000))
    now = int(at.timestamp() * 1000)
    current = int(np.searchsorted(timeline.start_ms, now, side="right")) - 1
    return current >= 0 and int(timeline.end_ms[current]) > now


def test_the_first_friend_listens_from_the_start_and_the_others_are_unchanged() -> None:
    plain = World(WorldConfig(users=3, seed=5, start=START, history_days=10))
    demo = World(WorldConfig(users=3, seed=5, start=START, history_days=10, listening_at_start=1))
    # A whole session, so the live feed changes track several times in the demo's first hour.
    for minutes in (0, 1, 10, 30, 50):
        assert _playing(demo, 0, START + timedelta(minutes=minutes))
    # Everything finished before the start is the same (a play running at the start is cut).
    before = int(START.timestamp() * 1000) - 1
    assert demo.ground_truth(before) == plain.ground_truth(before), "the history is untouched"
    later = int((START + timedelta(days=2)).timestamp() * 1000)
    others = {demo.users[1].user_id, demo.users[2].user_id}
    assert demo.ground_truth(later, others) == plain.ground_truth(later, others)


def test_the_demo_imports_each_friends_export_once(
    stream_settings: Settings, spark: SparkSession
) -> None:
    config = SimulatorConfig(users=2, days=20, seed=3, speed=0.001, listening_at_start=1)
    with run_simulator_in_thread(config) as sim:
        settings = simulator_settings(stream_settings, sim, free_port())
        friends = [user.user_id for user in link_simulated_users(settings)]

        history = import_demo_history(settings, sim, friends, spark)

        listens = mongo_database(settings)[Collection.LISTENS]
        for report in history.reports:
            assert report.accepted > 50, "more than the 50 plays a poller can see"
            assert listens.count_documents({"user_id": report.user_id}) == report.accepted
        assert history.stored == sum(report.accepted for report in history.reports)
        assert history.first_day is not None
        assert history.first_day <= datetime.now(UTC).date() - timedelta(days=19)
        assert "imported 2 friends' Spotify exports" in history.summary()

        # The demo started again on the same database: nothing is stored twice.
        again = import_demo_history(settings, sim, friends, spark)
        assert again.stored == 0
        assert all(r.published == 0 for r in again.reports)
