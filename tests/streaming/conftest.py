from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from auxcord.clients import ensure_bucket, ensure_topics
from auxcord.settings import Settings

_numbers = itertools.count()


@pytest.fixture
def stream_settings(test_settings: Settings, tmp_path: Path) -> Settings:
    """A test's own topics, bucket, checkpoint and database, with quick micro-batches."""
    number = f"{os.getpid()}x{next(_numbers)}"
    settings = test_settings.model_copy(
        update={
            "kafka_topic_prefix": f"stream{number}.",
            "gcs_bucket": f"auxcord-stream-{number}",
            "stream_checkpoint_dir": str(tmp_path / "checkpoint"),
            "stream_trigger_seconds": 0.2,
        }
    )
    ensure_topics(settings)
    ensure_bucket(settings)
    return settings
