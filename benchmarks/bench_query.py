"""Query benchmark: Store.sql and events_frame against DuckDB and polars on one in-memory table.

The same generated events (~50 entities, 5 services, severities, durations) are held twice:
in a Store on disk (hot Arrow IPC segments, read zero-copy through memory maps; with `--cold`
also after compaction to zstd Parquet) and as one in-memory `pa.Table` that the peers query
directly (DuckDB registered on the table; polars on a DataFrame converted once, untimed).

    python benchmarks/bench_query.py [--events N] [--quick] [--cold] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import tempfile
import time
from collections.abc import Callable

import duckdb
import polars as pl
from gen_events import START_NS, generate_table

from lumin_nb.config import Config
from lumin_nb.store import Store, events_frame

RESULTS = pathlib.Path(__file__).with_name("results")


def timed(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up (page cache, DuckDB catalog)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--quick", action="store_true", help="1M events")
    parser.add_argument("--cold", action="store_true", help="also query after compaction")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n = 1_000_000 if args.quick else args.events
    rate = 100_000.0
    table = generate_table(n, rate_per_s=rate)
    span_ns = int(n / rate * 1e9)
    w0, w1 = START_NS + int(span_ns * 0.45), START_NS + int(span_ns * 0.55)

    queries = {
        "a: group by entity, count/mean/p99": (
            "select entity, count(*) as n, avg(duration_ns) as mean_ns, "
            "quantile_cont(duration_ns, 0.99) as p99_ns from events group by entity"
        ),
        "b: 1 s buckets by service": (
            "select service, time_bucket(interval '1 second', ts) as bucket, count(*) as n, "
            "avg(duration_ns) as mean_ns from events group by all"
        ),
        "c: severity + time window": (
            "select ts, service, entity, severity, message from events where severity >= 13 "
            f"and epoch_ns(ts) >= {w0} and epoch_ns(ts) < {w1}"
        ),
    }
    frames: dict[str, tuple[dict[str, object], pl.Expr]] = {
        "severity >= warn, 10% window": (
            {"since": w0, "until": w1, "min_severity": 13},
            (pl.col("severity") >= 13)
            & (pl.col("ts") >= pl.lit(w0).cast(pl.Datetime("ns", "UTC")))
            & (pl.col("ts") < pl.lit(w1).cast(pl.Datetime("ns", "UTC"))),
        ),
        "kind=log, entity='orders*'": (
            {"kind": "log", "entity": "orders*"},
            (pl.col("kind") == "log") & pl.col("entity").cast(pl.String).str.starts_with("orders"),
        ),
    }

    rows: list[dict[str, object]] = []
    con = duckdb.connect()
    con.register("events", table)
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    t0 = time.perf_counter()
    pl.from_arrow(table)
    from_arrow_s = time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix="lumin-bench-query-") as tmp:
        t0 = time.perf_counter()
        with Store.open(tmp, config=Config()) as writer:
            for batch in table.to_batches():
                writer.append(batch)
        ingest_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        store = Store.open(tmp, config=Config())
        open_s = time.perf_counter() - t0
        layouts = [("hot", store)]
        for layout, st in layouts:
            for name, sql in queries.items():
                peer = timed(lambda sql=sql: con.sql(sql).to_arrow_table(), args.repeat)
                ours = timed(lambda sql=sql, st=st: st.sql(sql), args.repeat)
                rows.append(
                    dict(
                        layout=layout,
                        query=name,
                        tool="Store.sql",
                        peer="DuckDB on one Arrow table",
                        s=ours,
                        peer_s=peer,
                    )
                )
            for name, (kwargs, expr) in frames.items():
                peer = timed(lambda expr=expr: df.filter(expr).sort("ts"), args.repeat)
                ours = timed(lambda kw=kwargs, st=st: events_frame(st, **kw), args.repeat)  # type: ignore[arg-type]
                got = events_frame(st, **kwargs)  # type: ignore[arg-type]
                assert got.height == df.filter(expr).height, name
                rows.append(
                    dict(
                        layout=layout,
                        query=name,
                        tool="events_frame",
                        peer="polars filter+sort of the DataFrame",
                        s=ours,
                        peer_s=peer,
                    )
                )
        if args.cold:
            t0 = time.perf_counter()
            counts = store.compact(now_ns=START_NS + span_ns + 10 * 86_400 * 10**9)
            compact_s = time.perf_counter() - t0
            print(f"compaction to Parquet: {counts} in {compact_s:.1f} s")
            for name, sql in queries.items():
                peer = timed(lambda sql=sql: con.sql(sql).to_arrow_table(), args.repeat)
                ours = timed(lambda sql=sql: store.sql(sql), args.repeat)
                rows.append(
                    dict(
                        layout="cold",
                        query=name,
                        tool="Store.sql",
                        peer="DuckDB on one Arrow table",
                        s=ours,
                        peer_s=peer,
                    )
                )
            for name, (kwargs, expr) in frames.items():
                peer = timed(lambda expr=expr: df.filter(expr).sort("ts"), args.repeat)
                ours = timed(lambda kw=kwargs: events_frame(store, **kw), args.repeat)  # type: ignore[arg-type]
                rows.append(
                    dict(
                        layout="cold",
                        query=name,
                        tool="events_frame",
                        peer="polars filter+sort of the DataFrame",
                        s=ours,
                        peer_s=peer,
                    )
                )
        stats = store.stats()
        store.close()

    print(
        f"\n{n:,} events; ingest {ingest_s:.1f} s; reopen (index rebuild) {open_s:.2f} s; "
        f"pl.from_arrow of the table {from_arrow_s:.2f} s; "
        f"store {stats['bytes_on_disk'] / 1e6:,.0f} MB\n"
    )
    print("| layout | query | ours | s | peer | peer s | x peer |")
    print("|---|---|---|---:|---|---:|---:|")
    for r in rows:
        ratio = r["s"] / r["peer_s"]  # type: ignore[operator]
        r["ratio"] = ratio
        print(
            f"| {r['layout']} | {r['query']} | {r['tool']} | {r['s']:.3f} "
            f"| {r['peer']} | {r['peer_s']:.3f} | {ratio:.2f} |"
        )
    RESULTS.mkdir(exist_ok=True)
    out = {
        "events": n,
        "ingest_s": ingest_s,
        "reopen_s": open_s,
        "from_arrow_s": from_arrow_s,
        "rows": rows,
    }
    (RESULTS / "bench_query.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
