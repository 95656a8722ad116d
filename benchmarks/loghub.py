"""The Loghub samples of ../shared/data/loghub and the grouping accuracy they are scored by.

Shared by `bench_log_patterns.py` and the log-pattern tests, so both score the same way.
"""

from __future__ import annotations

import pathlib

import numpy as np
import polars as pl

#: ../shared/data beside the checkout (CI lays it there too)
LOGHUB = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "loghub"
SYSTEMS = ("Apache", "BGL", "HDFS", "Hadoop", "HealthApp", "OpenSSH", "Spark", "Zookeeper")


def load_system(system: str) -> pl.DataFrame:
    """The structured 2k sample of `system` (Content is the message, EventId the truth)."""
    return pl.read_csv(LOGHUB / system / f"{system}_2k.log_structured.csv", infer_schema=False)


def grouping_accuracy(predicted: np.ndarray | list[int], truth: list[str]) -> float:
    """GA (Zhu et al., ICSE-SEIP 2019): a line is right when its group is its true group."""
    df = pl.DataFrame({"p": np.asarray(predicted), "t": truth})
    groups = df.group_by("p").agg(
        pl.col("t").n_unique().alias("n_truths"), pl.col("t").first(), pl.len().alias("n")
    )
    sizes = df.group_by("t").agg(pl.len().alias("n_true"))
    ok = groups.join(sizes, on="t").filter(
        (pl.col("n_truths") == 1) & (pl.col("n") == pl.col("n_true"))
    )
    return float(ok["n"].sum()) / len(truth)
