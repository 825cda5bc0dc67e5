"""The recommendations job: choose hyperparameters, evaluate against a baseline, recommend.

One run does three things, in this order, on the listens of every group:

1. **Validation.** Each user's last 7 days are the test window; the 7 days before them are the
   validation window. Each candidate ``AlsParams`` is trained on what precedes the validation
   window and scored by hit-rate@10 on it. The test window is never looked at here.
2. **Test.** The chosen parameters are retrained on everything before the test window, and ALS
   and the popularity-in-group baseline are both scored on it: hit-rate@10, NDCG@10 and catalog
   coverage. This evaluation is stored with the run.
3. **Recommend.** The chosen parameters are trained on the whole history, and every group member
   gets ``n`` tracks. Users with fewer than ``cold_start_min_plays`` plays get the group's
   favourites instead, marked ``cold_start``.

The functions take DataFrames and return plain data; :func:`write_run` is the only writer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from analytics.recommend.metrics import catalog_coverage, hit_rate_at_k, ndcg_at_k
from analytics.recommend.model import (
    AlsParams,
    als_recommendations,
    explanations,
    fit_als,
    friendships,
    group_candidates,
    new_tracks,
    play_counts,
    popularity_recommendations,
    split_last_days,
)
from auxcord.names import Collection

if TYPE_CHECKING:
    from pymongo.database import Database
    from pyspark.sql import DataFrame

K = 10
HOLDOUT_DAYS = 7
DEFAULT_GRID: tuple[AlsParams, ...] = (
    AlsParams(rank=16, reg_param=0.1, alpha=10.0),
    AlsParams(rank=32, reg_param=0.1, alpha=20.0),
    AlsParams(rank=32, reg_param=1.0, alpha=40.0),
)


@dataclass(frozen=True)
class Scores:
    """One model's offline scores on one window."""

    hit_rate: float
    ndcg: float
    coverage: float


@dataclass(frozen=True)
class Evaluation:
    """What a run measured: the validation grid, the choice, and the test scores."""

    validation: list[dict[str, Any]]
    chosen: AlsParams
    als: Scores
    popularity: Scores
    users_evaluated: int

    def to_document(self) -> dict[str, Any]:
        return {
            "validation": self.validation,
            "chosen": asdict(self.chosen),
            "test": {"als": asdict(self.als), "popularity": asdict(self.popularity)},
            "users_evaluated": self.users_evaluated,
            "k": K,
            "holdout_days": HOLDOUT_DAYS,
        }


@dataclass(frozen=True)
class RecommendationRun:
    """A finished run: its evaluation and one document per recommended user."""

    run_id: str
    generated_at: datetime
    evaluation: Evaluation
    documents: list[dict[str, Any]] = field(default_factory=list)


def _lists(recommended: DataFrame) -> dict[str, list[str]]:
    ranked: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for row in recommended.select("user_id", "track_id", "rank").collect():
        ranked[row.user_id].append((row["rank"], row.track_id))
    return {user: [track for _, track in sorted(items)] for user, items in ranked.items()}


def _sets(pairs: DataFrame) -> dict[str, set[str]]:
    result: dict[str, set[str]] = defaultdict(set)
    for row in pairs.select("user_id", "track_id").collect():
        result[row.user_id].add(row.track_id)
    return dict(result)


def _score(recommended: dict[str, list[str]], truth: dict[str, set[str]], catalog: int) -> Scores:
    return Scores(
        hit_rate=hit_rate_at_k(recommended, truth, K),
        ndcg=ndcg_at_k(recommended, truth, K),
        coverage=catalog_coverage(recommended, catalog, K),
    )


@dataclass(frozen=True)
class _Window:
    """Training data and what to find afterwards, for one evaluation window."""

    counts: DataFrame
    candidates: DataFrame
    truth: dict[str, set[str]]
    catalog: int


def _window(before: DataFrame, held_out: DataFrame, friends: DataFrame) -> _Window:
    counts = play_counts(before).cache()
    candidates = group_candidates(counts, friends).cache()
    # Only group members can be recommended anything, so only they are evaluated.
    members = {row.user_id for row in friends.select("user_id").distinct().collect()}
    truth = {u: t for u, t in _sets(new_tracks(before, held_out)).items() if u in members}
    catalog = candidates.select("track_id").distinct().count()
    return _Window(counts, candidates, truth, catalog)


def evaluate(
    listens: DataFrame, memberships: DataFrame, *, grid: Sequence[AlsParams], seed: int
) -> Evaluation:
    """Choose parameters on the validation window, then score ALS and the baseline on the test."""
    friends = friendships(memberships).cache()
    train, test = split_last_days(listens, HOLDOUT_DAYS)
    fit_part, validation = split_last_days(train, HOLDOUT_DAYS)

    window = _window(fit_part, validation, friends)
    tried = []
    for params in grid:
        fitted = fit_als(window.counts, params, seed)
        scores = _score(
            _lists(als_recommendations(fitted, window.candidates, K)), window.truth, window.catalog
        )
        tried.append((scores.hit_rate, scores.ndcg, params))
    best = max(tried, key=lambda item: (item[0], item[1]))[2]

    window = _window(train, test, friends)
    fitted = fit_als(window.counts, best, seed)
    als = _score(
        _lists(als_recommendations(fitted, window.candidates, K)), window.truth, window.catalog
    )
    popular = _score(
        _lists(popularity_recommendations(window.candidates, K)), window.truth, window.catalog
    )
    return Evaluation(
        validation=[
            {"params": asdict(params), "hit_rate": hit, "ndcg": ndcg} for hit, ndcg, params in tried
        ],
        chosen=best,
        als=als,
        popularity=popular,
        users_evaluated=len(window.truth),
    )


def recommend(
    listens: DataFrame,
    memberships: DataFrame,
    *,
    n: int = 20,
    seed: int = 42,
    cold_start_min_plays: int = 20,
    grid: Sequence[AlsParams] = DEFAULT_GRID,
    now: datetime | None = None,
) -> RecommendationRun:
    """Evaluate, then recommend ``n`` tracks to every group member (see the module docstring)."""
    from pyspark.sql import functions as F

    evaluation = evaluate(listens, memberships, grid=grid, seed=seed)
    friends = friendships(memberships).cache()
    counts = play_counts(listens).cache()
    candidates = group_candidates(counts, friends).cache()

    fitted = fit_als(counts, evaluation.chosen, seed)
    by_als = als_recommendations(fitted, candidates, n)
    by_popularity = popularity_recommendations(candidates, n)
    totals = counts.groupBy("user_id").agg(F.sum("plays").alias("total"))
    cold_users = (
        memberships.select("user_id")
        .distinct()
        .join(totals, "user_id", "left")
        .where(F.coalesce(F.col("total"), F.lit(0)) < cold_start_min_plays)
        .select("user_id")
    )
    chosen = (
        by_als.join(cold_users, "user_id", "left_anti")
        .withColumn("cold_start", F.lit(False))
        .unionByName(
            by_popularity.join(cold_users, "user_id").withColumn("cold_start", F.lit(True))
        )
    )
    tracks = listens.groupBy("track_id").agg(
        F.max_by("track_name", "played_at").alias("track_name"),
        F.max_by("artist_name", "played_at").alias("artist_name"),
        F.max_by("album_name", "played_at").alias("album_name"),
        F.max_by("album_image_url", "played_at").alias("album_image_url"),
    )
    rows = (
        chosen.join(explanations(chosen, counts, friends), ["user_id", "track_id"])
        .join(tracks, "track_id")
        .collect()
    )
    generated_at = now or datetime.now(UTC)
    run_id = generated_at.strftime("%Y-%m-%d")
    return RecommendationRun(
        run_id=run_id,
        generated_at=generated_at,
        evaluation=evaluation,
        documents=_documents(rows, run_id, generated_at),
    )


def _documents(rows: list[Any], run_id: str, generated_at: datetime) -> list[dict[str, Any]]:
    per_user: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        per_user[row.user_id].append(row)
    documents = []
    for user_id, items in sorted(per_user.items()):
        items.sort(key=lambda row: row["rank"])
        documents.append(
            {
                "_id": f"{run_id}:{user_id}",
                "run_id": run_id,
                "user_id": user_id,
                "generated_at": generated_at,
                "cold_start": bool(items[0].cold_start),
                "items": [
                    {
                        "rank": row["rank"],
                        "track_id": row.track_id,
                        "track_name": row.track_name,
                        "artist_name": row.artist_name,
                        "album_name": row.album_name,
                        "album_image_url": row.album_image_url,
                        "score": float(row.score),
                        "friends": [
                            {"user_id": friend.user_id, "plays": int(friend.plays)}
                            for friend in row.friends
                        ],
                    }
                    for row in items
                ],
            }
        )
    return documents


def write_run(database: Database[dict[str, Any]], run: RecommendationRun) -> None:
    """Store a run: re-running the same run id replaces its documents, never adds to them."""
    recommendations = database[Collection.RECOMMENDATIONS]
    recommendations.create_index([("user_id", 1), ("run_id", -1)])
    recommendations.delete_many({"run_id": run.run_id})
    if run.documents:
        recommendations.insert_many(run.documents, ordered=False)
    database[Collection.MODEL_RUNS].replace_one(
        {"_id": f"recommendations:{run.run_id}"},
        {
            "_id": f"recommendations:{run.run_id}",
            "kind": "recommendations",
            "run_id": run.run_id,
            "generated_at": run.generated_at,
            "users": len(run.documents),
            "evaluation": run.evaluation.to_document(),
        },
        upsert=True,
    )
