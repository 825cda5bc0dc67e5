"""Clients for Kafka, MongoDB and GCS, configured from settings alone.

The same functions serve the local stack and production (a Kafka cluster, MongoDB Atlas, real
GCS): only the settings differ. Library imports stay inside the functions so importing auxcord
stays cheap for the CLI and Airflow's DAG parser.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import TYPE_CHECKING, Any

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


def kafka_admin(settings: Settings) -> KafkaAdminClient:
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(**_kafka_common(settings), request_timeout_ms=10_000)


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
