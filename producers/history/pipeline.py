"""After an import has published: get its plays stored, then re-aggregate the days it touched.

Why the CLI drives the stream itself: on a laptop or a small server nothing may be running
``auxcord stream``, and an import should end with the history visible, not with plays waiting
in Kafka. But a second query on the same checkpoint beside a running one would corrupt it. So:

- If the running stream has already stored everything the import published (its
  ``pipeline_status`` records, per Kafka partition, the offset after the last stored record),
  nothing is needed.
- If a stream is running, it takes the import's records within a trigger or a batch: its
  status changes while we watch (:data:`WATCH_S` plus two triggers), and the import waits
  for it to pass the import's offsets. A recent status alone proves nothing (an
  ``--available-now`` run may have just ended). A database where no stream ever stored a
  batch has no stream to wait for.
- Otherwise the import runs the streaming job once in ``availableNow`` mode in this process:
  the same query, checkpoint and sinks as ``auxcord stream``, so the plays are stored exactly
  as live ones are (MongoDB + GCS, once each).

Once the plays are stored, the user's open gaps the export covers are marked repaired
(:meth:`auxcord.gaps.GapStore.repair_covered`).

Then :func:`analytics.aggregate.aggregate_days`, scoped to the importing user, recomputes their
local days from the first imported day to the later of the last imported day and the last day
already aggregated for them: every day after an imported play can change (first plays, "new
tracks", and streaks depend on all earlier history), and no day before the first imported one
can. Nobody else's days change, so nobody else's are recomputed: the days and rollups of the
user's groups are rebuilt from the other members' stored days. One person's upload costs in
proportion to their history and their groups, not to everyone's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from auxcord.clients import mongo_database
from auxcord.errors import AuxcordError
from auxcord.gaps import GapStore
from auxcord.names import Collection, Topic
from auxcord.settings import Settings
from producers.history.report import ImportReport
from producers.history.state import ImportStateStore

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from analytics.aggregate import AggregateResult

log = logging.getLogger(__name__)

WATCH_S = 15.0
"""How long, beyond two triggers, to watch for a running stream to take the import's records:
longer than one full micro-batch on a small machine."""
STALL_TIMEOUT_S = 300.0
"""How long a running stream may make no progress on the import's records before giving up."""


def _status(settings: Settings) -> dict[str, Any]:
    return mongo_database(settings)[Collection.PIPELINE_STATUS].find_one({"_id": "stream"}) or {}


def _covered(settings: Settings, status: dict[str, Any], ends: dict[int, int]) -> bool:
    topic = settings.topic(Topic.LISTENS)
    stored = {
        item["partition"]: item["end"]
        for item in status.get("partition_ends", [])
        if item["topic"] == topic
    }
    return all(stored.get(partition, 0) >= end for partition, end in ends.items())


def _stream_running(settings: Settings, status: dict[str, Any]) -> bool:
    updated = status.get("updated_at")
    if updated is None:
        return False  # no stream ever stored a batch in this database
    watch_until = time.monotonic() + 2 * settings.stream_trigger_seconds + WATCH_S
    while time.monotonic() < watch_until:
        time.sleep(0.5)
        if _status(settings).get("updated_at") != updated:
            return True
    return False


class StoredBy(StrEnum):
    """How an import's plays reached MongoDB, as the CLI reports it."""

    ALREADY = "already stored by the running stream"
    RUNNING_STREAM = "stored by the running stream, waited for"
    IMPORT_STREAM = "streamed by the import itself"


def store_published(
    settings: Settings,
    report: ImportReport,
    *,
    spark: SparkSession | None = None,
    on_step: Callable[[str], None] = lambda _: None,
) -> StoredBy:
    """Make sure what ``report`` published is stored; returns how."""
    status = _status(settings)
    if _covered(settings, status, report.kafka_ends):
        return StoredBy.ALREADY
    if _stream_running(settings, status):
        on_step("waiting for the running stream")
        last_change, seen = time.monotonic(), status.get("updated_at")
        while not _covered(settings, status := _status(settings), report.kafka_ends):
            if status.get("updated_at") != seen:
                last_change, seen = time.monotonic(), status.get("updated_at")
            elif time.monotonic() - last_change > STALL_TIMEOUT_S:
                raise AuxcordError(
                    f"the running stream stored nothing for {STALL_TIMEOUT_S:.0f} s; the plays "
                    "are on Kafka: check `auxcord stream`, then run the import again"
                )
            time.sleep(0.5)
        return StoredBy.RUNNING_STREAM
    on_step("storing plays (stream, available-now)")
    from auxcord.spark import build_spark_session
    from streaming.job import start_stream

    session = spark or build_spark_session(settings, "auxcord-import")
    from pyspark.errors import StreamingQueryException

    query, writer = start_stream(session, settings, available_now=True)
    try:
        query.awaitTermination()
    except StreamingQueryException as exc:
        failure = str(exc).strip().splitlines()[0]
        raise AuxcordError(
            f"the stream failed while storing the import ({failure}); the plays are on Kafka: "
            "run the import again to store them"
        ) from exc
    if query.exception() is not None:
        raise AuxcordError(f"the stream failed while storing the import: {query.exception()}")
    log.info(
        "import stream stored %d new listens",
        writer.totals.new_listens,
        extra={"user_id": report.user_id},
    )
    return StoredBy.IMPORT_STREAM


def current_listen_ends(settings: Settings) -> dict[int, int]:
    """Each partition's next offset on the listens topic, now."""
    from streaming.kafka_source import WatermarkReader

    topic = settings.topic(Topic.LISTENS)
    options = {
        "bootstrap": settings.kafka_bootstrap,
        "security_protocol": settings.kafka_security_protocol,
    }
    ends = WatermarkReader(options, [topic]).read()
    return {
        int(partition): end
        for key, partitions in ends.items()
        if key.split("@")[0] == topic
        for partition, end in partitions.items()
    }


def aggregation_range(settings: Settings, report: ImportReport) -> tuple[date, date] | None:
    """The local days to re-aggregate for ``report`` (see the module docstring)."""
    if report.first_day is None or report.last_day is None:
        return None
    latest = mongo_database(settings)[Collection.USER_DAILY].find_one(
        {"user_id": report.user_id}, {"day": 1}, sort=[("day", -1)]
    )
    last = report.last_day
    if latest is not None:
        last = max(last, date.fromisoformat(latest["day"]))
    return report.first_day, last


@dataclass
class StoreOutcome:
    """What :func:`store_and_aggregate` did: how the plays were stored, the gaps the import
    repaired, the aggregation (None when no day needed it), and each step's seconds."""

    stored_by: StoredBy
    repaired_gaps: int
    aggregated: AggregateResult | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    """``stored`` and ``aggregated``: wall time of each step."""


def store_and_aggregate(
    settings: Settings,
    report: ImportReport,
    *,
    spark: SparkSession | None = None,
    on_step: Callable[[str], None] = lambda _: None,
) -> StoreOutcome:
    """Deliver the import's plays, repair the gaps it covers, then re-aggregate its user's
    days (and their groups'); marks the import done."""
    from analytics.jobs import reaggregate_after_import
    from auxcord.spark import build_spark_session

    database = mongo_database(settings)
    session = spark
    if not report.kafka_ends:
        # A resumed import may have published everything in an earlier run, which stopped
        # before its plays were stored: wait for all of the topic as it is now, which holds them.
        state = ImportStateStore(database).get(report.import_id) or {}
        if state.get("cursor", 0) > 0:
            report.kafka_ends = current_listen_ends(settings)
    try:
        began = time.perf_counter()
        if report.kafka_ends and not _covered(settings, _status(settings), report.kafka_ends):
            session = session or build_spark_session(settings, "auxcord-import")
        stored_by = store_published(settings, report, spark=session, on_step=on_step)
        repaired = 0
        if report.first_play is not None and report.last_play is not None:
            repaired = GapStore(database).repair_covered(
                report.user_id, report.first_play, report.last_play, datetime.now(UTC)
            )
            if repaired:
                log.info("import repaired %d gaps", repaired, extra={"user_id": report.user_id})
        outcome = StoreOutcome(stored_by, repaired)
        outcome.seconds["stored"] = time.perf_counter() - began
        days = aggregation_range(settings, report)
        if days is not None:
            began = time.perf_counter()
            on_step(f"re-aggregating {days[0]} to {days[1]}")
            session = session or build_spark_session(settings, "auxcord-import")
            outcome.aggregated = reaggregate_after_import(
                settings,
                user=report.user_id,
                first=days[0],
                last=days[1],
                spark=session,
                on_step=on_step,
            )
            outcome.seconds["aggregated"] = time.perf_counter() - began
        ImportStateStore(database).mark(report.import_id, "aggregated", datetime.now(UTC))
        return outcome
    finally:
        if session is not None and spark is None:
            session.stop()
