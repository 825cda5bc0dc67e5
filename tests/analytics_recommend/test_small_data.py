"""A new group is every user's first day: recommendations on tiny histories never raise.

Before, ALS was trained on whatever preceded the held-out weeks, and on a group with a few days
of history that is nothing: Spark raised ``No ratings available`` and the run died. Now the run
gives the in-group popularity baseline and stores why.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from analytics.recommend.job import FallbackReason, recommend, write_run
from tests.analytics_recommend.test_recommendations import GRID, SCHEMA, START, _play

NOW = datetime(2026, 3, 2, tzinfo=UTC)


def _run(spark: Any, plays: list[dict[str, Any]], members: list[str]) -> Any:
    listens = spark.createDataFrame(plays, SCHEMA)
    groups = spark.createDataFrame(
        [("g", user) for user in members], "group_id string, user_id string"
    )
    return recommend(listens, groups, n=5, seed=1, grid=GRID[:1], now=NOW)


def _few_days(users: list[str], tracks: int, days: int) -> list[dict[str, Any]]:
    """Each user plays their own slice of ``tracks`` tracks, a few times a day, for ``days``."""
    return [
        _play(user, f"t{(n + day + plays) % tracks}", START + timedelta(days=day, hours=plays))
        for n, user in enumerate(users)
        for day in range(days)
        for plays in range(4)
    ]


def test_a_new_group_with_days_of_history_gets_the_popular_tracks_and_is_told_why(
    spark: Any,
) -> None:
    # Three friends, three days: nothing precedes the validation and test weeks.
    users = ["ana", "ben", "cy"]
    run = _run(spark, _few_days(users, tracks=9, days=3), users)

    assert run.fallback_reason is FallbackReason.SHORT_HISTORY
    assert run.evaluation is None
    assert {doc["user_id"] for doc in run.documents} == set(users)
    for document in run.documents:
        assert document["model"] == "popularity"
        assert document["cold_start"] is True
        assert document["fallback_reason"] == "short_history"
        assert document["items"], "friends' tracks this user never played are still offered"
        for item in document["items"]:
            assert item["friends"], "every pick names the friends behind it"
    assert run.summary()["model"] == "popularity"


@pytest.mark.parametrize(
    ("plays", "members", "reason"),
    [
        pytest.param([], ["ana", "ben"], FallbackReason.NO_LISTENS, id="no listens"),
        pytest.param(
            [_play("ana", "episode-1", START, item_type="episode"), _play("ana", None, START)],
            ["ana", "ben"],
            FallbackReason.NO_LISTENS,
            id="only a podcast and a local file",
        ),
        pytest.param(
            _few_days(["ana"], tracks=5, days=20),
            ["ana", "ben"],
            FallbackReason.ONE_LISTENER,
            id="one listener",
        ),
        pytest.param(
            _few_days(["ana", "ben"], tracks=1, days=20),
            ["ana", "ben"],
            FallbackReason.ONE_TRACK,
            id="one track",
        ),
    ],
)
def test_too_little_to_train_on_never_raises(
    spark: Any, plays: list[dict[str, Any]], members: list[str], reason: FallbackReason
) -> None:
    run = _run(spark, plays, members)
    assert run.fallback_reason is reason
    # Every member has a list, empty or not, that says why it is what it is.
    assert {doc["user_id"] for doc in run.documents} == set(members)
    assert all(doc["fallback_reason"] == reason.value for doc in run.documents)


def test_a_fallback_run_is_stored_with_its_reason(spark: Any, mongo_db: Any) -> None:
    users = ["ana", "ben"]
    run = _run(spark, _few_days(users, tracks=6, days=2), users)
    write_run(mongo_db, run)

    model_run = mongo_db["model_runs"].find_one({"_id": f"recommendations:{run.run_id}"})
    assert model_run["model"] == "popularity"
    assert model_run["fallback_reason"] == "short_history"
    assert "history" in model_run["fallback"]
    assert model_run["evaluation"] is None
    stored = mongo_db["recommendations"].find_one({"user_id": "ana"})
    assert stored["fallback_reason"] == "short_history"
