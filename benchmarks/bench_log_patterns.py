"""Log template mining benchmark: lumin's mine_templates against drain3 on Loghub, same run.

For each of the 8 Loghub 2k samples (``../shared/data/loghub``, the ``Content`` column) both
miners parse the 2,000 lines; grouping accuracy (GA, Zhu et al. ICSE-SEIP 2019: a line is
right when the set of lines in its group is exactly the set sharing its ground-truth
``EventId``) and lines/s are reported for both. drain3 runs ``TemplateMiner`` with its
default ``TemplateMinerConfig()`` (sim_th 0.4, depth 4, max_children 100, no masking), a fresh
miner per run, fed Python strings; lumin gets a polars Series (what ``log_patterns`` gets) and
its time includes masking, deduplication and the tree walk. One configuration for every
system. Then both run on a large stream: the 16,000 lines repeated with every digit run
replaced by random digits (1,000,000 lines; drain3 on the first 100,000 of them).

    python benchmarks/bench_log_patterns.py [--quick] [--lines N] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
import re
import statistics
import sys
import time
from collections.abc import Callable

import polars as pl
from drain3 import TemplateMiner
from drain3.template_miner_config import TemplateMinerConfig
from loghub import SYSTEMS, grouping_accuracy, load_system

from lumin_nb.analysis import mine_templates

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"


def drain3_ids(lines: list[str]) -> list[int]:
    miner = TemplateMiner(config=TemplateMinerConfig())
    return [miner.add_log_message(line)["cluster_id"] for line in lines]


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    result = fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def varied(lines: list[str], n: int, seed: int = 7) -> list[str]:
    """Return n lines: `lines` repeated, each digit run replaced by random digits."""
    rng = random.Random(seed)
    digits = re.compile(r"\d+")
    out = []
    while len(out) < n:
        for line in lines:
            out.append(digits.sub(lambda m: str(rng.randrange(10 ** len(m.group()))), line))
            if len(out) == n:
                break
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--lines", type=int, default=None, help="size of the large stream")
    parser.add_argument("--repeat", type=int, default=None)
    args = parser.parse_args(argv)
    repeat = args.repeat or (3 if args.quick else 7)
    big_n = args.lines or (200_000 if args.quick else 1_000_000)
    drain_big_n = min(big_n, 20_000 if args.quick else 100_000)

    rows = []
    all_lines: list[str] = []
    for system in SYSTEMS:
        frame = load_system(system)
        series = frame["Content"]
        lines = series.to_list()
        truth = frame["EventId"].to_list()
        all_lines += lines
        ours_s, ours = timed(lambda s=series: mine_templates(s), repeat)
        d3_s, d3 = timed(lambda ls=lines: drain3_ids(ls), max(1, repeat // 2))
        ids, templates = ours  # type: ignore[misc]
        rows.append(
            {
                "system": system,
                "lines": len(lines),
                "ga_lumin": grouping_accuracy(ids, truth),
                "ga_drain3": grouping_accuracy(d3, truth),  # type: ignore[arg-type]
                "templates_lumin": len(templates),
                "templates_truth": frame["EventId"].n_unique(),
                "lines_per_s_lumin": len(lines) / ours_s,
                "lines_per_s_drain3": len(lines) / d3_s,
            }
        )

    big = varied(all_lines, big_n)
    big_series = pl.Series("message", big, dtype=pl.String)
    ours_big_s, ours_big = timed(lambda: mine_templates(big_series), 1 if big_n > 300_000 else 3)
    d3_big_s, _ = timed(lambda: drain3_ids(big[:drain_big_n]), 1)
    big_ids, big_templates = ours_big  # type: ignore[misc]
    n_unique_masked = len(set(big_ids.tolist()))

    mean = {k: statistics.fmean(r[k] for r in rows) for k in ("ga_lumin", "ga_drain3")}
    total = sum(r["lines"] for r in rows)
    ours_total_s = sum(r["lines"] / r["lines_per_s_lumin"] for r in rows)
    d3_total_s = sum(r["lines"] / r["lines_per_s_drain3"] for r in rows)
    out = {
        "config": {
            "lumin": "mine_templates defaults (SIMILARITY_THRESHOLD 0.7, depth 1, masking)",
            "drain3": "TemplateMiner(config=TemplateMinerConfig()) defaults",
            "repeat": repeat,
            "quick": args.quick,
        },
        "systems": rows,
        "mean_ga_lumin": mean["ga_lumin"],
        "mean_ga_drain3": mean["ga_drain3"],
        "loghub_lines_per_s_lumin": total / ours_total_s,
        "loghub_lines_per_s_drain3": total / d3_total_s,
        "big": {
            "lines": big_n,
            "lines_per_s_lumin": big_n / ours_big_s,
            "templates_lumin": len(big_templates),
            "groups_lumin": n_unique_masked,
            "drain3_lines": drain_big_n,
            "lines_per_s_drain3": drain_big_n / d3_big_s,
        },
    }

    print("| system | GA lumin | GA drain3 | lines/s lumin | lines/s drain3 | x drain3 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['system']} | {r['ga_lumin']:.3f} | {r['ga_drain3']:.3f} | "
            f"{r['lines_per_s_lumin']:,.0f} | {r['lines_per_s_drain3']:,.0f} | "
            f"{r['lines_per_s_lumin'] / r['lines_per_s_drain3']:.1f} |"
        )
    lo, ld = out["loghub_lines_per_s_lumin"], out["loghub_lines_per_s_drain3"]
    print(
        f"| **all 8** | **{mean['ga_lumin']:.3f}** | **{mean['ga_drain3']:.3f}** | "
        f"{lo:,.0f} | {ld:,.0f} | {lo / ld:.1f} |"
    )
    b = out["big"]
    print(
        f"\nLarge stream, {big_n:,} lines (Loghub lines, digits randomised): lumin "
        f"{b['lines_per_s_lumin']:,.0f} lines/s ({b['templates_lumin']} templates); drain3 "
        f"{b['lines_per_s_drain3']:,.0f} lines/s on the first {drain_big_n:,} "
        f"({b['lines_per_s_lumin'] / b['lines_per_s_drain3']:.1f}x)."
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "log_patterns.json").write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
