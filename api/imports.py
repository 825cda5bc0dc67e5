"""History imports started from the dashboard: the upload is saved to disk and queued; a few
worker threads take the queue in order and run ``auxcord import FILE --user U --progress-json``
in a child process for each, following the JSON lines it prints for the page's progress.

Why all of it in a child: the export is untrusted (a zip to inflate, up to 1.5 M rows to parse)
and publishing and re-aggregating run Kafka clients and a Spark JVM, none of which belong in the
web server (which never imports producer code: ``tests/test_import_graph.py``). The child's
refusals (the export is not one, belongs to another account, is over a limit) speak of the
uploader's file and are shown as they are; any other failure is logged with the child's stderr
(which names internal hosts and paths) and the page shows :data:`STORING_FAILED`.

Bounded, so that uploads cannot overload the server: one import at a time per user (a second
upload while one is queued or running is refused), at most :data:`MAX_RUNNING` at once for
everyone (each runs a Spark JVM), at most :data:`MAX_QUEUED` waiting, and each child killed after
:data:`IMPORT_TIMEOUT` (a child stuck on a server would otherwise hold its worker for ever). The
re-aggregation is scoped to the uploader and their groups (``--user``), as on the command line.
Finished jobs are forgotten after :data:`FINISHED_KEPT`, so the page of an old import is a 404.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
"""The command that imports an upload; the file, ``--user U`` and ``--progress-json`` are
appended (see ``producers/import_cli.py``'s ``JsonLines`` for what it prints)."""
IMPORT_TIMEOUT = 2 * 60 * 60.0
"""Seconds an import's child may run before it is killed and the job failed. A decade's export
takes minutes (bench/RESULTS.md); two hours only ends a child stuck on a server."""
FINISHED_KEPT = timedelta(hours=1)
"""How long a finished job stays in memory (its page and status) before the next upload drops
it; the stats it produced stay, of course."""


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
    finished_at: datetime | None = None

    def finish(self, stage: str, error: str | None = None) -> None:
        self.stage, self.error, self.finished_at = stage, error, datetime.now(UTC)

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
        timeout: float = IMPORT_TIMEOUT,
    ) -> None:
        self.settings, self.store_command, self.timeout = settings, store_command, timeout
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
            self._forget_finished()
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

    def _forget_finished(self) -> None:
        """Drop jobs finished over :data:`FINISHED_KEPT` ago (called with the lock held)."""
        horizon = datetime.now(UTC) - FINISHED_KEPT
        for job_id, job in list(self.jobs.items()):
            if job.finished_at is not None and job.finished_at < horizon:
                del self.jobs[job_id]

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
                job.finish("failed", STORING_FAILED)
            finally:
                job.path.unlink(missing_ok=True)

    def _run(self, job: ImportJob) -> None:
        """Run the child, following its JSON lines, until it exits or :attr:`timeout` ends it."""
        job.stage = "reading"
        refusal: str | None = None
        with tempfile.TemporaryFile() as errors:
            child = subprocess.Popen(
                [*self.store_command, str(job.path), "--user", job.user_id, "--progress-json"],
                env={**os.environ, **self.settings.as_environment()},
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
                start_new_session=True,  # its own process group, Spark's JVM included
            )
            killed = threading.Event()
            timer = threading.Timer(self.timeout, _kill, (child, killed))
            timer.daemon = True
            timer.start()
            try:
                assert child.stdout is not None
                for line in child.stdout:
                    refusal = _follow(job, line) or refusal
                returncode = child.wait()
            finally:
                timer.cancel()
                if child.poll() is None:  # this thread failed while following: end the child
                    _kill(child, killed)
                    child.wait()
            if refusal is not None:
                job.finish("failed", refusal)
            elif returncode == 0:
                job.finish("done")
            else:
                errors.seek(0)
                ended = f"killed after {self.timeout:.0f} s" if killed.is_set() else "failed"
                # The child's words name internal hosts and paths: for the log, not the page.
                log.warning(
                    "history import %s (exit %d): %s",
                    ended,
                    returncode,
                    errors.read().decode(errors="replace").strip()[-4000:],
                    extra={"user_id": job.user_id, "job": job.job_id},
                )
                job.finish("failed", STORING_FAILED)


def _kill(child: subprocess.Popen[str], killed: threading.Event) -> None:
    """End a child that ran over its time, with everything it started."""
    killed.set()
    with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
        os.killpg(child.pid, signal.SIGKILL)


def _follow(job: ImportJob, line: str) -> str | None:
    """Apply one of the child's lines to ``job``; the refusal message if it is one."""
    try:
        message = json.loads(line)
    except ValueError:
        message = None
    if not isinstance(message, dict):
        # A library writing to stdout (Spark's JVM can): not ours to interpret.
        log.debug("history import child printed %r", line[:200], extra={"user_id": job.user_id})
        return None
    if "refused" in message:
        job.report = message.get("report")
        return str(message["refused"])
    if "report" in message:  # published: storing and re-aggregating come next
        job.report, job.stage = message["report"], "storing"
    elif message.get("stage") in ("reading", "publishing"):
        job.stage, job.done, job.total = message["stage"], message["done"], message["total"]
    return None
