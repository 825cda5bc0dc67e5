"""``auxcord import``: a Spotify data export into the pipeline, stored and aggregated.

Publishing is :func:`producers.history.import_sources`; this command adds a progress bar, the
report, and then, unless ``--no-aggregate``, :func:`producers.history.pipeline.store_and_aggregate`.
The dashboard's upload queue (``api/imports.py``) runs this command in a child process with
``--progress-json``, so that parsing an untrusted file, inflating its zip and publishing to Kafka
never happen in the web server: the child then writes one JSON object per line on stdout
(:class:`JsonLines`) and everything else on stderr. Spark's JVM starts in the background
while the export is read and published (10 to 20 s that would otherwise come after), and the
stream's available-now run and the aggregation share it. Each step's time is printed.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from auxcord.errors import AuxcordError
from auxcord.settings import get_settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from auxcord.settings import Settings
    from producers.history.report import ImportReport

console = Console()


def import_command(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="The export: my_spotify_data.zip, Streaming_History_Audio_*.json or "
            "StreamingHistory*.json files, or a directory holding them.",
            show_default=False,
        ),
    ],
    user: Annotated[
        str, typer.Option("--user", help="The linked Spotify user id the history belongs to.")
    ],
    no_aggregate: Annotated[
        bool,
        typer.Option(
            "--no-aggregate",
            help="Only publish to Kafka; leave storing to `auxcord stream` and the days to "
            "`auxcord backfill`.",
        ),
    ] = False,
    progress_json: Annotated[
        bool,
        typer.Option(
            "--progress-json",
            help="For programs (the dashboard's upload queue): print progress, the report and "
            "a refusal as one JSON object per line on stdout; everything else goes to stderr.",
        ),
    ] = False,
) -> None:
    """Import a Spotify streaming-history export: plays of 30 s or more, once each, through
    Kafka to MongoDB and GCS, then re-aggregate the days they fall on. Safe to re-run: a killed
    import resumes where it stopped. A Streaming History file of another Spotify account
    (its ``username``) is refused."""
    settings = get_settings()
    lines = JsonLines() if progress_json else None
    out = Console(stderr=True) if progress_json else console
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="spark-start") as pool:
        spark = None if no_aggregate else _SparkStarter(settings, pool)
        try:
            _import(settings, paths, user, spark, out, lines)
        finally:
            if spark is not None:
                spark.stop()


_SPARK_AFTER_ROWS = 1_000


class _SparkStarter:
    """Starts Spark's JVM in the background once the export proves to be one: after
    :data:`_SPARK_AFTER_ROWS` rows read, or when publishing starts. A file refused at once (a
    bomb, the wrong format, a few bad rows) never pays for a JVM."""

    def __init__(self, settings: Settings, pool: ThreadPoolExecutor) -> None:
        self.settings, self.pool = settings, pool
        self.future: Future[SparkSession] | None = None

    def start(self) -> None:
        from auxcord.spark import build_spark_session

        if self.future is None:
            self.future = self.pool.submit(build_spark_session, self.settings, "auxcord-import")

    def session(self) -> SparkSession:
        self.start()
        assert self.future is not None
        return self.future.result()

    def stop(self) -> None:
        # A JVM that failed to start has been reported by the step that needed it.
        if self.future is not None and self.future.exception() is None:
            self.future.result().stop()


class JsonLines:
    """``--progress-json``'s output: one JSON object per line on stdout, flushed at once, for
    ``api/imports.py`` to follow while the child runs. The objects are:

    - ``{"stage": "reading" | "publishing", "done": N, "total": T | null}`` as rows go by;
    - ``{"report": {...}}`` once published (:func:`report_view`; storing starts next);
    - ``{"refused": "message", "report": {...} | null}`` when the export is refused: the
      message speaks of the uploader's file, so it may be shown to them.

    The exit status says whether storing and aggregating worked; their errors go to stderr only
    (they name internal hosts and paths)."""

    def emit(self, **fields: Any) -> None:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()

    def progress(self, done: int, total: int | None) -> None:
        self.emit(stage="reading" if total is None else "publishing", done=done, total=total)


def report_view(report: ImportReport) -> dict[str, Any]:
    """The report's figures as the upload page shows them (JSON types only)."""
    return {
        "rows": report.rows,
        "accepted": report.accepted,
        "podcasts": report.podcasts,
        "published": report.published,
        "already_stored": report.already_stored,
        "duplicates": report.duplicates,
        "skipped": dict(report.skipped),
        "rejected": dict(report.rejected),
        "samples": [
            {"row": s.row, "file": s.file, "reason": s.reason, "detail": s.detail}
            for s in report.samples
        ],
        "first_day": report.first_day.isoformat() if report.first_day else None,
        "last_day": report.last_day.isoformat() if report.last_day else None,
    }


def _import(
    settings: Settings,
    paths: list[Path],
    user: str,
    spark: _SparkStarter | None,
    console: Console,
    lines: JsonLines | None,
) -> None:
    from producers.history import import_sources
    from producers.history.state import ImportStateStore

    began = time.perf_counter()
    with Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        reading = progress.add_task("reading rows", total=None)
        publishing = progress.add_task("publishing", total=None, visible=False)

        def on_progress(done: int, total: int | None) -> None:
            if spark is not None and (total is not None or done >= _SPARK_AFTER_ROWS):
                spark.start()
            if lines is not None:
                lines.progress(done, total)
            if total is None:
                progress.update(reading, completed=done)
                return
            _finish(progress, reading)
            progress.update(publishing, visible=True, total=total, completed=done)

        try:
            report = import_sources(settings, paths, user, on_progress=on_progress)
        except AuxcordError as refused:
            # Everything refused while reading and publishing is about the export itself.
            progress.stop()
            partial: ImportReport | None = getattr(refused, "report", None)
            if lines is not None:
                lines.emit(
                    refused=str(refused),
                    report=report_view(partial) if partial is not None else None,
                )
            if partial is not None and partial.rows:
                print_report(partial, console)
            raise
    print_report(report, console)
    if lines is not None:
        lines.emit(report=report_view(report))
    console.print(f"read and published in {time.perf_counter() - began:.1f} s")
    if spark is None:
        if report.first_day is not None:
            console.print(
                "Published only. Once `auxcord stream` has stored them, run "
                f"`auxcord backfill --from {report.first_day} --to <today>`."
            )
        return
    from auxcord.clients import mongo_database
    from producers.history.pipeline import store_and_aggregate

    state = ImportStateStore(mongo_database(settings)).get(report.import_id) or {}
    if state.get("status") == "aggregated":
        console.print("This export was imported and aggregated before: nothing more to do.")
        return
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("starting Spark", total=None)
        session = spark.session()
        outcome = store_and_aggregate(
            settings,
            report,
            spark=session,
            on_step=lambda step: progress.update(task, description=step),
        )
        progress.update(task, total=1, completed=1, description="done")
    console.print(f"plays {outcome.stored_by} in {outcome.seconds['stored']:.1f} s")
    console.print(f"repaired {outcome.repaired_gaps} gaps (spans of possibly missing plays)")
    result = outcome.aggregated
    if result is None:
        console.print("No new days to aggregate.")
    else:
        console.print(
            f"Re-aggregated {result.first} to {result.last} in "
            f"{outcome.seconds['aggregated']:.1f} s: {result.user_days:,} user days, "
            f"{result.group_days:,} group days."
        )


def _finish(progress: Progress, task: TaskID) -> None:
    current = progress.tasks[task].completed
    progress.update(task, total=current, completed=current)


def print_report(report: ImportReport, console: Console) -> None:
    """The import's figures, then a sample of rejected rows with their reasons."""
    table = Table(title=f"History import for {report.user_id}", show_header=False)
    table.add_column("what")
    table.add_column("rows", justify="right")
    table.add_row("rows read", f"{report.rows:,}")
    table.add_row("plays accepted (30 s or more)", f"{report.accepted:,}")
    table.add_row("  of which podcast episodes", f"{report.podcasts:,}")
    if report.minute_precision:
        table.add_row("  of which legacy (to the minute)", f"{report.minute_precision:,}")
        table.add_row("  legacy matched to a known play", f"{report.matched_by_minute:,}")
    for reason, count in sorted(report.skipped.items()):
        table.add_row(f"skipped: {reason}", f"{count:,}")
    for reason, count in report.rejected.most_common():
        table.add_row(f"[red]rejected: {reason}[/red]", f"{count:,}")
    table.add_row("duplicates within the export", f"{report.duplicates:,}")
    table.add_row("already stored (polling, earlier imports)", f"{report.already_stored:,}")
    if report.resumed:
        table.add_row("handled by an earlier, interrupted run", f"{report.resumed:,}")
    table.add_row("[bold]published now[/bold]", f"[bold]{report.published:,}[/bold]")
    if report.first_day is not None:
        table.add_row(
            f"local days affected ({report.timezone})",
            f"{len(report.days):,}: {report.first_day} to {report.last_day}",
        )
    console.print(table)
    if report.samples:
        samples = Table(title=f"Sample of rejected rows ({len(report.samples)})")
        for column in ("file", "row", "reason", "value", "record"):
            samples.add_column(column, overflow="fold")
        for sample in report.samples:
            samples.add_row(
                sample.file, str(sample.row), sample.reason, sample.detail, sample.record[:120]
            )
        console.print(samples)
