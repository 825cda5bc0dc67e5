"""auxcord's settings: one object, read from ``AUXCORD_*`` environment variables and ``.env``.

Defaults point at the local stack (``auxcord stack up``), so ``make demo`` runs with no
configuration. Production changes only environment variables: a Kafka cluster, MongoDB Atlas,
real GCS and the real Spotify. See ``.env.example`` for every variable.

Settings are built on first use by :func:`get_settings`, never at import time, so tests and
the CLI can set the environment first.
"""

from __future__ import annotations

import json
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from auxcord.errors import ConfigError
from auxcord.names import Topic

ENV_PREFIX = "AUXCORD_"

SECRET_KEY_MIN_LENGTH = 32
"""Anything shorter can be guessed: the key signs session cookies and encrypts tokens."""


class SpotifyApp(BaseModel):
    """One Spotify app. Development-mode apps admit 5 users, so a group may need several."""

    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = None
    developer_account: str | None = None
    """The Spotify developer account that owns the app, whose daily quota its calls count
    against. Since 2026 each developer has one development-mode app, so by default every app
    is its own account; name one only for apps that share a developer."""

    @property
    def account_id(self) -> str:
        """The developer account this app's calls count against (the client id by default)."""
        return self.developer_account or self.client_id

    def as_json(self) -> dict[str, str | None]:
        secret = self.client_secret.get_secret_value() if self.client_secret else None
        described = {"client_id": self.client_id, "client_secret": secret}
        if self.developer_account is not None:
            described["developer_account"] = self.developer_account
        return described


class Settings(BaseSettings):
    """Every setting auxcord reads. Field ``foo_bar`` is the variable ``AUXCORD_FOO_BAR``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    env: Literal["dev", "prod"] = "dev"
    """``prod`` refuses placeholder secrets and requires https redirect URIs."""

    data_dir: Path = Path(".auxcord")
    """Local state: stack data, pid files, logs, Spark checkpoints, the dev secret key."""

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_topic_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$")
    """Prepended to every topic name, to share one Kafka cluster between deployments."""

    # MongoDB
    mongodb_uri: str = "mongodb://127.0.0.1:27117/auxcord?directConnection=true"

    # Google Cloud Storage
    gcs_bucket: str = "auxcord-raw"
    gcs_project: str = "auxcord-local"
    storage_emulator_host: str = Field(
        default="http://127.0.0.1:4443",
        validation_alias=AliasChoices("STORAGE_EMULATOR_HOST", "AUXCORD_STORAGE_EMULATOR_HOST"),
    )
    """The GCS emulator. Set ``STORAGE_EMULATOR_HOST=`` (empty) to use real GCS."""

    # Spotify
    spotify_api_base: str = "http://127.0.0.1:18800/v1"
    spotify_accounts_base: str = "http://127.0.0.1:18800"
    spotify_client_id: str = "auxcord-local"
    spotify_client_secret: SecretStr | None = None
    spotify_extra_apps: Annotated[list[SpotifyApp], NoDecode] = Field(default_factory=list)
    """More apps as JSON: ``[{"client_id": "...", "client_secret": "..."}]``."""
    spotify_redirect_uri: str = "http://127.0.0.1:8000/auth/callback"

    # Pollers
    poller_metrics_port: int = Field(default=9108, ge=0, le=65535)
    """Where ``auxcord poll`` serves Prometheus metrics (0: not at all)."""
    poller_budget: int = Field(default=150, ge=1)
    """Spotify calls per app per rolling 30 s that the pollers allow themselves."""
    poller_id: str = ""
    """This poller's lease owner name; default host:pid. A restarted poller with the same id
    takes its users back at once instead of waiting for its old leases to lapse."""
    spotify_daily_budget: int = Field(default=800, ge=10)
    """Spotify calls per rolling 24 h per developer account that the pollers allow themselves.
    Spotify refuses a development-mode account for 13 to 22 h once it passes an unpublished
    daily quota (seen between about 1,100 and 2,600 calls), so stay well under it: 800 polls
    five friends with room to spare (see the README's "Spotify's daily quota")."""
    poller_speed: float = Field(default=1.0, gt=0)
    """Spotify seconds per real second: 1 for Spotify, the simulator's --speed against it."""

    # Spark
    spark_master: str = "local[2]"
    spark_shuffle_partitions: int = Field(default=8, ge=1)
    spark_driver_memory: str = "6g"
    """A year's backfill of about a million plays ran out of a 2g heap in local mode."""
    spark_driver_java_options: str = "-XX:+UseParallelGC"
    """Extra JVM options of the Spark driver (in local mode, where all the work happens).
    The parallel collector rather than G1: on 2 cores, G1's concurrent threads took CPU from
    short jobs (a daily run 59 s with G1, 55 s without) and a backfill gained nothing."""
    spark_auth_secret: SecretStr | None = None
    """The shared secret of a standalone Spark cluster started with ``spark.authenticate``
    (docker-compose.yml does): its master and workers run only applications that hold it."""

    # Streaming
    stream_kafka_format: Literal["python", "kafka"] = "python"
    """``python``: auxcord's Kafka source (no jar needed). ``kafka``: Spark's built-in source,
    where the spark-sql-kafka jar is on the cluster's classpath."""
    stream_checkpoint_dir: str = ""
    """Spark checkpoints of ``auxcord stream``: a local path or ``gs://bucket/path``
    (default: the data dir's ``checkpoints/stream``)."""
    stream_trigger_seconds: float = Field(default=0.5, ge=0)
    """How often a micro-batch starts: short for freshness (0: as soon as the last ends)."""
    stream_tasks: int = Field(default=1, ge=1)
    """How many Spark tasks read and write one micro-batch at most. 1 suits the local MongoDB
    server, which livelocks on concurrent bulk inserts into one collection (and one task still
    overlaps reading Kafka with writing); on a cluster with MongoDB Atlas, the executor cores."""
    stream_max_rows_per_trigger: int = Field(default=50_000, ge=1)
    """The most Kafka records one micro-batch takes, so a backlog drains in bounded batches."""

    # Web
    secret_key: SecretStr | None = None
    """Signs cookies and encrypts tokens. Generated into the data dir in dev when unset (or
    empty, as ``.env.example`` copied to ``.env`` leaves it); too short is refused everywhere."""
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    admin_users: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Spotify user ids that may open the admin/health page (comma-separated), for example the
    self-hoster's own account."""
    metrics_token: SecretStr | None = None
    """When set, ``/metrics`` answers only requests with ``Authorization: Bearer <token>``
    (Prometheus' ``authorization`` scrape setting); unset or empty, it is public."""
    forwarded_allow_ips: str = "127.0.0.1"
    """Reverse proxies whose X-Forwarded-For/-Proto the web app believes (comma-separated
    addresses or networks, uvicorn's ``forwarded_allow_ips``); empty: none. Anyone else's
    headers are ignored, so a client cannot pick the address its sign-in attempts and open
    live feeds count to."""

    # Airflow
    airflow_url: str = "http://127.0.0.1:8080"
    """Airflow's api-server (its UI and REST API); the local stack serves it on this port."""
    airflow_username: str = "admin"
    airflow_password: SecretStr | None = None
    """Airflow's password for ``airflow_username``: in dev, generated once into the data dir."""
    airflow_retry_delay_s: float = Field(default=300, ge=0)
    """How long a failed batch task waits before each of its (two) retries."""

    @field_validator("kafka_bootstrap")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return value

    @field_validator("mongodb_uri")
    @classmethod
    def _check_mongodb_uri(cls, value: str) -> str:
        if not value.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError("must start with mongodb:// or mongodb+srv://")
        return value

    @field_validator(
        "spotify_api_base", "spotify_accounts_base", "storage_emulator_host", "airflow_url"
    )
    @classmethod
    def _check_url(cls, value: str) -> str:
        if value == "":
            return value
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError(f"expected an http(s) URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("spotify_extra_apps", mode="before")
    @classmethod
    def _parse_apps(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value) if value.strip() else []
            except json.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON ({exc.msg})") from exc
        return value

    @field_validator("admin_users", mode="before")
    @classmethod
    def _parse_admins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [user.strip() for user in value.split(",") if user.strip()]
        return value

    @field_validator("secret_key", "metrics_token", "spark_auth_secret", mode="before")
    @classmethod
    def _empty_secret_is_unset(cls, value: Any) -> Any:
        # An empty value (as .env.example copied to .env leaves it) is unset, never the secret
        # "": HMAC and HKDF accept "", and anyone could then sign a session cookie for any user
        # and decrypt every stored token.
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        return None if isinstance(raw, str) and not raw.strip() else value

    @field_validator("secret_key", "spark_auth_secret")
    @classmethod
    def _check_secret_key(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        key = value.get_secret_value() if value is not None else None
        variable = ENV_PREFIX + str(info.field_name).upper()
        if key is not None and (problem := weak_secret_key(key, variable)):
            raise ValueError(problem)
        return value

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _check_prod(self) -> Settings:
        if self.env != "prod":
            return self
        if self.secret_key is None:
            raise ValueError(
                f"AUXCORD_SECRET_KEY: in prod it must be set to a random value of "
                f"{SECRET_KEY_MIN_LENGTH}+ characters"
            )
        if not self.spotify_redirect_uri.startswith("https://"):
            raise ValueError("AUXCORD_SPOTIFY_REDIRECT_URI: in prod it must be an https URL")
        return self

    # Derived values: computed, never configured twice.

    def as_environment(self) -> dict[str, str]:
        """These settings as the environment variables that recreate them in a subprocess."""
        environment = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if value is None:
                continue
            choices = getattr(field.validation_alias, "choices", None)
            variable = str(choices[0]) if choices else ENV_PREFIX + name.upper()
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif name == "admin_users":
                value = ",".join(value)
            elif isinstance(value, list):
                value = json.dumps([app.as_json() for app in value])
            environment[variable] = str(value)
        return environment

    def topic(self, topic: Topic) -> str:
        """The Kafka topic name for ``topic`` in this deployment."""
        return f"{self.kafka_topic_prefix}{topic}"

    @property
    def mongodb_database(self) -> str:
        """The database named in the URI's path, ``auxcord`` when the URI names none."""
        path = urlsplit(self.mongodb_uri).path.strip("/")
        return path or "auxcord"

    @property
    def spotify_apps(self) -> list[SpotifyApp]:
        """Every configured Spotify app, the primary one first."""
        primary = SpotifyApp(
            client_id=self.spotify_client_id, client_secret=self.spotify_client_secret
        )
        return [primary, *self.spotify_extra_apps]

    def developer_account_of(self, client_id: str) -> str:
        """The developer account whose daily quota ``client_id``'s calls count against (a
        client id no longer configured, for a user linked through a removed app, is its own)."""
        for app in self.spotify_apps:
            if app.client_id == client_id:
                return app.account_id
        return client_id

    def port_of(self, service: Literal["kafka", "mongodb", "gcs", "airflow"]) -> int:
        """The loopback port the local stack serves ``service`` on, read from its URL."""
        if service == "kafka":
            return int(self.kafka_bootstrap.split(",")[0].rpartition(":")[2])
        url = {
            "mongodb": self.mongodb_uri,
            "gcs": self.storage_emulator_host,
            "airflow": self.airflow_url,
        }[service]
        port = urlsplit(url).port
        if port is None:
            raise ConfigError(f"{service}: the URL {url!r} names no port for the local stack")
        return port

    @property
    def stream_checkpoint(self) -> str:
        """Where the streaming job keeps its checkpoint."""
        return self.stream_checkpoint_dir or str(self.data_dir / "checkpoints" / "stream")

    @property
    def airflow_passwords_file(self) -> Path:
        """Airflow's logins as its SimpleAuthManager reads them (``{user: password}``)."""
        return self.data_dir / "stack" / "airflow" / "passwords.json"

    def airflow_password_value(self) -> str:
        """Airflow's password; in dev, one generated once into the data dir (mode 0600)."""
        if self.airflow_password is not None and self.airflow_password.get_secret_value():
            return self.airflow_password.get_secret_value()
        if self.env == "prod":
            raise ConfigError("AUXCORD_AIRFLOW_PASSWORD: required in prod")
        path = self.airflow_passwords_file
        logins: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        if self.airflow_username not in logins:
            logins[self.airflow_username] = secrets.token_urlsafe(18)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(json.dumps(logins))
        return logins[self.airflow_username]

    def secret_key_value(self) -> str:
        """The secret key; in dev, one generated once and kept in the data dir (mode 0600)."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        if self.env == "prod":
            raise ConfigError("AUXCORD_SECRET_KEY: required in prod")
        path = self.data_dir / "secret.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(48))
        key = path.read_text().strip()
        # A file left empty by a crash between creating and writing it must not become "".
        if problem := weak_secret_key(key, str(path)):
            raise ConfigError(f"{problem} (delete the file to generate a new key)")
        return key


def weak_secret_key(key: str, source: str) -> str | None:
    """Why ``key`` (read from ``source``) must not be used, or None: too short to resist
    guessing (every pasted placeholder is), or one character repeated."""
    if len(key.strip()) < SECRET_KEY_MIN_LENGTH or len(set(key)) < 8:
        return (
            f"{source}: must be a random value of {SECRET_KEY_MIN_LENGTH}+ characters, e.g. "
            "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )
    return None


def _describe(error: ValidationError) -> str:
    """One line naming the environment variable behind the first failing field."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "settings"
    message = first["msg"].removeprefix("Value error, ")
    if message.startswith(ENV_PREFIX):
        return message
    name = field.split(".")[0]
    # A field read through an alias (STORAGE_EMULATOR_HOST) is reported under that alias.
    variable = name if name not in Settings.model_fields else ENV_PREFIX + name.upper()
    return f"{variable}: {message}"


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment (and ``overrides``), raising :class:`ConfigError`."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, built on first call."""
    return load_settings()
