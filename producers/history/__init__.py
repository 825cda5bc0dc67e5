"""History import: a Spotify data export (Extended Streaming History or account data) into
the same pipeline as live polling. See ``README.md`` ("History import") for the rules."""

from producers.history.importer import import_history, import_sources
from producers.history.reader import Limits
from producers.history.report import ImportRefused, ImportReport, RejectedRow

__all__ = [
    "ImportRefused",
    "ImportReport",
    "Limits",
    "RejectedRow",
    "import_history",
    "import_sources",
]
