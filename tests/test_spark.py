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
