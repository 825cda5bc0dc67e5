"""Airflow 3 in the local stack: its configuration, its one-time set-up and its health.

``auxcord stack up`` runs Airflow's four long-lived processes from the project's own venv, each
a service of :mod:`devtools.stack` with its own pid file: the api-server (the UI, the REST API,
and the execution API that running tasks report to), the scheduler, the dag-processor and the
triggerer. ``AIRFLOW_HOME`` (``airflow.cfg``, the SQLite metadata database, task logs) is
``DATA_DIR/stack/airflow``; the DAG folder is the repository's ``dags/``; and every process gets
the same ``AUXCORD_*`` variables as the CLI (``Settings.as_environment``), so a task reaches the
same servers and data dir as ``auxcord aggregate`` would.

Why this configuration:

- **LocalExecutor on SQLite.** Airflow 3 removed the SequentialExecutor (a configured one is
  read as LocalExecutor), and LocalExecutor needs no broker. SQLite is enough for one machine
  but allows one writer at a time, which is one reason parallelism stays small.
- **parallelism 2.** LocalExecutor forks one ~130 MB worker per slot up front (the default 32
  took 5.4 GB), and each auxcord task runs a Spark driver that wants both cores anyway.
- **Paused when created** (Airflow's default): a fresh ``stack up`` runs nothing until someone
  unpauses a DAG in the UI, or the demo does through the REST API.
- **The login** is generated once into ``DATA_DIR/stack/airflow/passwords.json`` (mode 0600),
  which is also the SimpleAuthManager's passwords file, so Airflow never prints one of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

from auxcord.errors import StackError
from auxcord.settings import Settings

Component = Literal["api-server", "scheduler", "dag-processor", "triggerer"]
COMPONENTS: tuple[Component, ...] = ("api-server", "scheduler", "dag-processor", "triggerer")
PARALLELISM = 2
READY_TIMEOUT_S = 240.0
"""Measured: healthy about 20 s after start on an idle 2-core machine, 70 s on a busy one."""
DAGS_FOLDER = Path(__file__).resolve().parents[1] / "dags"

_HEALTH_KEY: dict[Component, str] = {
    "api-server": "metadatabase",
    "scheduler": "scheduler",
    "dag-processor": "dag_processor",
    "triggerer": "triggerer",
}


def airflow_home(settings: Settings) -> Path:
    """``AIRFLOW_HOME``: beside the login file that :class:`Settings` generates."""
    return settings.airflow_passwords_file.parent


def airflow_executable() -> Path:
    """The ``airflow`` command of the interpreter running auxcord (the project's venv)."""
    executable = Path(sys.executable).parent / "airflow"
    if not executable.is_file():
        raise StackError(
            f"Airflow: no `airflow` command beside {sys.executable}; "
            "run `pip install -e '.[local]'` (make demo does this)"
        )
    return executable


def environment(settings: Settings) -> dict[str, str]:
    """The variables every Airflow process (and so every task) runs with."""
    home = airflow_home(settings)
    url = settings.airflow_url
    return {
        **settings.as_environment(),
        # Tasks call tools of the venv (spark-submit ships in pyspark), as `airflow` itself does.
        "PATH": f"{airflow_executable().parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYSPARK_PYTHON": sys.executable,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(PARALLELISM),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(settings.port_of("airflow")),
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{settings.airflow_username}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(settings.airflow_passwords_file),
        # New DAG files show up within half a minute rather than Airflow's default five.
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        # A task's calls to the api-server: the default 5 s lost a task's start (a wasted
        # try) while Spark drivers kept a 2-core machine busy.
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
    }


def argv(component: Component) -> list[str]:
    """The command line of one Airflow process."""
    return [str(airflow_executable()), component]


def markers(component: Component, settings: Settings) -> tuple[str, ...]:
    """What the command line of our ``component`` contains. The api-server retitles itself
    ``airflow api_server -- host:… port:…`` once up; the others keep their command line."""
    own = f"{airflow_executable()} {component}"
    if component == "api-server":
        return (own, f"airflow api_server -- host:127.0.0.1 port:{settings.port_of('airflow')}")
    return (own,)


def prepare(settings: Settings, on_progress: Callable[[str], None]) -> None:
    """Before the first process starts: the login, and the metadata database's schema."""
    home = airflow_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    new_login = not settings.airflow_passwords_file.exists()
    password = settings.airflow_password_value()
    logins = json.loads(settings.airflow_passwords_file.read_text())
    if logins.get(settings.airflow_username) != password:
        # AUXCORD_AIRFLOW_PASSWORD is set: the SimpleAuthManager must accept that one.
        settings.airflow_passwords_file.write_text(
            json.dumps({**logins, settings.airflow_username: password})
        )
    settings.airflow_passwords_file.chmod(0o600)
    if new_login:
        on_progress(
            f"Airflow login: {settings.airflow_username} / {password} "
            f"(kept in {settings.airflow_passwords_file}, mode 0600)"
        )
    _migrate(settings, home)


def _migrate(settings: Settings, home: Path) -> None:
    """``airflow db migrate``, once per Airflow version (it takes several seconds)."""
    stamp = home / "migrated-version"
    installed = version("apache-airflow-core")
    if (home / "airflow.db").exists() and _read(stamp) == installed:
        return
    log_path = home.parent / "logs" / "airflow-migrate.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_handle:
        result = subprocess.run(
            [str(airflow_executable()), "db", "migrate"],
            env={**os.environ, **environment(settings)},
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            timeout=300,
            check=False,
        )
    if result.returncode != 0:
        raise StackError(f"Airflow: `airflow db migrate` failed; see {log_path}")
    stamp.write_text(installed)


def health(settings: Settings, timeout_s: float = 2.0) -> dict[str, Any]:
    """Airflow's own health report (``/api/v2/monitor/health``, no login needed)."""
    url = f"{settings.airflow_url}/api/v2/monitor/health"
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (loopback)
        report: dict[str, Any] = json.load(response)
    return report


def require_healthy(component: Component) -> Callable[[Settings], None]:
    """A readiness check: raises until Airflow reports ``component`` healthy (the
    api-server's own check is that it answers and reaches its metadata database)."""

    def check(settings: Settings) -> None:
        key = _HEALTH_KEY[component]
        status = health(settings).get(key, {}).get("status")
        if status != "healthy":
            raise StackError(f"Airflow reports {key} {status or 'unknown'}")

    return check


def _read(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text().strip()
    return ""
