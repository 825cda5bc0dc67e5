"""Recommendations on groups with planted taste structure: better than popularity, never leaky.

The generator plants sub-tastes inside each group: members of one taste cluster share a pool of
tracks that the rest of the group rarely plays. Popularity-in-group cannot see the clusters, ALS
can, so on held-out discoveries ALS should win. The test asserts that comparison, not a number.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from analytics.recommend.job import recommend, write_run
from analytics.recommend.model import AlsParams

START = datetime(2026, 1, 1, tzinfo=UTC)
GRID = (
    AlsParams(rank=8, reg_param=0.1, alpha=10.0, max_iter=8),
    AlsParams(rank=16, reg_param=0.5, alpha=20.0, max_iter=8),
)


def planted_listens(seed: int) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Two groups of 9 users, 3 taste clusters each, 60 days of plays; one cold-start user."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    memberships: list[tuple[str, str]] = []
    for group in ("g1", "g2"):
        shared = [f"{group}-hit-{i}" for i in range(15)]
        for cluster in range(3):
            pool = [f"{group}-c{cluster}-t{i}" for i in range(60)]
            for member in range(3):
                user = f"{group}-u{cluster}{member}"
                memberships.append((group, user))
                for day in range(60):
                    for _ in range(rng.randint(3, 9)):
                        roll = rng.random()
                        if roll < 0.7:
                            # Users drift through their cluster's pool over time, so the last
                            # week brings tracks they never played but cluster-mates did.
                            centre = int(day / 60 * len(pool))
                            track = pool[min(len(pool) - 1, max(0, centre + rng.randint(-12, 6)))]
                        elif roll < 0.95:
                            track = rng.choice(shared)
                        else:
                            track = f"noise-{rng.randint(0, 400)}"
                        rows.append(
                            _play(
                                user,
                                track,
                                START
                                + timedelta(
                                    days=day,
                                    minutes=rng.randint(0, 1439),
                                    seconds=rng.randint(0, 59),
                                ),
                            )
                        )
    memberships.append(("g1", "g1-newcomer"))
    rows.append(_play("g1-newcomer", "g1-hit-0", START + timedelta(days=59)))
    # A podcast episode and a local file: never recommendable.
    rows.append(_play("g1-u00", "episode-1", START + timedelta(days=3), item_type="episode"))
    rows.append(_play("g1-u00", None, START + timedelta(days=4)))
    return rows, memberships


def _play(user: str, track: str | None, at: datetime, item_type: str = "track") -> dict[str, Any]:
    return {
        "user_id": user,
        "track_id": track,
        "played_at": at,
        "item_type": item_type,
        "track_name": f"name of {track}",
        "artist_name": "artist",
        "album_name": "album",
        "album_image_url": None,
    }


SCHEMA = (
    "user_id string, track_id string, played_at timestamp, item_type string, "
    "track_name string, artist_name string, album_name string, album_image_url string"
)


@pytest.fixture(scope="module")
def planted(spark: Any) -> tuple[Any, Any, list[dict[str, Any]], list[tuple[str, str]]]:
    rows, memberships = planted_listens(seed=11)
    listens = spark.createDataFrame(rows, SCHEMA)
    groups = spark.createDataFrame(memberships, "group_id string, user_id string")
    return listens, groups, rows, memberships


@pytest.fixture(scope="module")
def run(planted: Any) -> Any:
    listens, groups, _, _ = planted
    return recommend(listens, groups, n=10, seed=7, grid=GRID, now=datetime(2026, 3, 2, tzinfo=UTC))


def test_als_beats_popularity_on_held_out_discoveries(run: Any) -> None:
    evaluation = run.evaluation
    assert evaluation.users_evaluated >= 10
    assert evaluation.als.hit_rate > evaluation.popularity.hit_rate
    assert evaluation.als.ndcg > evaluation.popularity.ndcg
    assert evaluation.chosen in GRID
    assert len(evaluation.validation) == len(GRID)


def test_never_recommends_a_played_track_or_a_podcast(run: Any, planted: Any) -> None:
    _, _, rows, _ = planted
    played = {(row["user_id"], row["track_id"]) for row in rows}
    for document in run.documents:
        for item in document["items"]:
            assert (document["user_id"], item["track_id"]) not in played
            assert item["track_id"] not in {None, "episode-1"}


def test_explanations_name_only_friends_and_their_real_counts(run: Any, planted: Any) -> None:
    _, _, rows, memberships = planted
    groups_of: dict[str, set[str]] = {}
    for group, user in memberships:
        groups_of.setdefault(user, set()).add(group)
    plays: dict[tuple[str, str], int] = {}
    for row in rows:
        plays[(row["user_id"], row["track_id"])] = (
            plays.get((row["user_id"], row["track_id"]), 0) + 1
        )
    for document in run.documents:
        user = document["user_id"]
        for item in document["items"]:
            assert item["friends"], "every recommendation is explained"
            for friend in item["friends"]:
                assert friend["user_id"] != user
                assert groups_of[friend["user_id"]] & groups_of[user], "friend outside the group"
                assert friend["plays"] == plays[(friend["user_id"], item["track_id"])]
            # Nothing from the other group is ever suggested.
            other = "g2" if "g1" in groups_of[user] else "g1"
            assert not item["track_id"].startswith(other + "-")


def test_cold_start_user_gets_the_group_favourites_marked(run: Any) -> None:
    newcomer = next(d for d in run.documents if d["user_id"] == "g1-newcomer")
    assert newcomer["cold_start"] is True
    assert newcomer["items"][0]["track_id"].startswith("g1-hit-")
    assert not any(d["cold_start"] for d in run.documents if d["user_id"] != "g1-newcomer")


def test_same_seed_gives_the_same_recommendations(run: Any, planted: Any) -> None:
    listens, groups, _, _ = planted
    again = recommend(
        listens, groups, n=10, seed=7, grid=GRID, now=datetime(2026, 3, 2, tzinfo=UTC)
    )
    assert again.documents == run.documents
    assert again.evaluation == run.evaluation


def test_writing_a_run_twice_replaces_it(run: Any, mongo_db: Any) -> None:
    write_run(mongo_db, run)
    write_run(mongo_db, run)
    stored = list(mongo_db["recommendations"].find({"run_id": run.run_id}))
    assert len(stored) == len(run.documents)
    model_run = mongo_db["model_runs"].find_one({"_id": f"recommendations:{run.run_id}"})
    assert model_run is not None
    assert model_run["evaluation"]["test"]["als"]["hit_rate"] == run.evaluation.als.hit_rate
    plan = (
        mongo_db["recommendations"]
        .find({"user_id": run.documents[0]["user_id"], "run_id": run.run_id})
        .explain()
    )
    assert "IXSCAN" in str(plan)
