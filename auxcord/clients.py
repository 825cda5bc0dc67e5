"""Clients for Kafka, MongoDB and GCS, configured from settings alone.

The same functions serve the local stack and production (a Kafka cluster, MongoDB Atlas, real
GCS): only the settings differ. Library imports stay inside the functions so importing auxcord
stays cheap for the CLI and Airflow's DAG parser.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from auxcord.errors import (
    AuxcordError,
    ConfigError,
    ServiceAccessDenied,
    ServiceUnavailable,
)
from auxcord.names import Topic
from auxcord.settings import Settings

if TYPE_CHECKING:
    from google.cloud.storage import Bucket
    from google.cloud.storage import Client as GcsClient
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient
    from pymongo import MongoClient
    from pymongo.database import Database


def mongo_client(settings: Settings, **options: Any) -> MongoClient[dict[str, Any]]:
    """A MongoClient for ``settings.mongodb_uri``, failing fast when the server is away."""
    from pymongo import MongoClient

    # A timeout in the URI wins over our default (keyword arguments would override it).
    if "serverselectiontimeoutms=" not in settings.mongodb_uri.lower():
        options.setdefault("serverSelectionTimeoutMS", 5_000)
    options.setdefault("tz_aware", True)
    return MongoClient(settings.mongodb_uri, **options)


_shared_clients: dict[tuple[int, str], MongoClient[dict[str, Any]]] = {}
_shared_lock = threading.Lock()


def shared_mongo_client(settings: Settings) -> MongoClient[dict[str, Any]]:
    """The process's one MongoClient for ``settings.mongodb_uri``, opened on first use.

    A MongoClient is a thread-safe connection pool with monitor threads of its own: opening one
    per call (a poller's round, an import's 0.5 s status check) leaked clients and threads.
    Keyed by process too, since a client must not cross a fork (Spark's Python workers).
    Callers never close it, and neither does an exit handler: closing ends the server's
    sessions, which waits out the server-selection timeout per client when the server is
    already gone (a test run's stack), while the exiting process frees its sockets anyway.
    """
    key = (os.getpid(), settings.mongodb_uri)
    with _shared_lock:
        client = _shared_clients.get(key)
        if client is None:
            client = _shared_clients[key] = mongo_client(settings)
    return client


def mongo_database(
    settings: Settings, client: MongoClient[dict[str, Any]] | None = None
) -> Database[dict[str, Any]]:
    """The auxcord database, named by the URI's path, on ``client`` or the shared one."""
    return (client or shared_mongo_client(settings))[settings.mongodb_database]


def _kafka_common(settings: Settings) -> dict[str, Any]:
    return {
        "bootstrap_servers": settings.kafka_bootstrap.split(","),
        "security_protocol": settings.kafka_security_protocol,
    }


def kafka_producer(settings: Settings, **options: Any) -> KafkaProducer:
    """An idempotent producer that waits for all in-sync replicas: no lost or doubled sends."""
    from kafka import KafkaProducer

    config: dict[str, Any] = {
        **_kafka_common(settings),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "compression_type": "gzip",
    }
    config.update(options)
    return KafkaProducer(**config)


def kafka_consumer(settings: Settings, *topics: str, **options: Any) -> KafkaConsumer:
    """A consumer of ``topics``; joining a group is quick thanks to a short session timeout."""
    from kafka import KafkaConsumer

    config: dict[str, Any] = {
        **_kafka_common(settings),
        # Tansu takes about session_timeout_ms / 2 to let a member join (platform-facts).
        "session_timeout_ms": 6_000,
        "heartbeat_interval_ms": 2_000,
        "auto_offset_reset": "earliest",
        "enable_auto_commit": False,
    }
    config.update(options)
    return KafkaConsumer(*topics, **config)


def kafka_admin(settings: Settings, **options: Any) -> KafkaAdminClient:
    from kafka.admin import KafkaAdminClient

    config: dict[str, Any] = {**_kafka_common(settings), "request_timeout_ms": 10_000}
    config.update(options)
    return KafkaAdminClient(**config)


def ensure_topics(settings: Settings, topics: tuple[Topic, ...] = tuple(Topic)) -> list[str]:
    """Create auxcord's topics with their explicit partition counts; returns those created.

    Tansu gives auto-created topics 4 partitions whatever we need, so every topic is created
    here, up front.
    """
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = kafka_admin(settings)
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(
                name=settings.topic(topic), num_partitions=topic.partitions, replication_factor=1
            )
            for topic in topics
            if settings.topic(topic) not in existing
        ]
        if wanted:
            # Another process may create them between our listing and our request.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(wanted)
        return [topic.name for topic in wanted]
    finally:
        admin.close()


def gcs_client(settings: Settings) -> GcsClient:
    """A GCS client: the emulator when ``STORAGE_EMULATOR_HOST`` is set, real GCS otherwise."""
    from google.cloud import storage

    if settings.storage_emulator_host:
        from google.auth.credentials import AnonymousCredentials

        # google-cloud-storage reads the emulator address from the environment, not arguments.
        os.environ["STORAGE_EMULATOR_HOST"] = settings.storage_emulator_host
        anonymous = AnonymousCredentials()  # type: ignore[no-untyped-call]
        return storage.Client(project=settings.gcs_project, credentials=anonymous)
    return storage.Client(project=settings.gcs_project)


def gcs_bucket(settings: Settings, client: GcsClient | None = None) -> Bucket:
    """The raw-data bucket (not fetched: no request is made until it is used)."""
    return (client or gcs_client(settings)).bucket(settings.gcs_bucket)


def ensure_bucket(settings: Settings) -> bool:
    """Create the raw-data bucket if it is missing; returns whether it was created."""
    from google.api_core.exceptions import Conflict

    client = gcs_client(settings)
    if client.lookup_bucket(settings.gcs_bucket) is not None:
        return False
    try:
        client.create_bucket(settings.gcs_bucket)
    except Conflict:
        return False
    return True


# Library errors become one line -------------------------------------------------------------
#
# Recognised by the names of their classes (and bases) in the libraries' error modules, so that
# neither this module nor the CLI imports pymongo, kafka-python or google-cloud-storage to
# translate what they raise; kafka-python's names also differ between its versions.

_MONGO_DOWN = frozenset({"ConnectionFailure"})  # ServerSelectionTimeout, AutoReconnect, ...
_MONGO_CONFIG = frozenset({"ConfigurationError"})  # InvalidURI, an SRV name that resolves not
_MONGO_DENIED_CODES = frozenset({13, 18, 8000})  # Unauthorized, AuthenticationFailed, Atlas's
_KAFKA_DOWN = frozenset(
    {
        "NoBrokersAvailable",
        "KafkaConnectionError",
        "KafkaTimeoutError",
        "RequestTimedOutError",
        "BrokerNotAvailableError",
        "NodeNotReadyError",
    }
)
_KAFKA_DENIED = frozenset(
    {"AuthorizationError", "AuthenticationFailedError", "SaslAuthenticationFailedError"}
)
_GCS_DOWN = frozenset({"ServiceUnavailable", "GatewayTimeout", "RetryError", "TransportError"})
_GCS_DENIED = frozenset({"Unauthorized", "Forbidden", "RefreshError", "DefaultCredentialsError"})
_HTTP_DOWN = frozenset({"ConnectionError", "Timeout"})


def redact(text: str) -> str:
    """``text`` with the user and password of every URL in it replaced by ``***``."""
    return re.sub(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@", r"\1***@", text)


def _error_names(exc: BaseException, module: str) -> set[str]:
    return {kind.__name__ for kind in type(exc).__mro__ if kind.__module__ == module}


def _reason(exc: BaseException) -> str:
    """What went wrong, in a few words: the OS error when there is one, else the first clause
    of the library's message (pymongo appends its whole topology)."""
    text = redact(str(exc))
    errno = re.search(r"\[Errno -?\d+\] ([^'\"()\[\],]+)", text)
    if errno:
        return errno.group(1).strip()
    text = text.strip().splitlines()[0] if text.strip() else ""
    for cut in (", Timeout:", " (configured timeouts", ", full error:"):
        text = text.split(cut, 1)[0]
    text = re.sub(r"^\S+:\d+: ", "", text).strip()  # pymongo's "host:port: " prefix
    text = re.sub(r"^[A-Za-z]+(Error|Exception): ", "", text)  # kafka-python's class name
    if len(text) > 160:
        text = text[:157] + "..."
    return text or type(exc).__name__


def _is_loopback(url_or_host: str) -> bool:
    host = urlsplit(url_or_host if "//" in url_or_host else f"//{url_or_host}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _unavailable_hint(endpoint: str, variable: str) -> str:
    if _is_loopback(endpoint):
        return f"is the local stack running (`auxcord stack up`)? Check {variable}"
    return f"is it up and reachable from here? Check {variable}"


def mongo_endpoint(settings: Settings) -> str:
    """The hosts of ``settings.mongodb_uri``, without its credentials or options."""
    return urlsplit(settings.mongodb_uri).netloc.rpartition("@")[2]


def kafka_endpoint(settings: Settings) -> str:
    return redact(settings.kafka_bootstrap)


def gcs_endpoint(settings: Settings) -> str:
    if settings.storage_emulator_host:
        return redact(settings.storage_emulator_host)
    return "https://storage.googleapis.com"


def _mongo_error(exc: BaseException, settings: Settings) -> AuxcordError | None:
    names = _error_names(exc, "pymongo.errors")
    if not names:
        return None
    endpoint, variable = mongo_endpoint(settings), "AUXCORD_MONGODB_URI"
    if names & _MONGO_DOWN:
        hint = _unavailable_hint(endpoint, variable)
        return ServiceUnavailable("MongoDB", endpoint, f"does not answer ({_reason(exc)})", hint)
    if names & _MONGO_CONFIG:
        return ConfigError(f"{variable}: {_reason(exc)}")
    if "OperationFailure" in names and getattr(exc, "code", None) in _MONGO_DENIED_CODES:
        return ServiceAccessDenied(
            "MongoDB",
            endpoint,
            f"refused us ({_reason(exc)})",
            f"check the user and password in {variable} and the user's roles",
        )
    return None


def _kafka_error(exc: BaseException, settings: Settings) -> AuxcordError | None:
    names = _error_names(exc, "kafka.errors")
    endpoint, variable = kafka_endpoint(settings), "AUXCORD_KAFKA_BOOTSTRAP"
    if names & _KAFKA_DOWN:
        hint = _unavailable_hint(endpoint, variable)
        return ServiceUnavailable("Kafka", endpoint, f"does not answer ({_reason(exc)})", hint)
    if names & _KAFKA_DENIED:
        return ServiceAccessDenied(
            "Kafka",
            endpoint,
            f"refused us ({_reason(exc)})",
            "check AUXCORD_KAFKA_SECURITY_PROTOCOL, the credentials and the broker's ACLs",
        )
    return None


def _gcs_error(exc: BaseException, settings: Settings) -> AuxcordError | None:
    names = _error_names(exc, "google.api_core.exceptions") | _error_names(
        exc, "google.auth.exceptions"
    )
    endpoint = gcs_endpoint(settings)
    if names & _GCS_DENIED:
        return ServiceAccessDenied(
            "GCS",
            endpoint,
            f"refused us ({_reason(exc)})",
            "check the Google credentials (GOOGLE_APPLICATION_CREDENTIALS) and their "
            f"permissions on the bucket {settings.gcs_bucket}",
        )
    if not names & _GCS_DOWN and not _is_gcs_request_error(exc, settings):
        return None
    cause = getattr(exc, "cause", None) or exc.__cause__  # RetryError keeps the last attempt's
    reason = _reason(cause if isinstance(cause, BaseException) else exc)
    hint = _unavailable_hint(endpoint, "STORAGE_EMULATOR_HOST (empty for real GCS)")
    return ServiceUnavailable("GCS", endpoint, f"does not answer ({reason})", hint)


def _is_gcs_request_error(exc: BaseException, settings: Settings) -> bool:
    """A connection error of ``requests`` (google-cloud-storage's HTTP library) on a request
    to GCS or its emulator, not to some other server."""
    if not _error_names(exc, "requests.exceptions") & _HTTP_DOWN:
        return False
    url = str(getattr(getattr(exc, "request", None), "url", None) or "")
    host = urlsplit(url).netloc.rpartition("@")[2]
    if settings.storage_emulator_host:
        return host == urlsplit(settings.storage_emulator_host).netloc.rpartition("@")[2]
    return host.endswith("googleapis.com")


def service_error(exc: BaseException, settings: Settings) -> AuxcordError | None:
    """The one-line auxcord error for a MongoDB, Kafka or GCS failure the user must act on
    (the server is away or refuses our credentials), or None when ``exc`` is something else,
    a bug, which keeps its traceback. Follows ``raise ... from`` chains."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, AuxcordError):
            return None
        for translate in (_mongo_error, _kafka_error, _gcs_error):
            translated = translate(current, settings)
            if translated is not None:
                return translated
        current = current.__cause__
    return None


@contextlib.contextmanager
def service_errors(settings: Settings | Callable[[], Settings]) -> Iterator[None]:
    """Re-raise MongoDB, Kafka and GCS failures inside the block as a ``ServiceError``
    (or :class:`ConfigError`), chained to the original. For the boundaries: a CLI command, a
    DAG task, the web app's lifespan. ``settings`` may be a function, called only on failure."""
    try:
        yield
    except AuxcordError:
        raise
    except Exception as exc:
        translated = service_error(exc, settings() if callable(settings) else settings)
        if translated is None:
            raise
        raise translated from exc
