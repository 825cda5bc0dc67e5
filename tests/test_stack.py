"""The local stack with real clients: Kafka, MongoDB and GCS answer, keep data, stop cleanly."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from google.api_core.exceptions import PreconditionFailed
from pymongo.errors import DuplicateKeyError

from auxcord.clients import gcs_bucket, kafka_consumer, kafka_producer, mongo_client, mongo_database
from auxcord.errors import StackError
from auxcord.names import Topic
from auxcord.settings import Settings
from devtools.stack import LocalStack, settings_on_free_ports
from tests.conftest import environment_of

pytestmark = pytest.mark.stack


def test_kafka_round_trips_keyed_messages(stack_settings: Settings) -> None:
    topic = f"test-{uuid.uuid4().hex[:8]}"
    producer = kafka_producer(stack_settings)
    sent = {f"user-{n % 3}".encode(): [] for n in range(3)}  # type: dict[bytes, list[bytes]]
    for n in range(30):
        key, value = f"user-{n % 3}".encode(), f"play-{n}".encode()
        producer.send(topic, key=key, value=value).get(timeout=10)
        sent[key].append(value)
    producer.close()

    consumer = kafka_consumer(stack_settings, topic, consumer_timeout_ms=5_000)
    received: dict[bytes, list[bytes]] = {key: [] for key in sent}
    for message in consumer:
        received[message.key].append(message.value)
        if sum(map(len, received.values())) == 30:
            break
    consumer.close()
    # Keyed messages keep their per-key order.
    assert received == sent


def test_stack_creates_topics_with_explicit_partitions(stack_settings: Settings) -> None:
    consumer = kafka_consumer(stack_settings)
    try:
        for topic in Topic:
            assert consumer.partitions_for_topic(str(topic)) == set(range(topic.partitions))
    finally:
        consumer.close()


def test_mongodb_enforces_unique_index_and_reads_back(test_settings: Settings) -> None:
    database = mongo_database(test_settings)
    collection = database["things"]
    collection.create_index("name", unique=True)
    collection.insert_one({"name": "a", "n": 1})
    with pytest.raises(DuplicateKeyError):
        collection.insert_one({"name": "a", "n": 2})
    assert [doc["n"] for doc in collection.find({"name": "a"})] == [1]


def test_gcs_uploads_lists_downloads_and_refuses_create_only_overwrite(
    stack_settings: Settings,
) -> None:
    bucket = gcs_bucket(stack_settings)
    prefix = f"test-{uuid.uuid4().hex[:8]}/"
    blob = bucket.blob(prefix + "hello.txt")
    blob.upload_from_string(b"hello", if_generation_match=0)
    assert [b.name for b in bucket.list_blobs(prefix=prefix)] == [prefix + "hello.txt"]
    assert bucket.blob(prefix + "hello.txt").download_as_bytes() == b"hello"
    with pytest.raises(PreconditionFailed):
        bucket.blob(prefix + "hello.txt").upload_from_string(b"again", if_generation_match=0)
    assert bucket.blob(prefix + "hello.txt").download_as_bytes() == b"hello"


@pytest.fixture
def private_stack(tmp_path: Path) -> Settings:
    """Settings for a second stack of this test's own (it will be stopped and restarted)."""
    return settings_on_free_ports(tmp_path)


def _auxcord(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **environment_of(settings)}
    return subprocess.run(
        [sys.executable, "-c", "from cli.main import main; main()", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _our_processes(data_dir: Path) -> list[int]:
    """Pids of live processes working in this stack's data dir (every server runs there)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or "\nState:\tZ" in (proc / "status").read_text():
                continue
            if os.readlink(proc / "cwd").startswith(str(data_dir)):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_stack_cli_restart_keeps_mongodb_and_gcs_data_and_leaves_no_process(
    private_stack: Settings,
) -> None:
    up = _auxcord(private_stack, "stack", "up", "--no-airflow")
    assert up.returncode == 0, up.stderr
    # twice is harmless
    assert _auxcord(private_stack, "stack", "up", "--no-airflow").returncode == 0
    assert len(_our_processes(private_stack.data_dir)) >= 2

    with mongo_client(private_stack) as client:
        client["keep"]["docs"].insert_one({"_id": "kept"})
    gcs_bucket(private_stack).blob("kept.txt").upload_from_string(b"kept")

    assert _auxcord(private_stack, "stack", "down").returncode == 0
    assert _our_processes(private_stack.data_dir) == []
    status = _auxcord(private_stack, "stack", "status")
    assert status.returncode == 1 and "stopped" in status.stdout

    assert _auxcord(private_stack, "stack", "up", "--no-airflow").returncode == 0
    try:
        with mongo_client(private_stack) as client:
            assert client["keep"]["docs"].find_one({"_id": "kept"}) == {"_id": "kept"}
        assert gcs_bucket(private_stack).blob("kept.txt").download_as_bytes() == b"kept"
    finally:
        assert _auxcord(private_stack, "stack", "down").returncode == 0
    assert _our_processes(private_stack.data_dir) == []


def test_port_held_by_another_process_is_named(private_stack: Settings) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", private_stack.port_of("mongodb")))
    holder.listen()
    try:
        stack = LocalStack(private_stack, airflow=False)
        with pytest.raises(StackError, match=f"port {private_stack.port_of('mongodb')}"):
            stack.up()
        assert _our_processes(private_stack.data_dir) == []
        result = _auxcord(private_stack, "stack", "up", "--no-airflow")
        assert result.returncode == 1
        assert "AUXCORD_MONGODB_URI" in result.stderr and "Traceback" not in result.stderr
    finally:
        holder.close()
        LocalStack(private_stack).down()


def test_airflow_port_held_by_another_process_is_named_before_anything_starts(
    private_stack: Settings,
) -> None:
    port = private_stack.port_of("airflow")
    holder = socket.socket()
    holder.bind(("127.0.0.1", port))
    holder.listen()
    try:
        with pytest.raises(StackError, match=f"port {port} .*AUXCORD_AIRFLOW_URL"):
            LocalStack(private_stack).up()
        assert _our_processes(private_stack.data_dir) == []
    finally:
        holder.close()
        LocalStack(private_stack).down()


def test_down_sweeps_an_airflow_process_that_left_its_group(tmp_path: Path) -> None:
    # Airflow's api-server respawns its server in a session of its own: signalling the
    # recorded process group misses it, so `down` also stops Airflow's processes by where they
    # work. A shell opened there (no "airflow" in its command line) is left alone.
    from devtools.stack import _kill_working_in

    def spawn(*args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(120)", *args],
            cwd=tmp_path,
            start_new_session=True,
        )

    stray, bystander = spawn("airflow", "api_server"), spawn("a-shell")
    try:
        _kill_working_in(tmp_path, "airflow")
        stray.wait(timeout=10)  # raises unless it was stopped (reaped by the sweep or here)
        assert bystander.poll() is None
    finally:
        stray.kill()
        bystander.kill()
        bystander.wait()
