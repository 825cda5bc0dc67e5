"""The demo's months of history: each friend's Spotify data export, imported as the demo starts.

Spotify shows a poller only a listener's 50 most recent plays, so a group that only polls
starts with 50 plays each: thin leaderboards, short streaks, an empty recap. A real newcomer's
first step fixes that the same way: download their Extended Streaming History and upload it.
Here each simulated friend's export is written from the simulator's ground truth up to the
simulator's "now" (:func:`devtools.simulator.export.write_extended_zip`) and imported through
:func:`producers.history.import_history`, the function behind ``auxcord import`` and the
dashboard's upload. The plays then travel like any others, through Kafka and the streaming job,
stored once whether the pollers saw them too or not.

Storing: the demo calls this before its streaming query starts and runs that query once,
available-now, on the same checkpoint (what ``auxcord import`` does when no stream runs): two
queries on one checkpoint at once would corrupt it. The imported days are then aggregated by
the demo's batch runs, the first of which covers every day that has listens.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

from auxcord.errors import AuxcordError
from auxcord.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from rich.console import Console

    from devtools.simulator import RunningSimulator
    from producers.history import ImportReport

log = logging.getLogger(__name__)

STORE_ATTEMPTS = 3
"""The available-now run stores exactly once, so a failed run is safe to repeat; on a busy
machine Spark's Python worker can miss its 10 s to connect back, and the query fails."""


@dataclass(frozen=True)
class DemoHistory:
    """What the start-up import did, for the demo's console and the tests."""

    reports: list[ImportReport]
    stored: int
    """Listens the stream stored for the first time (0 when a re-run found them all stored)."""
    seconds: float

    @property
    def plays(self) -> int:
        return sum(report.accepted - report.podcasts for report in self.reports)

    @property
    def first_day(self) -> date | None:
        return min((r.first_day for r in self.reports if r.first_day is not None), default=None)

    @property
    def last_day(self) -> date | None:
        return max((r.last_day for r in self.reports if r.last_day is not None), default=None)

    def summary(self) -> str:
        """One line for the console: how much history, and how long importing it took."""
        if self.first_day is None:
            return f"no history to import ({self.seconds:.1f} s)"
        return (
            f"imported {len(self.reports)} friends' Spotify exports: {self.plays:,} music plays "
            f"from {self.first_day} to {self.last_day}, {self.stored:,} newly stored, "
            f"in {self.seconds:.1f} s"
        )


def import_demo_history(
    settings: Settings,
    simulator: RunningSimulator,
    user_ids: Sequence[str],
    spark: SparkSession,
    *,
    say: Callable[[str], None] = lambda _: None,
) -> DemoHistory:
    """Import each of ``user_ids``' simulated export up to the simulator's now, then store the
    plays with one available-now run of the streaming job (see the module docstring). Call it
    before the streaming query starts; ``say`` gets a progress line per step."""
    from pyspark.errors import StreamingQueryException

    from devtools.simulator.export import write_extended_zip
    from producers.history import import_history
    from streaming.job import start_stream

    started = time.perf_counter()
    folder = settings.data_dir / "demo" / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    until = datetime.fromtimestamp(simulator.clock.now_ms() / 1000, UTC)
    reports = []
    for user_id in user_ids:
        path = folder / f"{user_id}.zip"
        with simulator.simulator.lock:  # the world's timelines grow as the simulator serves
            written = write_extended_zip(simulator.world, user_id, until, path)
        report = import_history(settings, path, user_id)
        reports.append(report)
        say(
            f"{user_id}: export of {written.rows:,} rows, {report.accepted:,} plays "
            f"({report.published:,} new, {report.already_stored:,} already stored)"
        )
        log.info(
            "demo history imported: %d plays, %d published",
            report.accepted,
            report.published,
            extra={"user_id": user_id},
        )
    say("storing the imported plays (streaming job, available-now)")
    stored = 0
    for attempt in range(1, STORE_ATTEMPTS + 1):
        query, writer = start_stream(spark, settings, available_now=True)
        try:
            query.awaitTermination()
            break
        except StreamingQueryException as exc:
            if attempt == STORE_ATTEMPTS:
                raise AuxcordError(
                    f"the stream failed while storing the demo's history: {exc}"
                ) from exc
            log.warning("storing the demo's history, attempt %d failed: %s", attempt, exc)
            say(f"the stream failed ({type(exc).__name__}); trying again")
        finally:
            stored += writer.totals.new_listens  # a failed attempt may have stored batches
    return DemoHistory(reports, stored, time.perf_counter() - started)


def import_on_start(
    settings: Settings, simulator: RunningSimulator, user_ids: Sequence[str], console: Console
) -> Callable[[SparkSession], DemoHistory]:
    """The demo's start-up step: :func:`import_demo_history` with its lines on the console."""

    def step(spark: SparkSession) -> DemoHistory:
        history = import_demo_history(
            settings,
            simulator,
            user_ids,
            spark,
            say=lambda line: console.print(f"[dim]  ·[/dim] {line}"),
        )
        console.print(f"[dim]·[/dim] {history.summary()}")
        return history

    return step
