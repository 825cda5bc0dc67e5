"""The SparkSession helpers every Spark job shares."""

from __future__ import annotations

from typing import TYPE_CHECKING

from auxcord.spark import arrow_frame

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def test_an_arrow_table_with_an_empty_chunk_keeps_every_row(spark: SparkSession) -> None:
    import pyarrow as pa

    # What concatenating three queries' results gives when the middle one found nothing.
    table = pa.concat_tables(
        [pa.table({"n": [1, 2]}), pa.table({"n": pa.array([], pa.int64())}), pa.table({"n": [3]})]
    )
    assert sorted(row.n for row in arrow_frame(spark, table).collect()) == [1, 2, 3]


def test_the_driver_logs_quietly_but_keeps_errors(spark: SparkSession) -> None:
    # Spark's default console (INFO, "Current batch is falling behind" every few seconds, the
    # native-library warning) buried auxcord's own lines in `auxcord demo`.
    manager = spark.sparkContext._jvm.org.apache.logging.log4j.LogManager  # type: ignore[union-attr]

    def level(name: str) -> str:
        return str(manager.getLogger(name).getLevel().toString())

    assert level("org.apache.spark.scheduler.DAGScheduler") == "WARN"
    assert level("org.apache.spark.sql.execution.streaming.runtime.ProcessingTimeExecutor") == (
        "ERROR"
    )
    assert level("org.apache.hadoop.util.NativeCodeLoader") == "ERROR"
    assert manager.getLogger(
        "org.apache.spark.sql.execution.streaming.runtime.ProcessingTimeExecutor"
    ).isErrorEnabled()
