"""The demo: a traced run of the sample shop, then the questions Lumin answers about it.

`lumin demo` and `make demo` call `run_demo()`. It uses a temporary store unless one is given.
"""

from __future__ import annotations

import tempfile
from pathlib import Path


def run_demo(store: str | None = None, orders: int = 300) -> None:
    """Observe the sample shop and print what happened, slowest code first."""
    import polars as pl

    import lumin_nb as lm
    from lumin_nb.demo import shop

    folder = Path(store) if store else Path(tempfile.mkdtemp(prefix="lumin-demo-"))
    lm.start(store=folder, flush_interval_s=0.2)
    try:
        lm.watch("lumin_nb.demo.shop")
        counts = shop.run(orders=orders)
        print(f"The shop ran {orders} orders: {counts['paid']} paid, {counts['failed']} failed.\n")
        with pl.Config(tbl_rows=12, fmt_str_lengths=48, tbl_width_chars=120):
            print("Slowest code (lm.sql):")
            print(
                lm.sql(
                    "select entity, count(*) as calls, "
                    "round(quantile_cont(duration_ns, 0.99) / 1e3, 1) as p99_us "
                    "from events where kind = 'call' group by entity order by p99_us desc"
                )
            )
            print("\nWhat went wrong (lm.events(kind='exception')):")
            exc = lm.events(kind="exception", columns=["ts", "entity", "message", "attrs"])
            print(
                exc.with_columns(phase=pl.col("attrs").str.json_path_match("$.phase"))
                .group_by("entity", "phase")
                .agg(pl.len().alias("n"), pl.col("message").first())
                .sort("n", descending=True)
            )
            print("\nEvents by kind:")
            print(lm.sql("select kind, count(*) as n from events group by 1 order by 2 desc"))
        print()
        print(lm.status())
        print(f'\nThe events stay in {folder}: lumin query "select ..." --store {folder}')
    finally:
        lm.stop()
