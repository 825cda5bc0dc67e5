"""The batch jobs, by name: the one registry the CLI, the DAGs, the demo and the benchmarks call.

Each job takes the settings and keyword parameters, checks that MongoDB answers before it
spends 10 to 20 s starting Spark (so a task against a stopped server fails in seconds, with a
message naming the server), and runs. The CLI calls the functions and prints their typed
results; the DAGs and the demo call them by name through :func:`run_job`, which returns a
summary of plain values (an Airflow task's XCom, a demo log line). No two callers build the
same job differently.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from auxcord.errors import AuxcordError
from auxcord.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from analytics.aggregate import AggregateResult
    from analytics.recommend.job import RecommendationRun

Summary = dict[str, object]
Source = Literal["mongodb", "gcs"]


def require_mongodb(settings: Settings, timeout_ms: int = 3_000) -> None:
    """Raise one clear error unless MongoDB answers a ping within ``timeout_ms``."""
    from pymongo.errors import PyMongoError

    from auxcord.clients import mongo_client, service_error

    try:
        with mongo_client(settings, serverSelectionTimeoutMS=timeout_ms) as client:
            client.admin.command("ping")
    except PyMongoError as exc:
        translated = service_error(exc, settings)  # away or refusing us: what to check
        if translated is not None:
            raise translated from exc
        # Host and port only: the URI may carry a password.
        where = urlsplit(settings.mongodb_uri).netloc.rpartition("@")[2]
        raise AuxcordError(f"MongoDB at {where} does not answer: {exc}") from exc


def aggregate_range(
    settings: Settings,
    *,
    first: date,
    last: date,
    group: str | None = None,
    user: str | None = None,
    source: Source = "mongodb",
    spark: SparkSession | None = None,
    on_step: Callable[[str], None] = lambda _: None,
) -> AggregateResult:
    """User and group days for local days ``[first, last]`` (everyone's, one group's or one
    user's with their groups), then the rollups holding them (``auxcord aggregate``,
    ``auxcord backfill``, the ``auxcord_daily`` DAG)."""
    from analytics.aggregate import aggregate_days
    from auxcord.clients import mongo_database
    from auxcord.joblock import exclusive

    require_mongodb(settings)
    # One aggregation at a time per database, whoever started it: group days are rebuilt from
    # the members' days read at the start, so two runs side by side would drop each other's.
    with exclusive(mongo_database(settings), "aggregate"):
        return aggregate_days(
            settings,
            first,
            last,
            group=group,
            user=user,
            source=source,
            spark=spark,
            on_step=on_step,
        )


def reaggregate_after_import(
    settings: Settings,
    *,
    user: str,
    first: date,
    last: date,
    spark: SparkSession | None = None,
    on_step: Callable[[str], None] = lambda _: None,
) -> AggregateResult:
    """The days a history import of ``user`` changed: their days, and their groups' days
    rebuilt from the other members' stored ones (``auxcord import``, the upload page)."""
    return aggregate_range(
        settings, first=first, last=last, user=user, spark=spark, on_step=on_step
    )


def recommend(
    settings: Settings,
    *,
    n: int = 20,
    seed: int = 42,
    spark: SparkSession | None = None,
) -> RecommendationRun:
    """Train, evaluate and store every group member's recommendations (``auxcord recommend``,
    the ``auxcord_recommendations`` DAG)."""
    from analytics.recommend.runner import run_recommendations

    require_mongodb(settings)
    return run_recommendations(settings, n=n, seed=seed, spark=spark)


def _aggregate_summary(job: Callable[..., AggregateResult]) -> Callable[..., Summary]:
    def summary(settings: Settings, **params: Any) -> Summary:
        return _summary_of(job(settings, **params))

    return summary


def _summary_of(result: AggregateResult) -> Summary:
    return {
        "first": result.first.isoformat(),
        "last": result.last.isoformat(),
        "user_days": result.user_days,
        "group_days": result.group_days,
    }


def _recommend_summary(settings: Settings, **params: Any) -> Summary:
    return recommend(settings, **params).summary()


JOBS: dict[str, Callable[..., Summary]] = {
    "aggregate_range": _aggregate_summary(aggregate_range),
    "reaggregate_after_import": _aggregate_summary(reaggregate_after_import),
    "recommend": _recommend_summary,
}
"""Every batch job by name, returning its summary."""


def run_job(name: str, settings: Settings, **params: Any) -> Summary:
    """Run the job called ``name`` with ``params``; an unknown name is one clear error."""
    try:
        job = JOBS[name]
    except KeyError:
        raise AuxcordError(f"no batch job {name!r}; the jobs are {', '.join(JOBS)}") from None
    return job(settings, **params)
