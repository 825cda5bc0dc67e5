"""A stopped or refusing MongoDB, Kafka or GCS is one red line (what failed, where, what to
check) and exit code 1, never a traceback, and never a password.

The translation is checked on the libraries' own exception objects (no server needed), on real
clients pointed at loopback ports where nothing listens, and on real CLI commands.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from google.api_core import exceptions as google_errors
from kafka import errors as kafka_errors
from pymongo import errors as mongo_errors

from auxcord.clients import (
    gcs_bucket,
    kafka_admin,
    mongo_client,
    mongo_database,
    redact,
    service_error,
    service_errors,
)
from auxcord.errors import (
    AuxcordError,
    ConfigError,
    ServiceAccessDenied,
    ServiceError,
    ServiceUnavailable,
)
from auxcord.settings import Settings, load_settings
from devtools.stack import free_port

PASSWORD = "hunter2-secret"


def away(tmp_path: Path, **overrides: object) -> Settings:
    """Settings whose MongoDB, Kafka and GCS are loopback ports where nothing listens, with a
    password in the MongoDB URI and a short server-selection timeout."""
    port = free_port()
    return load_settings(
        data_dir=tmp_path,
        mongodb_uri=f"mongodb://auxcord:{PASSWORD}@127.0.0.1:{port}/auxcord"
        "?directConnection=true&serverSelectionTimeoutMS=300",
        kafka_bootstrap=f"127.0.0.1:{port}",
        storage_emulator_host=f"http://127.0.0.1:{port}",
        **overrides,
    )


def refused_selection(port: int) -> mongo_errors.ServerSelectionTimeoutError:
    """What pymongo raises when nothing listens, message and all."""
    return mongo_errors.ServerSelectionTimeoutError(
        f"127.0.0.1:{port}: [Errno 111] Connection refused (configured timeouts: "
        "socketTimeoutMS: 20000.0ms, connectTimeoutMS: 20000.0ms), Timeout: 5.0s, Topology "
        f"Description: <TopologyDescription id: 1, topology_type: Single, servers: [...]>"
    )


# The translation, on the libraries' exceptions ----------------------------------------------


def test_redact_hides_the_credentials_of_every_url() -> None:
    text = f"mongodb://auxcord:{PASSWORD}@db:27017/x and https://k:s@h/ and http://plain/"
    assert redact(text) == "mongodb://***@db:27017/x and https://***@h/ and http://plain/"


def test_an_unreachable_mongodb_is_named_with_where_and_what_to_check(tmp_path: Path) -> None:
    settings = away(tmp_path)
    port = settings.port_of("mongodb")
    error = service_error(refused_selection(port), settings)
    assert isinstance(error, ServiceUnavailable)
    assert str(error) == (
        f"MongoDB at 127.0.0.1:{port} does not answer (Connection refused); is the local "
        "stack running (`auxcord stack up`)? Check AUXCORD_MONGODB_URI"
    )
    assert PASSWORD not in str(error) and "\n" not in str(error)


def test_a_remote_server_is_not_sent_to_the_local_stack(tmp_path: Path) -> None:
    uri = f"mongodb+srv://auxcord:{PASSWORD}@cluster0.example.net/auxcord"
    settings = load_settings(data_dir=tmp_path, mongodb_uri=uri)
    error = service_error(
        mongo_errors.AutoReconnect("shard-00.example.net:27017: timed out"), settings
    )
    assert isinstance(error, ServiceUnavailable)
    assert "MongoDB at cluster0.example.net does not answer (timed out)" in str(error)
    assert "stack up" not in str(error) and "reachable from here" in str(error)
    assert PASSWORD not in str(error)


def test_refused_credentials_and_bad_uris_are_named_too(tmp_path: Path) -> None:
    settings = away(tmp_path)
    denied = mongo_errors.OperationFailure("Authentication failed.", code=18)
    error = service_error(denied, settings)
    assert isinstance(error, ServiceAccessDenied)
    assert "refused us (Authentication failed.)" in str(error)
    assert "user and password in AUXCORD_MONGODB_URI" in str(error)
    bad_uri = mongo_errors.ConfigurationError("The DNS query name does not exist: _mongodb.x.")
    assert isinstance(service_error(bad_uri, settings), ConfigError)


def test_bugs_keep_their_traceback(tmp_path: Path) -> None:
    settings = away(tmp_path)
    assert service_error(mongo_errors.DuplicateKeyError("E11000", code=11000), settings) is None
    assert service_error(mongo_errors.OperationFailure("bad $match", code=2), settings) is None
    assert service_error(ValueError("a bug"), settings) is None
    assert service_error(AuxcordError("already one line"), settings) is None
    # A connection error of requests to a server other than GCS is not GCS's.
    elsewhere = requests.ConnectionError(
        "refused", request=requests.Request("GET", "http://127.0.0.1:1/x").prepare()
    )
    assert service_error(elsewhere, settings) is None


def test_kafka_errors_are_translated(tmp_path: Path) -> None:
    settings = away(tmp_path)
    bootstrap = settings.kafka_bootstrap
    error = service_error(
        kafka_errors.KafkaTimeoutError(f"Unable to bootstrap from ['{bootstrap}']"), settings
    )
    assert isinstance(error, ServiceUnavailable)
    assert str(error).startswith(f"Kafka at {bootstrap} does not answer (Unable to bootstrap")
    assert str(error).endswith("Check AUXCORD_KAFKA_BOOTSTRAP")
    denied = service_error(kafka_errors.TopicAuthorizationFailedError(), settings)
    assert isinstance(denied, ServiceAccessDenied)
    assert "broker's ACLs" in str(denied)


def test_gcs_errors_are_translated(tmp_path: Path) -> None:
    settings = away(tmp_path)
    emulator = settings.storage_emulator_host
    refused = requests.ConnectionError(
        "Max retries exceeded (Caused by NewConnectionError('[Errno 111] Connection refused'))",
        request=requests.Request("GET", f"{emulator}/storage/v1/b/auxcord-raw").prepare(),
    )
    retried = google_errors.RetryError("Timeout of 120.0s exceeded", refused)  # type: ignore[no-untyped-call]
    for raised in (refused, retried):
        error = service_error(raised, settings)
        assert isinstance(error, ServiceUnavailable)
        assert str(error).startswith(f"GCS at {emulator} does not answer (Connection refused)")
        assert "STORAGE_EMULATOR_HOST" in str(error)
    denied = service_error(
        google_errors.Forbidden("no storage.buckets.get"),  # type: ignore[no-untyped-call]
        settings,
    )
    assert isinstance(denied, ServiceAccessDenied)
    assert "GOOGLE_APPLICATION_CREDENTIALS" in str(denied)


def test_the_boundary_follows_chains_and_keeps_the_original(tmp_path: Path) -> None:
    settings = away(tmp_path)
    original = refused_selection(settings.port_of("mongodb"))
    with pytest.raises(ServiceUnavailable) as caught, service_errors(lambda: settings):
        try:
            raise original
        except mongo_errors.PyMongoError as exc:
            raise RuntimeError("while storing a batch") from exc
    assert caught.value.__cause__ is not None
    assert caught.value.__cause__.__cause__ is original
    with pytest.raises(KeyError), service_errors(settings):
        raise KeyError("a bug")


def test_a_timeout_in_the_uri_wins_over_the_default(tmp_path: Path) -> None:
    with mongo_client(away(tmp_path)) as client:
        assert client.options.server_selection_timeout == 0.3
    with mongo_client(load_settings(data_dir=tmp_path)) as client:
        assert client.options.server_selection_timeout == 5.0


# Real clients, nothing listening -------------------------------------------------------------


def test_real_clients_against_closed_ports(tmp_path: Path) -> None:
    settings = away(tmp_path)
    with (
        pytest.raises(ServiceUnavailable, match=r"^MongoDB at .* does not answer"),
        service_errors(settings),
    ):
        mongo_database(settings).command("ping")
    with (
        pytest.raises(ServiceUnavailable, match=r"^Kafka at .* does not answer"),
        service_errors(settings),
    ):
        kafka_admin(settings, bootstrap_timeout_ms=300)
    with (
        pytest.raises(ServiceUnavailable, match=r"^GCS at .* does not answer"),
        service_errors(settings),
    ):
        gcs_bucket(settings).exists(retry=None, timeout=2)


# Real commands -------------------------------------------------------------------------------


def run_cli(environment: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``auxcord *args`` in a child process that sees only ``environment``'s auxcord settings."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("AUXCORD_") and name != "STORAGE_EMULATOR_HOST"
    }
    return subprocess.run(
        [sys.executable, "-c", "from cli.main import main; main()", *args],
        env={**inherited, **environment},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_one_red_line(result: subprocess.CompletedProcess[str], starts: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    assert PASSWORD not in output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert errors[0].startswith(f"error: {starts}"), output


def export_file(tmp_path: Path) -> Path:
    path = tmp_path / "Streaming_History_Audio_2026.json"
    path.write_text(
        '[{"ts": "2026-11-01T10:00:00Z", "ms_played": 200000, '
        '"master_metadata_track_name": "Song", "master_metadata_album_artist_name": "Artist", '
        '"spotify_track_uri": "spotify:track:0000000000000000000001"}]'
    )
    return path


@pytest.mark.parametrize(
    "command",
    [
        # backfill shares aggregate's path (analytics.cli._run), so it is not run again here.
        ["aggregate", "--date", "2026-11-01"],
        ["recommend"],
        ["import", "EXPORT", "--user", "someone", "--no-aggregate"],
        ["poll", "--once"],
    ],
    ids=lambda command: command[0],
)
def test_commands_with_mongodb_stopped_print_one_line(tmp_path: Path, command: list[str]) -> None:
    settings = away(tmp_path)
    args = [str(export_file(tmp_path)) if arg == "EXPORT" else arg for arg in command]
    result = run_cli(settings.as_environment(), tmp_path, *args)
    port = settings.port_of("mongodb")
    assert_one_red_line(result, f"MongoDB at 127.0.0.1:{port} does not answer")
    assert result.stderr.rstrip().endswith("Check AUXCORD_MONGODB_URI"), result.stderr


@pytest.mark.stack
def test_provision_with_mongodb_stopped_prints_one_line(
    stack_settings: Settings, tmp_path: Path
) -> None:
    """Kafka and GCS answer (the test stack's); MongoDB, provisioned last, does not."""
    port = free_port()
    settings = stack_settings.model_copy(
        update={
            "data_dir": tmp_path,
            "mongodb_uri": f"mongodb://auxcord:{PASSWORD}@127.0.0.1:{port}/auxcord"
            "?directConnection=true&serverSelectionTimeoutMS=300",
        }
    )
    result = run_cli(settings.as_environment(), tmp_path, "provision")
    assert "GCS bucket" in result.stdout, result.stdout + result.stderr
    assert_one_red_line(result, f"MongoDB at 127.0.0.1:{port} does not answer")


def test_service_errors_are_auxcord_errors() -> None:
    assert issubclass(ServiceUnavailable, ServiceError)
    assert issubclass(ServiceAccessDenied, ServiceError)
    assert issubclass(ServiceError, AuxcordError)
