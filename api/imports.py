"""History imports started from the dashboard: the upload is saved to disk and queued; a few
worker threads take the queue in order, publish each export with
:func:`producers.history.import_history` (the progress the page shows), then get it stored and
re-aggregated by ``auxcord import`` in a child process.

Bounded, so that uploads cannot overload the server: one import at a time per user (a second
upload while one is queued or running is refused), at most :data:`MAX_RUNNING` at once for
everyone (each runs a Spark JVM), and at most :data:`MAX_QUEUED` waiting. The re-aggregation is
scoped to the uploader and their groups (:func:`analytics.aggregate.aggregate_days` with
``user=``), as on the command line.

Why a child process for the second half: re-aggregating runs Spark, whose JVM has no place in
the web server. ``auxcord import`` on the same file finds the import already published (imports
are keyed by their content), so it only gets the plays stored and re-aggregates their days,
exactly as after a command-line import. Its output (which names internal hosts and paths) goes
to the server's log, never to the uploader.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from auxcord.errors import AuxcordError
from auxcord.settings import Settings

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 1 << 30
"""An Extended Streaming History zip of a decade is a few tens of MB; 1 GB is plenty."""
UPLOAD_SUFFIXES = (".zip", ".json")
MAX_RUNNING = 2
"""Imports running at once, for everyone: each child runs a Spark JVM."""
MAX_QUEUED = 20
"""Imports waiting; beyond it an upload is refused until the queue drains."""
STORING_FAILED = (
    "Storing the plays failed on the server. They are safe in the pipeline: upload the same "
    "file again later, or ask the administrator (the server log has the details)."
)
FINISHED = ("done", "failed")
AUXCORD_IMPORT = (sys.executable, "-c", "from cli.main import main; main()", "import")
"""The command that stores and re-aggregates a published import; the file and ``--user U``
are appended."""


class UploadRefused(AuxcordError):
    """An upload refused before importing, with a message to show as it is."""


@dataclass
class ImportJob:
    job_id: str
    user_id: str
    filename: str
    path: Path
    started_at: datetime
    stage: str = "queued"
    """queued → reading → publishing → storing → done, or failed."""
    done: int = 0
    total: int | None = None
    report: dict[str, Any] | None = None
    error: str | None = None

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
    """The imports this web server queued, by job id (kept in memory: a restart forgets the
    page and the queue, not what was published, which ``auxcord import`` can resume)."""

    def __init__(
        self,
        settings: Settings,
        *,
        running: int = MAX_RUNNING,
        queued: int = MAX_QUEUED,
        store_command: tuple[str, ...] = AUXCORD_IMPORT,
    ) -> None:
        self.settings, self.store_command = settings, store_command
        self.folder = settings.data_dir / "uploads"
        self.jobs: dict[str, ImportJob] = {}
        self.lock = threading.Lock()
        self.running, self.queued = running, queued
        self.waiting: queue.Queue[ImportJob] = queue.Queue()
        self.workers: list[threading.Thread] = []

    def get(self, job_id: str, user_id: str) -> ImportJob | None:
        job = self.jobs.get(job_id)
        return job if job is not None and job.user_id == user_id else None

    def start(self, user_id: str, filename: str, upload: BinaryIO) -> ImportJob:
        """Save ``upload`` and queue its import; :class:`UploadRefused` if it is not an export,
        the user has an import unfinished, or the queue is full."""
        safe_name = Path(filename or "").name
        if not safe_name.lower().endswith(UPLOAD_SUFFIXES):
            raise UploadRefused(
                "Upload the export as Spotify sent it: my_spotify_data.zip, or one of its "
                "Streaming_History_Audio_*.json or StreamingHistory*.json files."
            )
        job_id = secrets.token_urlsafe(12)
        path = self.folder / f"{job_id}{Path(safe_name).suffix.lower()}"
        job = ImportJob(job_id, user_id, safe_name, path, datetime.now(UTC))
        # Claimed before the upload is saved, so two uploads at once cannot both pass.
        with self.lock:
            unfinished = [j for j in self.jobs.values() if j.stage not in FINISHED]
            if any(j.user_id == user_id for j in unfinished):
                raise UploadRefused(
                    "Your previous import is still running: wait for it to finish, then upload "
                    "the next file."
                )
            if len(unfinished) >= self.running + self.queued:
                raise UploadRefused(
                    "The server is busy importing other people's histories: try again in a "
                    "few minutes."
                )
            self.jobs[job_id] = job
        try:
            written = self._save(upload, path)
        except BaseException:
            with self.lock:
                del self.jobs[job_id]
            raise
        with self.lock:
            if len(self.workers) < self.running:
                worker = threading.Thread(
                    target=self._work, name=f"import-worker-{len(self.workers)}", daemon=True
                )
                self.workers.append(worker)
                worker.start()
        self.waiting.put(job)
        log.info(
            "history upload queued", extra={"user_id": user_id, "bytes": written, "job": job_id}
        )
        return job

    def _save(self, upload: BinaryIO, path: Path) -> int:
        self.folder.mkdir(parents=True, exist_ok=True)
        written = 0
        with path.open("wb") as target:
            while chunk := upload.read(1 << 20):
                written += len(chunk)
                if written > MAX_UPLOAD_BYTES:
                    target.close()
                    path.unlink(missing_ok=True)
                    raise UploadRefused("That file is over 1 GB: it cannot be a Spotify export.")
                target.write(chunk)
        return written

    def _work(self) -> None:
        while True:
            job = self.waiting.get()
            try:
                self._run(job)
            except Exception:
                log.exception("history import crashed", extra={"user_id": job.user_id})
                job.stage, job.error = "failed", STORING_FAILED
            finally:
                job.path.unlink(missing_ok=True)

    def _run(self, job: ImportJob) -> None:
        from producers.history import import_history

        def on_progress(done: int, total: int | None) -> None:
            job.stage = "reading" if total is None else "publishing"
            job.done, job.total = done, total

        job.stage = "reading"
        try:
            report = import_history(self.settings, job.path, job.user_id, on_progress=on_progress)
        except AuxcordError as exc:
            refused_report = getattr(exc, "report", None)
            job.report = _report_view(refused_report) if refused_report is not None else None
            job.stage, job.error = "failed", str(exc)
            return
        job.report = _report_view(report)
        job.stage = "storing"
        finished = subprocess.run(
            [*self.store_command, str(job.path), "--user", job.user_id],
            env={**os.environ, **self.settings.as_environment()},
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if finished.returncode != 0:
            # The child's words name internal hosts and paths: for the log, not the page.
            log.warning(
                "history import storing failed (exit %d): %s",
                finished.returncode,
                finished.stderr.strip()[-4000:],
                extra={"user_id": job.user_id, "job": job.job_id},
            )
            job.stage, job.error = "failed", STORING_FAILED
            return
        job.stage = "done"
