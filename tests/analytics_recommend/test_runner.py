"""The recommendations runner reads listens and groups from MongoDB and stores a run."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from analytics.recommend.job import FallbackReason
from analytics.recommend.runner import run_recommendations
from auxcord.settings import Settings
from tests.analytics_recommend.test_recommendations import GRID, planted_listens


def test_runner_recommends_from_mongodb_and_stores_the_run(
    test_settings: Settings, mongo_db: Any, spark: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows, memberships = planted_listens(seed=5)
    mongo_db["listens"].insert_many([{**row, "_id": n} for n, row in enumerate(rows)])
    groups: dict[str, list[str]] = {}
    for group, user in memberships:
        groups.setdefault(group, []).append(user)
    mongo_db["groups"].insert_many(
        [{"_id": group, "name": group, "members": members} for group, members in groups.items()]
    )
    monkeypatch.setattr("analytics.recommend.job.DEFAULT_GRID", GRID)

    run = run_recommendations(test_settings, spark=spark, n=5, now=datetime(2026, 3, 2, tzinfo=UTC))

    stored = list(mongo_db["recommendations"].find({"run_id": "2026-03-02"}))
    assert {doc["user_id"] for doc in stored} == {user for _, user in memberships}
    assert all(len(doc["items"]) == 5 for doc in stored)
    assert run.evaluation is not None
    assert run.evaluation.als.hit_rate > run.evaluation.popularity.hit_rate


def test_runner_without_groups_stores_an_empty_run_that_says_what_to_do(
    test_settings: Settings, mongo_db: Any, spark: Any
) -> None:
    # A fresh install's scheduled run must succeed, not fail until someone makes a group.
    run = run_recommendations(test_settings, spark=spark)
    assert run.documents == []
    assert run.fallback_reason is FallbackReason.NO_GROUPS
    model_run = mongo_db["model_runs"].find_one({"_id": f"recommendations:{run.run_id}"})
    assert "create a group" in model_run["fallback"]
