"""What an import did, row by row, and the error for a file it refused."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime

from auxcord.errors import AuxcordError

SAMPLE_SIZE = 10


@dataclass(frozen=True)
class RejectedRow:
    """One rejected row for the sample: where it was, why, and what it held (truncated)."""

    file: str
    row: int
    """Position in its file's array, from 0."""
    reason: str
    detail: str
    record: str


@dataclass
class ImportReport:
    """The outcome of one import, for the CLI table and the dashboard.

    Every row read is exactly one of: accepted (a play of 30 s or more, music or podcast),
    skipped (a real row auxcord does not count, by rule: see ``skipped``) or rejected (wrong
    data, see ``rejected``). Accepted plays then split into duplicates (the same play twice in
    the export), already stored (from polling or an earlier import), resumed (handled by an
    earlier, interrupted run of this import) and published (sent to Kafka now).
    """

    user_id: str
    files: list[str] = field(default_factory=list)
    rows: int = 0
    accepted: int = 0
    podcasts: int = 0
    """Accepted podcast episodes (stored apart from music: ``item_type="episode"``)."""
    minute_precision: int = 0
    """Accepted legacy rows (to the minute, no track id)."""
    matched_by_minute: int = 0
    """Legacy rows resolved to a play known to the second (see MinuteIndex)."""
    skipped: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    samples: list[RejectedRow] = field(default_factory=list)
    duplicates: int = 0
    already_stored: int = 0
    resumed: int = 0
    published: int = 0
    timezone: str = "UTC"
    days: set[date] = field(default_factory=set)
    """The user's local days (in ``timezone``) holding music plays this import added,
    including those published by an interrupted earlier run of it."""
    first_play: datetime | None = None
    last_play: datetime | None = None
    """The ends of the export's first and last accepted plays: the span it covers (the
    gaps inside it it repairs)."""
    kafka_ends: dict[int, int] = field(default_factory=dict)
    """Per partition of the listens topic, the offset after the last record published now."""
    import_id: str = ""

    @property
    def rejected_rows(self) -> int:
        return sum(self.rejected.values())

    @property
    def first_day(self) -> date | None:
        return min(self.days) if self.days else None

    @property
    def last_day(self) -> date | None:
        return max(self.days) if self.days else None

    def reject(self, file: str, row: int, reason: str, detail: str, record: object) -> None:
        self.rejected[reason] += 1
        if len(self.samples) < SAMPLE_SIZE:
            self.samples.append(RejectedRow(file, row, reason, detail, repr(record)[:300]))


class ImportRefused(AuxcordError):
    """A file auxcord will not import (corrupt, hostile, unknown or over a limit).

    Nothing of the import was published. ``report`` holds what was read before the refusal
    (rows accepted and rejected so far, with a sample), when anything was.
    """

    def __init__(self, message: str, report: ImportReport | None = None) -> None:
        super().__init__(message)
        self.report = report
