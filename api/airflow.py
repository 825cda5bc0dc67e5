"""A small client of Airflow's REST API (v2): the last run of each DAG for ``/admin``, and
the calls the demo and the tests make (unpause, trigger, follow a run).

Airflow 3's SimpleAuthManager (and the others) hand out a JWT at ``POST /auth/token`` for a
username and password; every API call carries it as a bearer token. The client fetches one
on first use and again when a call answers 401 (tokens expire after a day).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import httpx

from auxcord.errors import AuxcordError
from auxcord.settings import Settings

log = logging.getLogger(__name__)

DAG_IDS = ("auxcord_daily", "auxcord_today", "auxcord_recommendations")
"""The DAGs /admin reports on, in the order the pipeline runs them."""
FINISHED = frozenset({"success", "failed"})
STARTED = ("running", "success", "failed")
"""The states of a DAG run that has a start."""


class AirflowError(AuxcordError):
    """Airflow could not be reached, refused the login, or answered a call with an error."""


@dataclass(frozen=True)
class DagRun:
    """One DAG run as ``/admin`` shows it."""

    dag_id: str
    run_id: str
    state: str
    run_type: str
    logical_date: datetime | None
    start: datetime | None
    end: datetime | None
    conf: dict[str, Any]

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to end; None while it runs or before it starts."""
        if self.start is None or self.end is None:
            return None
        return (self.end - self.start).total_seconds()

    @classmethod
    def from_api(cls, body: dict[str, Any]) -> DagRun:
        return cls(
            dag_id=str(body["dag_id"]),
            run_id=str(body["dag_run_id"]),
            state=str(body["state"]),
            run_type=str(body.get("run_type") or ""),
            logical_date=_moment(body.get("logical_date")),
            start=_moment(body.get("start_date")),
            end=_moment(body.get("end_date")),
            conf=dict(body.get("conf") or {}),
        )


def _moment(value: object) -> datetime | None:
    return datetime.fromisoformat(str(value)) if value else None


class AirflowClient:
    """Calls Airflow's REST API at ``settings.airflow_url`` with ``settings``' login."""

    def __init__(self, settings: Settings, *, timeout_s: float = 5.0) -> None:
        self.base_url = settings.airflow_url
        self._username = settings.airflow_username
        self._settings = settings
        self._token: str | None = None
        self._http = httpx.Client(base_url=settings.airflow_url, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AirflowClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _login(self) -> str:
        settings = self._settings
        if not settings.airflow_password and not settings.airflow_passwords_file.exists():
            # Generating one here would hide it from `stack up`, which prints a new login.
            raise AirflowError(
                "no Airflow login yet: start Airflow with `auxcord stack up`, "
                "or set AUXCORD_AIRFLOW_PASSWORD"
            )
        try:
            password = settings.airflow_password_value()
            response = self._http.post(
                "/auth/token", json={"username": self._username, "password": password}
            )
        except (httpx.HTTPError, OSError) as exc:
            raise AirflowError(f"Airflow at {self.base_url} does not answer: {exc}") from exc
        if response.status_code >= 400:
            raise AirflowError(
                f"Airflow at {self.base_url} refused the login of {self._username!r} "
                f"({response.status_code}); see AUXCORD_AIRFLOW_USERNAME/PASSWORD"
            )
        return str(response.json()["access_token"])

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        for attempt in range(2):
            if self._token is None:
                self._token = self._login()
            try:
                response = self._http.request(
                    method, path, headers={"Authorization": f"Bearer {self._token}"}, **kwargs
                )
            except httpx.HTTPError as exc:
                raise AirflowError(f"Airflow at {self.base_url} does not answer: {exc}") from exc
            if response.status_code == 401 and attempt == 0:
                self._token = None  # expired: log in again once
                continue
            if response.status_code >= 400:
                raise AirflowError(
                    f"Airflow: {method} {path} answered {response.status_code}: "
                    f"{response.text[:300]}"
                )
            return response.json() if response.content else None
        raise AirflowError(f"Airflow at {self.base_url} keeps refusing its own token")

    # Reads

    def get(self, path: str, **params: Any) -> Any:
        """Any GET of the REST API (``/api/v2/...``), its JSON body."""
        return self._call("GET", path, params=params)

    def last_run(self, dag_id: str) -> DagRun | None:
        """The run of ``dag_id`` that started last, whatever day it is for (a backfill's run
        of last week started after this morning's manual run is the last run); while none has
        started, the newest due (queued); None before its first."""
        path = f"/api/v2/dags/{dag_id}/dagRuns"
        # Only runs that started: how a database sorts the others' empty start_date varies.
        params = {"limit": 1, "order_by": "-start_date", "state": list(STARTED)}
        runs = self._call("GET", path, params=params).get("dag_runs") or []
        if not runs:
            params = {"limit": 1, "order_by": "-run_after"}
            runs = self._call("GET", path, params=params).get("dag_runs") or []
        return DagRun.from_api(runs[0]) if runs else None

    def runs(self, dag_id: str, limit: int = 50) -> list[DagRun]:
        """Up to ``limit`` runs of ``dag_id``, oldest due first."""
        params = {"limit": limit, "order_by": "run_after"}
        body = self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns", params=params)
        return [DagRun.from_api(run) for run in body.get("dag_runs") or []]

    def run(self, dag_id: str, run_id: str) -> DagRun:
        return DagRun.from_api(self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"))

    def task_tries(self, dag_id: str, run_id: str, task_id: str) -> int:
        """How many times a task of a run has been tried so far."""
        body = self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
        return int(body.get("try_number") or 0)

    # Writes

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self._call("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": paused})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> DagRun:
        """Start a manual run now (no logical date: the run says what it is for in ``conf``)."""
        request = {"logical_date": None, "conf": conf or {}}
        body = self._call("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=request)
        return DagRun.from_api(body)

    def backfill(self, dag_id: str, first: date, last: date) -> int:
        """Queue one run per day from ``first`` to ``last``, one at a time; the backfill's id."""
        body = self._call(
            "POST",
            "/api/v2/backfills",
            json={
                "dag_id": dag_id,
                "from_date": f"{first.isoformat()}T00:00:00Z",
                "to_date": f"{last.isoformat()}T00:00:00Z",
                "max_active_runs": 1,
            },
        )
        return int(body["id"])


def last_runs(settings: Settings) -> dict[str, Any]:
    """For ``/admin``: Airflow's UI address and the last run of each DAG, or why they cannot
    be shown (Airflow not running, wrong login). Never raises: the page shows the rest."""
    try:
        with AirflowClient(settings, timeout_s=2.0) as client:
            runs = {dag_id: client.last_run(dag_id) for dag_id in DAG_IDS}
    except AuxcordError as exc:
        log.warning("admin: Airflow's runs unavailable: %s", exc)
        return {"url": settings.airflow_url, "runs": None, "error": str(exc)}
    return {"url": settings.airflow_url, "runs": runs, "error": None}
