"""Synthetic, realistic event batches for the store benchmarks and tests.

`generate(n)` yields `pa.RecordBatch`es of the event schema, built column-wise with numpy
(no per-event Python): ~50 entities spread over 5 services, kinds and OTel severities in
plausible proportions, log-normal durations, a few message and attrs templates, one producer
with consecutive seq numbers, timestamps at a steady rate. Deterministic for a given seed.

    python benchmarks/gen_events.py --events 1000000   # prints size and generation speed
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from lumin_nb.event import EVENT_SCHEMA, new_event_ids

SERVICES = ("orders", "payments", "inventory", "gateway", "kernel")
KINDS = ("span", "call", "log", "metric", "exception")
KIND_P = (0.30, 0.40, 0.20, 0.08, 0.02)
SEVERITIES = np.array([0, 5, 9, 13, 17, 21], dtype=np.int8)
SEVERITY_P = (0.45, 0.10, 0.35, 0.06, 0.035, 0.005)
MESSAGES = (
    "request handled",
    "cache miss for key",
    "retrying after timeout",
    "connection reset by peer",
    "slow query detected",
    "payment declined: insufficient funds",
    "ünïcödé message ✓",
)
ATTRS = ('{"http.route": "/orders"}', '{"http.route": "/pay", "status": 200}', '{"retry": 1}')
START_NS = 1_750_000_000_000_000_000


def _dict_array(indices: np.ndarray, values: tuple[str, ...] | list[str]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(
        pa.array(indices.astype(np.int32)), pa.array(list(values), pa.string())
    )


def generate(
    n: int,
    *,
    batch_rows: int = 65_536,
    start_ns: int = START_NS,
    rate_per_s: float = 100_000.0,
    producer: str = "gen-1",
    first_seq: int = 0,
    seed: int = 0,
    n_entities: int = 50,
) -> Iterator[pa.RecordBatch]:
    """Yield `n` events in batches of `batch_rows`, `rate_per_s` events per second of ts."""
    rng = np.random.default_rng(seed)
    entities = [f"{SERVICES[i % len(SERVICES)]}.handlers:fn_{i}" for i in range(n_entities)]
    entity_service = np.arange(n_entities) % len(SERVICES)
    step_ns = 1e9 / rate_per_s
    done = 0
    while done < n:
        m = min(batch_rows, n - done)
        idx = np.arange(done, done + m, dtype=np.int64)
        ts = start_ns + (idx * step_ns).astype(np.int64)
        ent = rng.integers(0, n_entities, size=m)
        kind = rng.choice(len(KINDS), size=m, p=KIND_P)
        sev = SEVERITIES[rng.choice(len(SEVERITIES), size=m, p=SEVERITY_P)]
        dur = rng.lognormal(mean=11.0, sigma=1.5, size=m).astype(np.int64)
        dur_valid = kind < 2  # spans and calls have durations
        msg_idx = rng.integers(0, len(MESSAGES), size=m)
        msg_valid = kind >= 2
        attrs_idx = rng.integers(0, len(ATTRS), size=m)
        value = rng.normal(100.0, 15.0, size=m)
        trace = rng.integers(0, 256, size=(m, 16), dtype=np.uint8)
        span = rng.integers(0, 256, size=(m, 8), dtype=np.uint8)
        arrays = [
            new_event_ids(ts),
            pa.array(ts).view(pa.timestamp("ns", tz="UTC")),
            pa.array(dur, mask=~dur_valid),
            _dict_array(kind, KINDS),
            _dict_array(np.zeros(m, dtype=np.int32), ["runtime"]),
            pa.array(sev),
            _dict_array(entity_service[ent], SERVICES),
            _dict_array(np.zeros(m, dtype=np.int32), ["host-a"]),
            pa.array(np.full(m, 4242, dtype=np.int32)),
            pa.array(rng.integers(1, 9, size=m)),
            pa.nulls(m, pa.string()),
            pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(16), m, [None, pa.py_buffer(trace.tobytes())]
            ),
            pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(8), m, [None, pa.py_buffer(span.tobytes())]
            ),
            pa.nulls(m, pa.binary(8)),
            _dict_array(ent, entities),
            pa.array(np.array(MESSAGES, dtype=object)[msg_idx], pa.string(), mask=~msg_valid),
            pa.array(value, mask=kind != 3),
            pa.array(np.array(ATTRS, dtype=object)[attrs_idx], pa.string()),
            pa.array(np.full(m, producer, dtype=object), pa.string()),
            pa.array(first_seq + idx),
        ]
        yield pa.RecordBatch.from_arrays(arrays, schema=EVENT_SCHEMA)
        done += m


def generate_table(n: int, **kwargs: object) -> pa.Table:
    """Return `generate(n, **kwargs)` as one table."""
    return pa.Table.from_batches(list(generate(n, **kwargs)), schema=EVENT_SCHEMA)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    t0 = time.perf_counter()
    table = generate_table(args.events)
    dt = time.perf_counter() - t0
    print(
        f"{table.num_rows:,} events, {table.nbytes / 1e6:.1f} MB in memory "
        f"({table.nbytes / table.num_rows:.0f} B/event), generated at {table.num_rows / dt:,.0f}/s"
    )


if __name__ == "__main__":
    main()
