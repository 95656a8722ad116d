"""`make bench`: runs every benchmark script in its own process and prints their tables.

Each `bench_*.py` prints a markdown table of ratios against a peer measured in the same run
and writes JSON to `benchmarks/results/`. Pass `--quick` (or set LUMIN_BENCH_QUICK=1) for a
smaller run; pass names to run some only: `python benchmarks/run.py tracer query`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    quick = "--quick" in argv or os.environ.get("LUMIN_BENCH_QUICK") == "1"
    names = [a for a in argv if not a.startswith("-")]
    scripts = sorted(HERE.glob("bench_*.py"))
    if names:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in names]
    failed = []
    for script in scripts:
        print(f"\n## {script.stem}\n", flush=True)
        started = time.monotonic()
        cmd = [sys.executable, str(script), *(["--quick"] if quick else [])]
        code = subprocess.call(cmd, cwd=HERE.parent)
        print(f"\n({script.name}: {time.monotonic() - started:.0f} s, exit {code})", flush=True)
        if code:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
