"""Overhead of Lumin's call tracer against the bare workload, cProfile and VizTracer.

Usage: ``python benchmarks/bench_tracer.py [--quick]``. Each variant runs in a fresh
subprocess (best of 3, or 1 with --quick) on `workloads.run()`, a pure-Python workload of
recursion and method calls. The "watching" variants record every call of the workload while
a background thread drains the tracer every 100 ms or when its buffer is half full (as
the observatory does), and check that
the number of recorded call events equals the number of calls made.

Prints a markdown table and writes benchmarks/results/tracer.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "tracer.json"

VARIANTS: dict[str, str] = {
    "plain": "the workload alone",
    "lumin imported": "lumin_nb.collect.calls imported (numpy, pyarrow), tracer not started",
    "lumin idle": "lumin tracer started, watching nothing",
    "sys.monitoring floor": "no-op C callbacks on PY_START and PY_RETURN (the dispatch cost)",
    "lumin watching (native)": "every call recorded, drained every 100 ms",
    "lumin watching (python fallback)": "the same with the pure-Python backend",
    "cProfile": "cProfile.Profile enabled",
    "VizTracer": "viztracer.VizTracer started (not saved)",
}


def _drain_loop(tracer: Any, stop: threading.Event, counts: dict[str, int]) -> None:
    import numpy as np

    while True:
        done = stop.is_set()
        tracer.wait_for_drain(0.1)  # every 100 ms, or sooner when the buffer is half full
        batch = tracer.drain()
        if batch is not None:
            kind = batch.column("kind")
            names = kind.dictionary.to_pylist()
            call = names.index("call") if "call" in names else -1
            counts["calls"] += int(np.count_nonzero(kind.indices.to_numpy() == call))
            counts["batches"] += 1
        if done:
            return


def _warm_up_arrow() -> None:
    """Do the one-time imports a running observatory has already done (pyarrow's pandas shim)."""
    import numpy as np
    import pyarrow as pa

    pa.array(np.zeros(1))


def child(variant: str) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    import workloads

    out: dict[str, Any] = {"variant": variant, "calls": workloads.expected_calls()}
    cpu0 = time.process_time()
    if variant == "plain":
        t0 = time.perf_counter()
        workloads.run()
        out["seconds"] = time.perf_counter() - t0
    elif variant == "lumin imported":
        from lumin_nb.collect.calls import CallTracer

        t0 = time.perf_counter()
        workloads.run()
        out["seconds"] = time.perf_counter() - t0
    elif variant == "lumin idle":
        from lumin_nb.collect.calls import CallTracer

        tracer = CallTracer()
        tracer.start()
        t0 = time.perf_counter()
        workloads.run()
        out["seconds"] = time.perf_counter() - t0
        tracer.stop()
        out["recorded"] = tracer.stats()["recorded"]
    elif variant == "sys.monitoring floor":
        from lumin_nb.collect import _ctracer

        mon = sys.monitoring
        ev = mon.events
        mon.use_tool_id(3, "floor")
        mon.register_callback(3, ev.PY_START, _ctracer.noop)
        mon.register_callback(3, ev.PY_RETURN, _ctracer.noop)
        mon.set_events(3, ev.PY_START | ev.PY_RETURN)
        t0 = time.perf_counter()
        workloads.run()
        out["seconds"] = time.perf_counter() - t0
        mon.set_events(3, 0)
        mon.free_tool_id(3)
    elif variant.startswith("lumin watching"):
        from lumin_nb.collect.calls import CallTracer

        tracer = CallTracer(native="native" in variant)
        tracer.watch("workloads")
        _warm_up_arrow()
        counts = {"calls": 0, "batches": 0}
        stop = threading.Event()
        drainer = threading.Thread(
            target=_drain_loop, args=(tracer, stop, counts), name="lumin-bench-drain"
        )
        tracer.start()
        drainer.start()
        t0 = time.perf_counter()
        workloads.run()
        out["seconds"] = time.perf_counter() - t0
        tracer.stop()
        t1 = time.perf_counter()
        stop.set()
        drainer.join()
        out["final_drain_s"] = time.perf_counter() - t1
        stats = tracer.stats()
        out.update(recorded=counts["calls"], batches=counts["batches"], stats=stats)
        if counts["calls"] != out["calls"]:
            raise SystemExit(
                f"{variant}: recorded {counts['calls']} call events, expected {out['calls']} "
                f"(dropped {stats['dropped']}: {stats['dropped_reason']})"
            )
    elif variant == "cProfile":
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
        t0 = time.perf_counter()
        workloads.run()
        out["seconds"] = time.perf_counter() - t0
        prof.disable()
    elif variant == "VizTracer":
        from viztracer import VizTracer

        viz = VizTracer(verbose=0)
        viz.start()
        t0 = time.perf_counter()
        workloads.run()
        out["seconds"] = time.perf_counter() - t0
        viz.stop()
    else:
        raise SystemExit(f"unknown variant {variant!r}; expected one of {list(VARIANTS)}")
    out["cpu_seconds"] = time.process_time() - cpu0  # all threads, setup included
    return out


def idle_ab(rounds: int) -> dict[str, Any]:
    """The idle tracer's own cost: one process, workload runs alternating stopped/started.

    Cross-process timings on a shared 2-core machine vary by several percent; alternating in
    one process (same heap, same imports) isolates what start() itself costs.
    """
    import statistics

    sys.path.insert(0, str(HERE))
    import workloads

    from lumin_nb.collect.calls import CallTracer

    tracer = CallTracer()
    times: dict[bool, list[float]] = {False: [], True: []}
    for i in range(rounds):
        for started in (False, True) if i % 2 else (True, False):
            if started:
                tracer.start()
            t0 = time.perf_counter()
            workloads.run(rounds=2)
            times[started].append(time.perf_counter() - t0)
            tracer.stop()
    off, on = statistics.median(times[False]), statistics.median(times[True])
    return {"rounds": rounds, "median_stopped_s": off, "median_started_s": on, "ratio": on / off}


def run_once(variant: str) -> dict[str, Any]:
    # numpy's BLAS threads spin on a 2-core machine; no variant uses BLAS
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", variant],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"variant {variant!r} failed:\n{proc.stdout}\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def run_all(names: list[str], repeat: int) -> dict[str, dict[str, Any]]:
    """Best of `repeat` per variant; rounds are interleaved so load drift hits all alike."""
    best: dict[str, dict[str, Any]] = {}
    for _ in range(repeat):
        for name in names:
            result = run_once(name)
            if name not in best or result["seconds"] < best[name]["seconds"]:
                best[name] = result
    return {name: best[name] for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run per variant, not 3")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--only", nargs="*", help="run only these variants")
    parser.add_argument("--repeat", type=int, help="runs per variant (default 3, --quick 1)")
    args = parser.parse_args()
    if args.child == "idle A/B":
        print(json.dumps(idle_ab(4 if args.quick else 12)))
        return
    if args.child:
        print(json.dumps(child(args.child)))
        return
    repeat = args.repeat or (1 if args.quick else 3)
    names = args.only or list(VARIANTS)
    results = run_all(names, repeat)
    plain = results.get("plain", {}).get("seconds")
    cprof = results.get("cProfile", {}).get("seconds")
    lines = [
        f"workload: {results[names[0]]['calls']:,} calls; best of {repeat} (interleaved); "
        f"Python {platform.python_version()}, {os.cpu_count()} cores",
        "",
        "| variant | seconds | x plain | x cProfile |",
        "|---|---:|---:|---:|",
    ]
    for name, r in results.items():
        r["x_plain"] = r["seconds"] / plain if plain else None
        r["x_cprofile"] = r["seconds"] / cprof if cprof else None
        xp = f"{r['x_plain']:.2f}" if r["x_plain"] else "-"
        xc = f"{r['x_cprofile']:.2f}" if r["x_cprofile"] else "-"
        lines.append(f"| {name} | {r['seconds']:.3f} | {xp} | {xc} |")
    ab = None
    if "lumin idle" in names:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            "idle A/B",
            *(["--quick"] if args.quick else []),
        ]
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        ab = json.loads(proc.stdout.strip().splitlines()[-1])
        lines.append(
            f"\nidle tracer, in-process A/B ({ab['rounds']} alternating rounds, medians): "
            f"started {ab['median_started_s']:.3f} s vs stopped {ab['median_stopped_s']:.3f} s "
            f"= {ab['ratio']:.3f}x"
        )
    print("\n".join(lines))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "python": platform.python_version(),
                "repeat": repeat,
                "variants": VARIANTS,
                "results": results,
                "idle_ab": ab,
            },
            indent=2,
        )
    )
    print(f"\nwrote {RESULTS.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
