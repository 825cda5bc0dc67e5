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

Small data never fails a run. A new group is every user's first day: with no music plays, one
listener, one track, or a history too short for the validation window to have anything to
train on, ALS cannot be trained (Spark raises "No ratings available") or chosen honestly. The
run then gives every member the in-group popularity baseline, and says why: the
:class:`FallbackReason` is stored on the run and on each member's list, so the dashboard can say
"popular in your group, until there is more history". The preconditions are checked before
Spark is asked, rather than catching Spark's exception: a real failure still fails the run.

The functions take DataFrames and return plain data; :func:`write_run` is the only writer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
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
from auxcord.indexes import ensure_indexes
from auxcord.names import Collection
from auxcord.periods import doc_id

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
MIN_LISTENERS = 2
"""ALS learns from what listeners share: one listener has no friend to learn from."""
MIN_TRACKS = 2
"""One track leaves nothing to rank."""


class FallbackReason(StrEnum):
    """Why a run, or one member, got the in-group popularity baseline instead of ALS."""

    NO_GROUPS = "no_groups"
    NO_LISTENS = "no_listens"
    ONE_LISTENER = "one_listener"
    ONE_TRACK = "one_track"
    SHORT_HISTORY = "short_history"
    FEW_PLAYS = "few_plays"
    """This member alone has too few plays (cold start); the others got ALS."""

    @property
    def message(self) -> str:
        return _FALLBACK_MESSAGES[self]


_FALLBACK_MESSAGES = {
    FallbackReason.NO_GROUPS: "no groups yet: create a group on the dashboard",
    FallbackReason.NO_LISTENS: "no music plays stored yet",
    FallbackReason.ONE_LISTENER: "only one member has listened so far",
    FallbackReason.ONE_TRACK: "only one track has been played so far",
    FallbackReason.SHORT_HISTORY: (
        f"less than {2 * HOLDOUT_DAYS} days of history: too little to choose and test a model"
    ),
    FallbackReason.FEW_PLAYS: "too few plays of this member's own yet",
}


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
    """A finished run: its evaluation and one document per group member.

    ``evaluation`` is None and ``fallback_reason`` says why when every member got the
    popularity baseline (see the module docstring).
    """

    run_id: str
    generated_at: datetime
    evaluation: Evaluation | None
    documents: list[dict[str, Any]] = field(default_factory=list)
    fallback_reason: FallbackReason | None = None

    def summary(self) -> dict[str, object]:
        """The run in a few plain values: what the CLI, the DAG and the demo report."""
        return {
            "run_id": self.run_id,
            "users": len(self.documents),
            "model": "als" if self.fallback_reason is None else "popularity",
            "fallback_reason": None if self.fallback_reason is None else self.fallback_reason.value,
            "als_hit_rate": None if self.evaluation is None else self.evaluation.als.hit_rate,
        }


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


def too_small(counts: DataFrame) -> FallbackReason | None:
    """Why ALS cannot be trained on ``counts`` (``play_counts``), or None if it can."""
    from pyspark.sql import functions as F

    sizes = counts.agg(
        F.countDistinct("user_id").alias("users"), F.countDistinct("track_id").alias("tracks")
    ).first()
    if sizes is None or sizes.users == 0:
        return FallbackReason.NO_LISTENS
    if sizes.users < MIN_LISTENERS:
        return FallbackReason.ONE_LISTENER
    if sizes.tracks < MIN_TRACKS:
        return FallbackReason.ONE_TRACK
    return None


def evaluate(
    listens: DataFrame, memberships: DataFrame, *, grid: Sequence[AlsParams], seed: int
) -> Evaluation | None:
    """Choose parameters on the validation window, then score ALS and the baseline on the test.

    None when what precedes the validation window is too small to train on (the test window's
    training data holds it, so that is the only check needed): nothing can be chosen honestly.
    """
    friends = friendships(memberships).cache()
    train, test = split_last_days(listens, HOLDOUT_DAYS)
    fit_part, validation = split_last_days(train, HOLDOUT_DAYS)
    if too_small(play_counts(fit_part)) is not None:
        return None

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

    friends = friendships(memberships).cache()
    counts = play_counts(listens).cache()
    candidates = group_candidates(counts, friends).cache()
    by_popularity = popularity_recommendations(candidates, n)

    reason = too_small(counts)
    evaluation = None
    if reason is None:
        evaluation = evaluate(listens, memberships, grid=grid, seed=seed)
        if evaluation is None:
            reason = FallbackReason.SHORT_HISTORY
    if evaluation is None:
        chosen = by_popularity.withColumn("fallback_reason", F.lit(str(reason)))
    else:
        fitted = fit_als(counts, evaluation.chosen, seed)
        by_als = als_recommendations(fitted, candidates, n)
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
            .withColumn("fallback_reason", F.lit(None).cast("string"))
            .unionByName(
                by_popularity.join(cold_users, "user_id").withColumn(
                    "fallback_reason", F.lit(str(FallbackReason.FEW_PLAYS))
                )
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
    members = [row.user_id for row in memberships.select("user_id").distinct().collect()]
    generated_at = now or datetime.now(UTC)
    run_id = run_id_of(generated_at)
    return RecommendationRun(
        run_id=run_id,
        generated_at=generated_at,
        evaluation=evaluation,
        documents=_documents(rows, members, reason, run_id, generated_at),
        fallback_reason=reason,
    )


def run_id_of(generated_at: datetime) -> str:
    """A run is named by its UTC day, so a same-day re-run replaces it."""
    return generated_at.strftime("%Y-%m-%d")


def _documents(
    rows: list[Any],
    members: list[str],
    reason: FallbackReason | None,
    run_id: str,
    generated_at: datetime,
) -> list[dict[str, Any]]:
    """One document per member, an empty list included: the page can then say why."""
    per_user: dict[str, list[Any]] = {member: [] for member in members}
    for row in rows:
        per_user[row.user_id].append(row)
    documents = []
    for user_id, items in sorted(per_user.items()):
        items.sort(key=lambda row: row["rank"])
        why = items[0].fallback_reason if items else reason
        documents.append(
            {
                "_id": doc_id(run_id, user_id),
                "run_id": run_id,
                "user_id": user_id,
                "generated_at": generated_at,
                "model": "als" if why is None else "popularity",
                "cold_start": why is not None,
                "fallback_reason": None if why is None else str(why),
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
    ensure_indexes(database, Collection.RECOMMENDATIONS)
    recommendations = database[Collection.RECOMMENDATIONS]
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
            "model": "als" if run.fallback_reason is None else "popularity",
            "fallback_reason": None if run.fallback_reason is None else str(run.fallback_reason),
            "fallback": None if run.fallback_reason is None else run.fallback_reason.message,
            "evaluation": None if run.evaluation is None else run.evaluation.to_document(),
        },
        upsert=True,
    )
