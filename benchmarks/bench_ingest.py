"""NDJSON through Lumin's parser and the whole ingest pipeline, against a bare json.loads loop.

Usage: ``python benchmarks/bench_ingest.py [--quick]``. Realistic log records (timestamps,
levels, services, trace ids, HTTP fields; about 5% carry an email, a card number, a bearer
token or a password) are rendered as NDJSON once; each variant runs on the same bytes, best
of 3 (1 with --quick):

- ``json.loads loop``: ``[json.loads(line) for line in lines]``, the floor any Python
  ingester pays before doing anything with the records;
- ``lumin parse``: `parse_ndjson` to an event batch;
- ``lumin parse + pipeline (redact on)``: parse, then validate, enrich, redact (the
  ``prod_safe`` profile) and batch into a sink.

Prints a markdown table and writes benchmarks/results/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "ingest.json"
TARGET_LINES_PER_S = 200_000


def make_lines(n: int, seed: int = 7) -> list[bytes]:
    """Return `n` NDJSON log lines; about 5% hold PII or secrets."""
    rng = random.Random(seed)
    services = ["orders", "payments", "gateway", "inventory", "batch"]
    routes = ["/api/orders", "/api/pay", "/health", "/api/items/42", "/login"]
    levels = ["info"] * 14 + ["debug"] * 3 + ["warn"] * 2 + ["error"]
    pii = [
        "user alice.smith@example.com logged in",
        "charge card 4111 1111 1111 1111 declined",
        "auth header Bearer abcdefghijklmnopqrstuvwxyz012345",
        "retry with password=hunter2 for db",
        "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl",
    ]
    start = 1_760_000_000.0
    out = []
    for i in range(n):
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start + i * 0.001))
        msg = (
            rng.choice(pii)
            if rng.random() < 0.05
            else f"handled {rng.choice(['GET', 'POST'])} {rng.choice(routes)} "
            f"in {rng.randint(1, 900)} ms"
        )
        rec = {
            "timestamp": f"{ts}.{i % 1000:03d}Z",
            "level": rng.choice(levels),
            "service": rng.choice(services),
            "host": f"web-{rng.randint(1, 8)}",
            "message": msg,
            "trace_id": f"{rng.getrandbits(128):032x}",
            "span_id": f"{rng.getrandbits(64):016x}",
            "http": {
                "status": rng.choice([200, 200, 200, 201, 404, 500]),
                "bytes": rng.randint(0, 9000),
            },
            "user_id": rng.randint(1, 10_000),
        }
        out.append(json.dumps(rec).encode())
    return out


def _best(fn: Any, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    quick = args.quick or os.environ.get("LUMIN_BENCH_QUICK") == "1"
    sys.path.insert(0, str(HERE.parent))
    from lumin_nb.config import profile_config
    from lumin_nb.ingest import Pipeline, parse_ndjson

    n = 50_000 if quick else 200_000
    repeat = 1 if quick else 3
    lines = make_lines(n)
    data = b"\n".join(lines) + b"\n"
    sent: list[int] = []

    def bare() -> None:
        [json.loads(line) for line in lines]

    def parse_only() -> None:
        result = parse_ndjson(data)
        assert result.batch.num_rows == n, result.rejected

    def whole() -> None:
        pipe = Pipeline(
            profile_config("prod_safe"), service="bench", sink=lambda b: sent.append(b.num_rows)
        )
        result = pipe.ingest(data, format="ndjson")
        pipe.flush()
        assert result.accepted == n and result.redacted, result

    parse_only()  # warm up imports and regex caches
    seconds = {
        "json.loads loop": _best(bare, repeat),
        "lumin parse": _best(parse_only, repeat),
        "lumin parse + pipeline (redact on)": _best(whole, repeat),
    }
    floor = seconds["json.loads loop"]
    rows = {
        name: {
            "seconds": s,
            "lines_per_s": n / s,
            "x_json_loads": floor / s,
        }
        for name, s in seconds.items()
    }
    pipeline_rate = rows["lumin parse + pipeline (redact on)"]["lines_per_s"]
    print(
        f"{n:,} NDJSON lines ({len(data) / 1e6:.1f} MB), best of {repeat}; "
        f"speed-up is json.loads loop time / variant time (higher is faster)\n"
    )
    print("| variant | seconds | lines/s | speed-up vs json.loads |")
    print("|---|---:|---:|---:|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['seconds']:.3f} | {r['lines_per_s']:,.0f} | {r['x_json_loads']:.2f} |"
        )
    ok = pipeline_rate >= TARGET_LINES_PER_S
    print(
        f"\npipeline with redaction: {pipeline_rate:,.0f} lines/s "
        f"(target >= {TARGET_LINES_PER_S:,}: {'met' if ok else 'NOT met'})"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "ingest",
                "lines": n,
                "bytes": len(data),
                "repeat": repeat,
                "quick": quick,
                "python": sys.version.split()[0],
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "target_lines_per_s": TARGET_LINES_PER_S,
                "target_met": ok,
                "results": rows,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
