"""Building the SparkSession: one per process, passed in explicitly, never a module global.

Local mode by default; ``AUXCORD_SPARK_MASTER`` points the same code at a cluster. pyspark is
imported inside the function so that importing auxcord (the CLI, the DAG files) stays cheap.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from auxcord.settings import Settings

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

LOG_CONFIG = Path(__file__).with_name("log4j2.properties")
"""Spark's console log configuration: errors, and the warnings worth reading (see the file)."""


def build_spark_session(
    settings: Settings, app_name: str, *, short_run: bool = False
) -> SparkSession:
    """A SparkSession for ``app_name``: UTC session time, small shuffles, Arrow on, and the
    quiet log configuration :data:`LOG_CONFIG` (Spark's default buries auxcord's own lines).

    ``short_run``: the process does a few seconds' work per stage on little data (a daily
    run), so the driver JVM keeps to the JIT compiler's quick tier: the optimising tier's
    compiles cost more CPU than they save before such a run ends (bench/RESULTS.md, daily
    aggregates), while a year's backfill was slower without them. Only for a JVM this call
    starts.
    """
    # Python workers must run the interpreter that runs us, or they die on import errors.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    # The settings' own options come last, so they can point log4j2 elsewhere.
    java_options = (
        f"-Dlog4j2.configurationFile={LOG_CONFIG.as_uri()} "
        f"-Dderby.system.home={settings.data_dir} {settings.spark_driver_java_options}"
    )
    if short_run:
        java_options += " -XX:TieredStopAtLevel=1"
    builder = (
        SparkSession.builder.appName(app_name)
        .master(settings.spark_master)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(settings.spark_shuffle_partitions))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", settings.spark_driver_memory)
        .config("spark.sql.warehouse.dir", str(settings.data_dir / "spark-warehouse"))
        .config("spark.driver.extraJavaOptions", java_options)
    )
    for key, value in cluster_auth_conf(settings).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def cluster_auth_conf(settings: Settings) -> dict[str, str]:
    """Spark's RPC authentication, with ``AUXCORD_SPARK_AUTH_SECRET`` set: a standalone master
    and workers started with the same secret (docker-compose.yml) run only applications that
    hold it. Without it, anyone who reaches the master's port runs code on the workers."""
    if settings.spark_auth_secret is None:
        return {}
    secret = settings.spark_auth_secret.get_secret_value()
    return {"spark.authenticate": "true", "spark.authenticate.secret": secret}


def arrow_frame(spark: SparkSession, table: pa.Table) -> DataFrame:
    """``table`` as a DataFrame, its chunks combined first: pyspark 4.3 drops every record
    batch after an empty one, as a concatenation of query results where one found nothing
    has (``[2, 0, 1]`` rows become 2)."""
    return spark.createDataFrame(table.combine_chunks())
