"""``auxcord aggregate``, ``auxcord backfill`` and ``auxcord sql``."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from auxcord.errors import AuxcordError
from auxcord.settings import get_settings

console = Console()


def parse_day(value: str, option: str) -> date:
    """A ``YYYY-MM-DD`` argument, or a clear error naming the option."""
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise AuxcordError(f"{option} expects a date as YYYY-MM-DD, got {value!r}") from None


Source = Annotated[
    str,
    typer.Option(
        "--source", help="Read listens from mongodb (the serving copy) or gcs (raw Parquet)."
    ),
]


def _run(first: date, last: date, group: str | None, source: str) -> None:
    from analytics.aggregate import AggregateStep
    from analytics.jobs import aggregate_range

    with Progress(
        TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task(AggregateStep.STARTING_SPARK, total=len(AggregateStep) + 1)

        def advance(step: str) -> None:
            progress.update(task, advance=1, description=step)

        if source not in ("mongodb", "gcs"):
            raise AuxcordError(f"--source expects mongodb or gcs, got {source!r}")
        result = aggregate_range(
            get_settings(),
            first=first,
            last=last,
            group=group,
            source="gcs" if source == "gcs" else "mongodb",
            on_step=advance,
        )
        progress.update(task, completed=len(AggregateStep) + 1, description="done")
    days = (last - first).days + 1
    console.print(
        f"{days} day(s) {first} to {last}: {result.user_days:,} user days and "
        f"{result.group_days:,} group days stored"
    )


def aggregate_command(
    day: Annotated[
        str | None,
        typer.Option("--date", help="The local day to aggregate, YYYY-MM-DD (default yesterday)."),
    ] = None,
    group: Annotated[str | None, typer.Option(help="Only this group (its id).")] = None,
    source: Source = "mongodb",
) -> None:
    """Compute one day's user and group statistics (leaderboards, same songs, taste-match),
    then the week, month, year and all-time rollups holding it."""
    target = parse_day(day, "--date") if day else datetime.now(UTC).date() - timedelta(days=1)
    _run(target, target, group, source)


def backfill_command(
    first: Annotated[str, typer.Option("--from", help="First local day, YYYY-MM-DD.")],
    last: Annotated[str, typer.Option("--to", help="Last local day, YYYY-MM-DD.")],
    group: Annotated[str | None, typer.Option(help="Only this group (its id).")] = None,
    source: Source = "mongodb",
) -> None:
    """Recompute a range of days in one Spark application; same results as day by day."""
    start, end = parse_day(first, "--from"), parse_day(last, "--to")
    if end < start:
        raise AuxcordError(f"--to ({end}) is before --from ({start})")
    _run(start, end, group, source)


def sql_command(
    query: Annotated[str, typer.Argument(help="A Spark SQL query over the views listed below.")],
    limit: Annotated[int, typer.Option(min=1, help="Rows to print at most.")] = 50,
) -> None:
    """Run Spark SQL over the views listens, users, memberships, user_daily, group_daily,
    user_rollups, group_rollups and group_recaps."""
    from pyspark.logger import PySparkLogger

    from analytics.views import register_views
    from auxcord.spark import build_spark_session

    settings = get_settings()
    spark = build_spark_session(settings, "auxcord-sql")
    register_views(spark, settings)
    # PySpark logs a query it cannot analyse as a JSON record with the JVM's stack trace before
    # raising; the error below says what was wrong in one line.
    PySparkLogger.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)
    try:
        frame = spark.sql(query)
    except Exception as exc:  # Spark's analysis errors carry their own message
        first_line = str(exc).strip().splitlines()[0]
        raise AuxcordError(f"the query failed: {first_line}") from None
    rows = frame.limit(limit).collect()
    table = Table()
    for column in frame.columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[str(value) for value in row])
    console.print(table)
    console.print(f"{len(rows)} row(s) shown (at most {limit})")
