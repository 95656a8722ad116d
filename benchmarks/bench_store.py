"""Ingest benchmark: ready Arrow batches into the Store until durable, against raw IPC + fsync.

The peer writes the same 64K-row batches with a bare `pyarrow.ipc` stream writer and one
fsync: the floor for putting these bytes on this disk in this format. The store does the same
work plus dedupe by (producer, seq), the bounded queue, the background writer thread, segment
rolling, per-flush fsyncs and the journal.

    python benchmarks/bench_store.py [--events N] [--quick] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import tempfile
import time

import pyarrow as pa
import pyarrow.ipc as ipc
from gen_events import generate

from lumin_nb.config import Config
from lumin_nb.event import EVENT_SCHEMA
from lumin_nb.store import Store

RESULTS = pathlib.Path(__file__).with_name("results")


def peer_ipc(batches: list[pa.RecordBatch], folder: pathlib.Path) -> float:
    path = folder / "peer.arrows"
    t0 = time.perf_counter()
    sink = pa.OSFile(str(path), "wb")
    writer = ipc.new_stream(sink, EVENT_SCHEMA)
    for batch in batches:
        writer.write_batch(batch)
    writer.close()
    os.fsync(sink.fileno())
    sink.close()
    dt = time.perf_counter() - t0
    path.unlink()
    return dt


def store_ingest(batches: list[pa.RecordBatch], folder: pathlib.Path) -> float:
    path = folder / "store"
    t0 = time.perf_counter()
    store = Store.open(path, config=Config())
    for batch in batches:
        store.append(batch)
    store.flush()
    dt = time.perf_counter() - t0
    store.close()
    shutil.rmtree(path)
    return dt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4_000_000)
    parser.add_argument("--quick", action="store_true", help="1M events")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = 1_000_000 if args.quick else args.events
    batches = list(generate(n))
    nbytes = sum(b.nbytes for b in batches)
    peer_s, store_s = [], []
    with tempfile.TemporaryDirectory(prefix="lumin-bench-store-") as tmp:
        folder = pathlib.Path(tmp)
        for _ in range(args.repeat):  # interleaved so both see the same disk conditions
            peer_s.append(peer_ipc(batches, folder))
            store_s.append(store_ingest(batches, folder))
    peer, ours = statistics.median(peer_s), statistics.median(store_s)
    rows = [
        ("raw pyarrow IPC stream + fsync (peer)", peer, 1.0),
        ("Store.append + flush (durable)", ours, ours / peer),
    ]
    print(f"\n{n:,} events in 64K-row batches, {nbytes / n:.0f} B/event, median of {args.repeat}\n")
    print("| ingest | s | events/s | MB/s | x peer time |")
    print("|---|---:|---:|---:|---:|")
    for name, secs, ratio in rows:
        print(
            f"| {name} | {secs:.2f} | {n / secs:,.0f} | {nbytes / secs / 1e6:,.0f} | {ratio:.2f} |"
        )
    RESULTS.mkdir(exist_ok=True)
    out = {
        "events": n,
        "bytes_per_event": nbytes / n,
        "peer_s": peer_s,
        "store_s": store_s,
        "peer_events_per_s": n / peer,
        "store_events_per_s": n / ours,
        "ratio_store_to_peer_time": ours / peer,
    }
    (RESULTS / "bench_store.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
