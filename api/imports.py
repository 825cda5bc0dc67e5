"""History imports started from the dashboard: the upload is saved to disk, published by
:func:`producers.history.import_history` in a background thread (the progress the page shows),
then stored and re-aggregated by ``auxcord import`` in a child process.

Why a child process for the second half: re-aggregating runs Spark, whose JVM has no place in
the web server. ``auxcord import`` on the same file finds the import already published (imports
are keyed by their content), so it only gets the plays stored and re-aggregates their days,
exactly as after a command-line import.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from auxcord.errors import AuxcordError
from auxcord.settings import Settings

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 1 << 30
"""An Extended Streaming History zip of a decade is a few tens of MB; 1 GB is plenty."""
UPLOAD_SUFFIXES = (".zip", ".json")


class UploadRefused(AuxcordError):
    """An upload refused before importing, with a message to show as it is."""


@dataclass
class ImportJob:
    job_id: str
    user_id: str
    filename: str
    path: Path
    started_at: datetime
    stage: str = "reading"
    """reading → publishing → storing → done, or failed."""
    done: int = 0
    total: int | None = None
    report: dict[str, Any] | None = None
    error: str | None = None
    log_tail: list[str] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "filename": self.filename,
            "stage": self.stage,
            "done": self.done,
            "total": self.total,
            "report": self.report,
            "error": self.error,
            "started_at": self.started_at,
            "log": self.log_tail,
        }


def _report_view(report: Any) -> dict[str, Any]:
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


class ImportJobs:
    """The imports this web server started, by job id (kept in memory: a restart forgets the
    page, not the import, which ``auxcord import`` can resume)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.folder = settings.data_dir / "uploads"
        self.jobs: dict[str, ImportJob] = {}
        self.lock = threading.Lock()

    def get(self, job_id: str, user_id: str) -> ImportJob | None:
        job = self.jobs.get(job_id)
        return job if job is not None and job.user_id == user_id else None

    def start(self, user_id: str, filename: str, upload: BinaryIO) -> ImportJob:
        safe_name = Path(filename or "").name
        if not safe_name.lower().endswith(UPLOAD_SUFFIXES):
            raise UploadRefused(
                "Upload the export as Spotify sent it: my_spotify_data.zip, or one of its "
                "Streaming_History_Audio_*.json or StreamingHistory*.json files."
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        job_id = secrets.token_urlsafe(12)
        path = self.folder / f"{job_id}{Path(safe_name).suffix.lower()}"
        written = 0
        with path.open("wb") as target:
            while chunk := upload.read(1 << 20):
                written += len(chunk)
                if written > MAX_UPLOAD_BYTES:
                    target.close()
                    path.unlink(missing_ok=True)
                    raise UploadRefused("That file is over 1 GB: it cannot be a Spotify export.")
                target.write(chunk)
        job = ImportJob(job_id, user_id, safe_name, path, datetime.now(UTC))
        with self.lock:
            self.jobs[job_id] = job
        threading.Thread(
            target=self._run, args=(job,), name=f"import-{job_id}", daemon=True
        ).start()
        log.info("history upload", extra={"user_id": user_id, "bytes": written})
        return job

    def _run(self, job: ImportJob) -> None:
        from producers.history import import_history

        def on_progress(done: int, total: int | None) -> None:
            job.stage = "reading" if total is None else "publishing"
            job.done, job.total = done, total

        try:
            report = import_history(self.settings, job.path, job.user_id, on_progress=on_progress)
        except AuxcordError as exc:
            job.stage, job.error = "failed", str(exc)
            refused_report = getattr(exc, "report", None)
            job.report = _report_view(refused_report) if refused_report is not None else None
            job.path.unlink(missing_ok=True)
            return
        job.report = _report_view(report)
        job.stage = "storing"
        finished = subprocess.run(
            [sys.executable, "-c", "from cli.main import main; main()", "import",
             str(job.path), "--user", job.user_id],
            env={**os.environ, **self.settings.as_environment()},
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        job.path.unlink(missing_ok=True)
        job.log_tail = (finished.stdout + finished.stderr).strip().splitlines()[-8:]
        if finished.returncode != 0:
            job.stage = "failed"
            job.error = (finished.stderr.strip().splitlines() or ["storing failed"])[-1]
            log.warning("history import storing failed", extra={"user_id": job.user_id})
            return
        job.stage = "done"
