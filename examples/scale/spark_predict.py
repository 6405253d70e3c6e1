"""Segment a folder of pictures with Spark: ``pandas_udf`` over ``binaryFile``, and ``predict_batch_udf`` over paths.

    pip install "pspnet-lib[spark]"          # pyspark (needs Java 17+), pandas, pyarrow
    python examples/scale/spark_predict.py photos/ --weights pspnet_r50-d8_ade20k --out masks.parquet

Each Spark Python worker loads the weights once (``Segmenter`` loads lazily and keeps one model per
process; Spark reuses its Python workers between tasks). The result is a Parquet table: the path,
the mask as the paletted PNG ``pspnet predict`` writes (bytes), its height and width. The second
part runs the same pictures through ``predict_batch_udf`` (Spark >= 3.4) on a column of paths,
whose struct rows carry the mask flattened to ``height * width`` integers.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
from pyspark.ml.functions import predict_batch_udf
from pyspark.sql import SparkSession
from pyspark.sql.functions import col, pandas_udf, regexp_replace
from pyspark.sql.types import ArrayType, IntegerType, StructField, StructType

from pspnet_lib import Segmenter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="folder of pictures (searched recursively for *.jpg, *.png)")
    parser.add_argument("--weights", default="pspnet_r50-d8_ade20k")
    parser.add_argument("--out", default="masks.parquet")
    parser.add_argument("--master", default="local[2]", help="Spark master (default: this machine, 2 cores)")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    spark = SparkSession.builder.master(args.master).appName("pspnet").getOrCreate()
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(args.batch_size))
    segmenter = Segmenter(args.weights, batch_size=args.batch_size)  # nothing loaded here, on the driver

    @pandas_udf("mask binary, height int, width int")
    def segment(content: pd.Series) -> pd.DataFrame:
        return segmenter(content)  # a Series of encoded pictures -> mask PNGs, heights, widths

    pictures = (
        spark.read.format("binaryFile")
        .option("recursiveFileLookup", "true")
        .option("pathGlobFilter", "*.{jpg,jpeg,png}")
        .load(args.folder)
    )
    start = time.perf_counter()
    masks = pictures.select("path", segment("content").alias("s")).select("path", "s.*")
    masks.write.mode("overwrite").parquet(args.out)
    seconds = time.perf_counter() - start
    count = spark.read.parquet(args.out).count()
    print(f"pandas_udf: {count} pictures in {seconds:.1f} s ({count / seconds:.2f} pictures/s) -> {args.out}")

    rows = StructType(
        [
            StructField("mask", ArrayType(IntegerType())),
            StructField("height", IntegerType()),
            StructField("width", IntegerType()),
        ]
    )
    by_path = predict_batch_udf(lambda: segmenter, return_type=rows, batch_size=args.batch_size)
    paths = pictures.select(regexp_replace(col("path"), "^file:", "").alias("path"))  # a local path
    start = time.perf_counter()
    sizes = paths.select(by_path(col("path")).alias("s")).select("s.height", "s.width").collect()
    seconds = time.perf_counter() - start
    print(f"predict_batch_udf: {len(sizes)} pictures in {seconds:.1f} s ({len(sizes) / seconds:.2f} pictures/s)")
    spark.stop()


if __name__ == "__main__":
    main()
