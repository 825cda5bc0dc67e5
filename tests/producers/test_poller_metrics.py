"""The poller's own health figures, against the session's real MongoDB and Kafka."""

from __future__ import annotations

from prometheus_client import generate_latest

from auxcord.settings import Settings
from producers.poller import Poller, PollerConfig
from producers.schedule import UserPlan


def test_rounds_started_late_show_in_the_lateness_histogram(test_settings: Settings) -> None:
    speed = 10.0
    poller = Poller(test_settings, PollerConfig(speed=speed), "metrics-test")
    now = poller.clock.now()
    # Two users due 30 and 2 Spotify seconds ago (3 s and 0.2 s real at 10x), one not yet due,
    # and a new user whose first round is due at once (not late).
    for due, user_id in ((now - 30, "late"), (now - 2, "on-time"), (now + 60, "later"), (0, "new")):
        poller._queue.append((due, user_id))
        poller.engine.plans[user_id] = UserPlan()
    poller._queue.sort()
    taken = poller._take_due(now)
    assert sorted(taken) == ["late", "new", "on-time"]
    text = generate_latest(poller.metrics.registry).decode()
    bucket = "auxcord_poll_round_lateness_seconds_bucket"
    assert f'{bucket}{{le="0.25"}} 1.0' in text, text
    assert f'{bucket}{{le="2.0"}} 1.0' in text and f'{bucket}{{le="5.0"}} 2.0' in text
    assert "auxcord_poll_round_lateness_seconds_count 2.0" in text
