"""Settings: local-stack defaults, and one clear line naming the variable when one is wrong."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from auxcord.errors import ConfigError
from auxcord.settings import SECRET_KEY_MIN_LENGTH, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("AUXCORD_") or name == "STORAGE_EMULATOR_HOST":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_point_at_the_local_stack() -> None:
    settings = load_settings()
    assert settings.kafka_bootstrap == "127.0.0.1:19092"
    assert settings.mongodb_database == "auxcord"
    assert settings.port_of("mongodb") == 27117
    assert settings.storage_emulator_host.startswith("http://127.0.0.1:")
    assert settings.spotify_apps[0].client_id == "auxcord-local"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AUXCORD_KAFKA_BOOTSTRAP", "localhost"),
        ("AUXCORD_MONGODB_URI", "postgres://x"),
        ("AUXCORD_SPOTIFY_API_BASE", "ftp://api"),
        ("AUXCORD_API_PORT", "eighty"),
        ("AUXCORD_SPOTIFY_EXTRA_APPS", "[{not json"),
        ("STORAGE_EMULATOR_HOST", "127.0.0.1:4443"),
    ],
)
def test_malformed_setting_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value).startswith(f"{variable}: ")
    assert "\n" not in str(caught.value)


def test_prod_refuses_a_placeholder_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUXCORD_ENV", "prod")
    monkeypatch.setenv("AUXCORD_SECRET_KEY", "change-me")
    monkeypatch.setenv("AUXCORD_SPOTIFY_REDIRECT_URI", "https://aux.example.org/auth/callback")
    with pytest.raises(ConfigError, match=r"^AUXCORD_SECRET_KEY: "):
        load_settings()


def test_prod_requires_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUXCORD_ENV", "prod")
    monkeypatch.setenv("AUXCORD_SPOTIFY_REDIRECT_URI", "https://aux.example.org/auth/callback")
    with pytest.raises(ConfigError, match=r"^AUXCORD_SECRET_KEY: "):
        load_settings()


def test_env_example_copied_to_dotenv_runs_on_a_generated_key(tmp_path: Path) -> None:
    # .env.example leaves AUXCORD_SECRET_KEY= empty; copied to .env, that must mean "unset"
    # (a generated key), never the key "" that anyone can sign session cookies with.
    example = (Path(__file__).resolve().parent.parent / ".env.example").read_text()
    assert "\nAUXCORD_SECRET_KEY=\n" in example
    (tmp_path / ".env").write_text(example)
    settings = load_settings()
    assert settings.secret_key is None
    assert len(settings.secret_key_value()) >= SECRET_KEY_MIN_LENGTH
    assert settings.secret_key_value() == (settings.data_dir / "secret.key").read_text()


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_secret_is_unset(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("AUXCORD_SECRET_KEY", value)
    assert load_settings().secret_key is None


@pytest.mark.parametrize("environment", ["dev", "prod"])
@pytest.mark.parametrize("value", ["change-me", "s" * 31, "x" * 64])
def test_a_weak_secret_is_refused_in_every_mode(
    monkeypatch: pytest.MonkeyPatch, environment: str, value: str
) -> None:
    monkeypatch.setenv("AUXCORD_ENV", environment)
    monkeypatch.setenv("AUXCORD_SECRET_KEY", value)
    monkeypatch.setenv("AUXCORD_SPOTIFY_REDIRECT_URI", "https://aux.example.org/auth/callback")
    with pytest.raises(ConfigError, match=r"^AUXCORD_SECRET_KEY: .*32\+ characters"):
        load_settings()


def test_the_spark_secret_follows_the_same_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUXCORD_SPARK_AUTH_SECRET", "")
    assert load_settings().spark_auth_secret is None
    monkeypatch.setenv("AUXCORD_SPARK_AUTH_SECRET", "spark")
    with pytest.raises(ConfigError, match=r"^AUXCORD_SPARK_AUTH_SECRET: .*32\+ characters"):
        load_settings()


def test_a_long_random_secret_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    key = secrets.token_urlsafe(32)
    monkeypatch.setenv("AUXCORD_SECRET_KEY", key)
    assert load_settings().secret_key_value() == key


def test_an_empty_generated_key_file_is_refused(tmp_path: Path) -> None:
    # A crash between creating secret.key and writing it leaves it empty.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "secret.key").write_text("")
    with pytest.raises(ConfigError, match=r"secret\.key: must be a random value"):
        load_settings(data_dir=tmp_path / "data").secret_key_value()


def test_extra_apps_parse_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AUXCORD_SPOTIFY_EXTRA_APPS", '[{"client_id": "second", "client_secret": "s3cr3t"}]'
    )
    apps = load_settings().spotify_apps
    assert [app.client_id for app in apps] == ["auxcord-local", "second"]
    assert "s3cr3t" not in repr(apps)


def test_dev_secret_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    first = settings.secret_key_value()
    assert len(first) >= 32
    assert load_settings(data_dir=tmp_path / "data").secret_key_value() == first
    assert (tmp_path / "data" / "secret.key").stat().st_mode & 0o077 == 0


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("AUXCORD_GCS_BUCKET=from-dotenv\n")
    assert load_settings().gcs_bucket == "from-dotenv"


def test_cli_reports_a_bad_setting_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUXCORD_MONGODB_URI", "nonsense")
    result = subprocess.run(
        [sys.executable, "-c", "from cli.main import main; main()", "stack", "status"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "AUXCORD_MONGODB_URI: must start with mongodb://" in result.stderr
    assert "Traceback" not in result.stderr
