"""Uploading a Spotify data export from one's profile, and following its progress."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import RedirectResponse, Response

from api.deps import NOT_FOUND, CurrentUser
from api.imports import ImportJob, UploadRefused
from api.security import check_csrf
from api.templating import render

router = APIRouter(tags=["imports"])


def _job(request: Request, job_id: str, user_id: str) -> ImportJob:
    """Only the person who uploaded sees an import; anyone else gets the usual 404."""
    job: ImportJob | None = request.app.state.import_jobs.get(job_id, user_id)
    if job is None:
        raise HTTPException(status_code=404, detail=NOT_FOUND)
    return job


@router.post("/imports")
def upload_export(
    request: Request,
    user: CurrentUser,
    export: Annotated[UploadFile, File()],
    csrf_token: Annotated[str | None, Form()] = None,
) -> Response:
    check_csrf(request, csrf_token)
    try:
        job = request.app.state.import_jobs.start(user.user_id, export.filename or "", export.file)
    except UploadRefused as exc:
        request.session["flash"] = str(exc)
        return RedirectResponse(request.headers.get("referer") or "/", 303)
    return RedirectResponse(f"/imports/{job.job_id}", 303)


@router.get("/imports/{job_id}")
def import_page(request: Request, job_id: str, user: CurrentUser) -> Response:
    return render(request, "import.html", {"job": _job(request, job_id, user.user_id).view()})


@router.get("/api/v1/imports/{job_id}", tags=["api"])
def import_status(request: Request, job_id: str, user: CurrentUser) -> dict[str, Any]:
    """An upload's progress: stage (reading, publishing, storing, done or failed), rows done,
    and once published the report (accepted, rejected with reasons and samples)."""
    return _job(request, job_id, user.user_id).view()
