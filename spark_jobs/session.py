"""The one place a SparkSession is configured, so tests, the CLI and a cluster agree."""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession


def get_spark(
    master: str = "local[2]",
    app_name: str = "lookalike-features",
    *,
    driver_memory: str = "4g",
    shuffle_partitions: int = 8,
) -> SparkSession:
    """Get or create a session: UTC, microsecond Parquet timestamps, UI off, small shuffles.

    ``driver_memory`` only applies when this call starts the JVM; on a cluster pass the
    cluster master (``spark://...``, ``yarn``) and the rest of the settings still hold.
    """
    # Python workers must run the same interpreter as the driver (the project venv).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.sql.adaptive.enabled", "true")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.sql.parquet.int96RebaseModeInWrite", "CORRECTED")
        .config("spark.sql.parquet.datetimeRebaseModeInWrite", "CORRECTED")
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
        .config("spark.executor.extraJavaOptions", "-Duser.timezone=UTC")
    )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    # Runtime SQL settings also apply to a session someone else created first.
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    spark.conf.set("spark.sql.shuffle.partitions", str(shuffle_partitions))
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    return spark
