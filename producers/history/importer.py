"""Importing a Spotify export: validate every row, then publish the plays to Kafka.

Two passes, so that a refused file stores nothing:

1. **Read and validate** every file of the export (:mod:`producers.history.reader`,
   :mod:`producers.history.formats`), writing each accepted play, as its event JSON, to a
   temporary spool on disk. A corrupt, hostile or unknown file raises :class:`ImportRefused`
   here, before anything reaches Kafka. Memory holds one record at a time.
2. **Resolve, de-duplicate and publish** the spooled plays in order: legacy rows (minute
   precision) are resolved against plays known to the second (:class:`MinuteIndex`), plays
   seen earlier in the export or already stored in MongoDB are counted and not sent, and the
   rest go to the listens topic keyed by user id, exactly like the poller's events. Event ids
   are the poller's (``listen_event_id``, whole seconds), so a play in both the export and
   live polling is stored once whichever arrives first.

Resumable: the spool's order is deterministic, and after each chunk Kafka acknowledged, the
position is saved (:class:`ImportStateStore`); a re-run of the same export after a kill skips
what was acknowledged. Anything sent twice (a kill between acknowledgement and save) has the
same event id, and the streaming job stores it once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from array import array
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any, BinaryIO
from zoneinfo import ZoneInfo

from auxcord.accounts import valid_timezone
from auxcord.clients import kafka_producer, mongo_database
from auxcord.errors import AuxcordError
from auxcord.events import ListenEvent
from auxcord.names import Collection, Topic
from auxcord.settings import Settings
from producers.history.formats import (
    OVERLAP_REASON,
    MinuteIndex,
    Overlaps,
    Play,
    Record,
    Reject,
    Skip,
    detect_format,
    parse_record,
)
from producers.history.reader import Limits, Sources, iter_records
from producers.history.report import ImportRefused, ImportReport
from producers.history.state import ImportStateStore

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int | None], None]
FORMAT_VERSION = 1
"""Part of the import id: a change to how rows become plays must not resume old cursors."""
PUBLISH_CHUNK = 5_000
"""Plays per Kafka acknowledgement and saved position."""
_PROGRESS_EVERY = 1_000
_SECOND_PRECISION, _MINUTE_PRECISION = b"S", b"M"


def import_history(
    settings: Settings,
    source: Path | BinaryIO,
    user_id: str,
    *,
    on_progress: ProgressCallback | None = None,
) -> ImportReport:
    """Validate ``source`` (an export zip, a JSON file, a directory of them, or an open upload)
    and publish its plays to Kafka for ``user_id``. No Spark: the streaming job stores them,
    and the days in ``report.days`` need re-aggregating (the CLI does both).

    ``on_progress(done, total)`` counts rows: while reading, ``(rows read, None)``; while
    publishing, ``(plays handled, plays in the export)``.

    Raises :class:`ImportRefused` (an :class:`AuxcordError`) for a file it will not import,
    with nothing published.
    """
    return import_sources(settings, [source], user_id, on_progress=on_progress)


def import_sources(
    settings: Settings,
    sources: Sequence[Path | BinaryIO],
    user_id: str,
    *,
    on_progress: ProgressCallback | None = None,
    limits: Limits | None = None,
) -> ImportReport:
    """:func:`import_history` for several sources at once (the CLI's paths), as one import."""
    if not user_id.strip():
        raise AuxcordError("--user is empty: give the Spotify user id to import for")
    progress = on_progress or (lambda done, total: None)
    database = mongo_database(settings)
    user = database[Collection.USERS].find_one({"_id": user_id}, {"timezone": 1})
    if user is None:
        raise AuxcordError(
            f"no linked user {user_id!r}: link the account first (auxcord link), then import"
        )
    with Sources(limits or Limits()) as files, tempfile.TemporaryFile() as spool:
        for source in sources:
            files.add(source)
        report = ImportReport(
            user_id=user_id,
            files=[file.name for file in files.ordered()],
            timezone=valid_timezone(user.get("timezone")),
        )
        rejected = _read(files, user_id, spool, report, progress)
        if report.accepted == 0 and report.rejected_rows:
            raise ImportRefused(
                f"no valid play in {report.rows:,} rows; nothing imported "
                f"({report.rejected_rows:,} rejected)",
                report,
            )
        digest = hashlib.sha256(f"{FORMAT_VERSION}|{user_id}|{files.digest}".encode())
        report.import_id = f"{user_id}:{digest.hexdigest()[:24]}"
        log.info(
            "history import read: %d rows, %d plays",
            report.rows,
            report.accepted,
            extra={"user_id": user_id, "import_id": report.import_id},
        )
        _Publisher(settings, spool, report, progress).run(rejected)
    log.info(
        "history import published: %d new, %d already stored, %d duplicates, %d resumed",
        report.published,
        report.already_stored,
        report.duplicates,
        report.resumed,
        extra={"user_id": user_id, "import_id": report.import_id},
    )
    return report


def _read(
    files: Sources,
    user_id: str,
    spool: IO[bytes],
    report: ImportReport,
    progress: ProgressCallback,
) -> set[int]:
    """Pass 1: every row validated, plays spooled, impossible ones found (:class:`Overlaps`);
    returns the spool positions of those, which are rejected, and sets the report's span of
    accepted plays."""
    now = datetime.now(UTC)
    overlaps = Overlaps()
    where: list[tuple[str, int]] = []
    offsets = array("q")
    for file in files.ordered():
        fmt = None
        try:
            for row, (record, _) in enumerate(iter_records(file, files.limits)):
                report.rows += 1
                if report.rows > files.limits.max_rows:
                    raise ImportRefused(
                        f"more than {files.limits.max_rows:,} rows in the export, more than "
                        "decades of listening give; refused"
                    )
                if report.rows % _PROGRESS_EVERY == 0:
                    progress(report.rows, None)
                if fmt is None:
                    fmt = detect_format(record)
                    if fmt is None:
                        fields = sorted(record)[:8] if isinstance(record, dict) else [repr(record)]
                        raise ImportRefused(
                            f"{file.name}: unknown JSON: rows have {', '.join(fields)}; expected "
                            "Extended Streaming History (ts, ms_played, …) or account-data "
                            "StreamingHistory (endTime, msPlayed, …)"
                        )
                if fmt == "extended":
                    check_owner(file.name, record, user_id)
                outcome = parse_record(fmt, user_id, record, now)
                if isinstance(outcome, Reject):
                    report.reject(file.name, row, outcome.reason, outcome.detail, record)
                elif isinstance(outcome, Skip):
                    report.skipped[outcome.reason] += 1
                else:
                    offsets.append(spool.tell())
                    _spool(spool, outcome, report)
                    overlaps.add(outcome)
                    where.append((file.name, row))
        except ImportRefused as refused:
            refused.report = report
            raise
    progress(report.rows, None)
    impossible = overlaps.rejected()
    for position, detail in sorted(impossible.items()):
        spool.seek(offsets[position])
        line = spool.readline()
        event = ListenEvent.from_json(line[1:].rstrip(b"\n"))
        report.reject(*where[position], OVERLAP_REASON, detail, event.model_dump(mode="json"))
        report.accepted -= 1
        report.podcasts -= event.item_type == "episode"
        report.minute_precision -= line[:1] == _MINUTE_PRECISION
    spool.seek(0, 2)
    report.first_play, report.last_play = overlaps.span(impossible)
    return set(impossible)


def check_owner(name: str, record: Record, user_id: str) -> None:
    """Refuse an Extended Streaming History row of another Spotify account: its ``username``
    is the account's user id, which must be the one importing (the signed-in account on the
    dashboard, ``--user`` on the command line). Files without it are taken as they are."""
    username = record.get("username") if isinstance(record, dict) else None
    if isinstance(username, str) and username.strip() and username != user_id:
        raise ImportRefused(
            f"{name}: this export belongs to the Spotify account {username!r}, not to "
            f"{user_id!r} who is importing it; sign in as that account (or import it for "
            "that user) instead"
        )


def _spool(spool: IO[bytes], play: Play, report: ImportReport) -> None:
    report.accepted += 1
    report.podcasts += play.event.item_type == "episode"
    report.minute_precision += play.minute_precision
    flag = _MINUTE_PRECISION if play.minute_precision else _SECOND_PRECISION
    spool.write(flag + play.event.to_json() + b"\n")


class _Publisher:
    """Pass 2: the spooled plays, resolved, de-duplicated and published in acknowledged chunks."""

    def __init__(
        self,
        settings: Settings,
        spool: IO[bytes],
        report: ImportReport,
        progress: ProgressCallback,
    ) -> None:
        self.settings, self.spool, self.report, self.progress = settings, spool, report, progress
        self.database = mongo_database(settings)
        self.state = ImportStateStore(self.database)
        self.zone = ZoneInfo(report.timezone)
        self.topic = settings.topic(Topic.LISTENS)
        self.key = report.user_id.encode()
        self.pending: list[bytes] = []
        self.pending_days: set[date] = set()

    def run(self, rejected: set[int]) -> None:
        """Publish the spooled plays but those at the ``rejected`` positions."""
        report = self.report
        spooled = report.accepted + len(rejected)
        state = self.state.begin(
            report.import_id, report.user_id, report.files, report.accepted, datetime.now(UTC)
        )
        report.days = {date.fromisoformat(day) for day in state["days"]}
        # The cursor counts spool positions, rejected ones included: the same in every run.
        cursor = int(state["cursor"]) if state["status"] == "publishing" else spooled
        span = None
        if report.first_play is not None and report.last_play is not None:
            span = (report.first_play, report.last_play)
        stored, index = self._stored(span)
        seen: set[str] = set()
        producer = kafka_producer(self.settings, linger_ms=20, batch_size=256 * 1024)
        try:
            self.spool.seek(0)
            for position, line in enumerate(self.spool):
                if position in rejected:
                    continue
                event_id, payload, played_at, music = self._resolve(line, index)
                if position < cursor:
                    report.resumed += 1
                    seen.add(event_id)
                elif event_id in seen:
                    report.duplicates += 1
                elif event_id in stored:
                    seen.add(event_id)
                    report.already_stored += 1
                else:
                    seen.add(event_id)
                    self.pending.append(payload)
                    if music:  # podcasts are kept out of the daily figures
                        self.pending_days.add(played_at.astimezone(self.zone).date())
                    if len(self.pending) >= PUBLISH_CHUNK:
                        self._publish(producer, position + 1)
                if (position + 1) % _PROGRESS_EVERY == 0:
                    self.progress(position + 1, spooled)
            self._publish(producer, spooled)
        finally:
            producer.close()
        self.progress(spooled, spooled)
        if state["status"] == "publishing":
            self.state.mark(report.import_id, "published", datetime.now(UTC))

    def _stored(self, span: tuple[datetime, datetime] | None) -> tuple[set[str], MinuteIndex]:
        """The user's stored plays over the export's span: their ids, and an index of them."""
        index = MinuteIndex()
        if span is None:
            return set(), index
        query = {
            "user_id": self.report.user_id,
            "played_at": {
                "$gte": span[0] - timedelta(minutes=1),
                "$lt": span[1] + timedelta(minutes=2),
            },
        }
        fields = {"track_id": 1, "track_name": 1, "artist_name": 1, "played_at": 1, "item_type": 1}
        ids = set()
        for doc in self.database[Collection.LISTENS].find(query, fields):
            ids.add(doc["_id"])
            index.add(
                doc.get("item_type") or "track",
                doc["artist_name"],
                doc["track_name"],
                doc.get("track_id"),
                doc["played_at"],
            )
        return ids, index

    def _resolve(self, line: bytes, index: MinuteIndex) -> tuple[str, bytes, datetime, bool]:
        """A spooled play as (event id, Kafka value, played_at, is music), legacy rows
        resolved."""
        flag, payload = line[:1], line[1:].rstrip(b"\n")
        if flag == _MINUTE_PRECISION:
            event = ListenEvent.from_json(payload)
            resolved = index.resolve(event)
            if resolved is not event:
                self.report.matched_by_minute += 1
                payload = resolved.to_json()
            return resolved.event_id, payload, resolved.played_at, event.item_type == "track"
        data: dict[str, Any] = json.loads(payload)
        played_at = datetime.fromisoformat(data["played_at"].replace("Z", "+00:00"))
        index.add(
            data["item_type"], data["artist_name"], data["track_name"], data["track_id"], played_at
        )
        return str(data["event_id"]), payload, played_at, data["item_type"] == "track"

    def _publish(self, producer: Any, cursor: int) -> None:
        """Send the pending plays, wait for Kafka's acknowledgement, then save the position."""
        from kafka.errors import KafkaError

        report = self.report
        new_days = self.pending_days - report.days
        # Days first: if the process dies after Kafka took the chunk, the resumed run
        # (which will find those plays stored) still re-aggregates their days.
        self.state.add_days(report.import_id, new_days)
        report.days |= new_days
        try:
            futures = [
                producer.send(self.topic, key=self.key, value=payload) for payload in self.pending
            ]
            producer.flush()
            for future in futures:
                metadata = future.get(timeout=60)
                end = report.kafka_ends.get(metadata.partition, 0)
                report.kafka_ends[metadata.partition] = max(end, metadata.offset + 1)
        except KafkaError as exc:
            raise AuxcordError(
                f"Kafka did not acknowledge the import ({exc}); run it again to resume"
            ) from exc
        report.published += len(self.pending)
        self.pending.clear()
        self.pending_days.clear()
        self.state.advance(report.import_id, cursor, datetime.now(UTC))
