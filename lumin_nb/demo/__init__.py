"""The demo: a traced run of the sample shop, then the questions Lumin answers about it.

`lumin demo` and `make demo` call `run_demo()`. It uses a temporary store unless one is given.
`run_system()` runs the multi-process shop (`lumin_nb.demo.system`) with one fault under
observation; ``lumin demo --fault slow_db --duration 60s`` calls it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import os

    from lumin_nb.demo.system import SystemRun


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


def run_system(
    fault: str | None = None,
    duration_s: float = 60.0,
    rate_per_s: float = 20.0,
    store: str | os.PathLike[str] | None = None,
    **options: Any,
) -> SystemRun:
    """Run the multi-process shop with one fault under observation; return the ground truth.

    See `lumin_nb.demo.system.runner.run_system` (options: ``fault_at_s``, ``seed``,
    ``progress``). Faults: "slow_db", "memory_leak", "error_burst", "n_plus_one",
    "lock_contention", "bad_deploy" (None or "none": a healthy run).
    """
    from lumin_nb.demo.system.runner import run_system as run

    return run(fault, duration_s, rate_per_s, store, **options)
