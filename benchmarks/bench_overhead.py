"""What the agent costs a monitored service: the demo's orders service, plain vs monitored.

The service under test is the demo shop's orders service (`lumin_nb.demo.system.orders`:
JSON over HTTP, three SQLite queries with a 1 ms round trip each, one HTTP call to payments,
a log line per order), driven directly at the demo's request rate (`run_system`'s default,
20 checkouts/s, open model: a late answer does not delay the next send) with the demo's carts.
Payments runs plain, once, for every variant. Variants, interleaved (the order rotates each
repetition, so drift of a shared machine spreads over all of them):

- ``plain``: ``python -m lumin_nb.demo.system orders`` without Lumin;
- ``prod_safe``: the same started by `lm.run` (``LUMIN_PROFILE=prod_safe``, watching
  ``lumin_nb.demo.system.orders`` as the demo does), its agent shipping to a real observatory
  in this process (`lm.start`, store in a temporary folder);
- ``dev``: the same with ``LUMIN_PROFILE=dev`` (every call traced, info logs kept), for
  contrast.

Each run warms up (start-up and the first requests are not measured), then measures a window
of `duration_s`: the service process's CPU time (user + system of all its threads, psutil)
per request, and the client-side latency percentiles. The overhead is the ratio to the plain
run of the same repetition, minus 1; the table shows its median and range over repetitions.
CPU per request is the headline: it is what the agent takes from the service, and it is far
less sensitive than latency to what other processes on the machine do.

    python benchmarks/bench_overhead.py [--quick] [--repeat R] [--duration S] [--rate N]

Prints a markdown table and writes benchmarks/results/overhead.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import platform
import queue
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO, Any

import psutil

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results" / "overhead.json"
TARGET_OVERHEAD = 0.03
DEMO_RATE_PER_S = 20.0  # run_system's default
VARIANTS = ("plain", "prod_safe", "dev")
READY_TIMEOUT_S = 60.0


def _clean_env() -> dict[str, str]:
    """This process's environment without any LUMIN_* variable (the plain service's)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LUMIN_")}


def _argv(name: str, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lumin_nb.demo.system",
        name,
        *args,
        "--parent-pid",
        str(os.getpid()),
    ]


def _ready(popen: subprocess.Popen[bytes], name: str) -> str:
    """Wait for the service's announce line; return its base URL."""
    out = popen.stdout
    assert out is not None
    deadline = time.monotonic() + READY_TIMEOUT_S
    with selectors.DefaultSelector() as sel:
        sel.register(out, selectors.EVENT_READ)
        while not sel.select(timeout=0.2):
            if popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start (exit code {popen.poll()})")
        line = out.readline()
    return f"http://127.0.0.1:{int(json.loads(line)['port'])}"


def _stop(popen: subprocess.Popen[bytes]) -> None:
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(10)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
    if popen.stdout is not None:
        popen.stdout.close()


class Load:
    """Sends the demo's checkouts to ``POST /orders`` at a steady rate (open model)."""

    def __init__(self, url: str, *, rate_per_s: float, workers: int = 8) -> None:
        from lumin_nb.demo.system.runner import Load as DemoLoad

        self.url = url
        self.rate_per_s = rate_per_s
        self.workers = workers
        self._carts = DemoLoad(url, rate_per_s=rate_per_s, duration_s=1.0)
        self._next_id = 0

    def run(self, duration_s: float) -> list[tuple[int, int]]:
        """Send ``rate * duration`` orders on schedule; return (status, latency_ns) of each."""
        from lumin_nb.demo.system import service

        todo: queue.Queue[int | None] = queue.Queue()
        done: list[tuple[int, int]] = []
        lock = threading.Lock()

        def work() -> None:
            while (order_id := todo.get()) is not None:
                body = self._carts.cart(order_id)
                t0 = time.perf_counter_ns()
                try:
                    status, _ = service.call(self.url, "/orders", body)
                except OSError:
                    status = 0
                elapsed = time.perf_counter_ns() - t0
                with lock:
                    done.append((status, elapsed))

        threads = [
            threading.Thread(target=work, name=f"bench-load-{i}", daemon=True)
            for i in range(self.workers)
        ]
        for t in threads:
            t.start()
        pace = threading.Event()  # never set: pacing the schedule, not synchronisation
        t0 = time.monotonic()
        for k in range(int(self.rate_per_s * duration_s)):
            pace.wait(max(0.0, t0 + k / self.rate_per_s - time.monotonic()))
            todo.put(self._next_id)
            self._next_id += 1
        for _ in threads:
            todo.put(None)
        for t in threads:
            t.join()
        return done


def _cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def _threads(pid: int) -> dict[str, float]:
    """CPU seconds of the live threads of `pid` by kind: main, zmq (ZMQbg/*), other."""
    out = {"main": 0.0, "zmq": 0.0, "other": 0.0}
    for t in psutil.Process(pid).threads():
        try:
            comm = pathlib.Path(f"/proc/{pid}/task/{t.id}/comm").read_text().strip()
        except OSError:
            continue
        kind = "main" if t.id == pid else "zmq" if comm.startswith("ZMQ") else "other"
        out[kind] += t.user_time + t.system_time
    return out


def run_once(
    variant: str,
    *,
    payments_url: str,
    obs: Any,
    logs: pathlib.Path,
    duration_s: float,
    warmup_s: float,
    rate_per_s: float,
) -> dict[str, Any]:
    """Start orders as `variant`, warm it up, measure one window; return the numbers."""
    argv = _argv("orders", "--payments-url", payments_url)
    stderr = (logs / f"orders-{variant}.stderr").open("ab")
    monitored = None
    try:
        if variant == "plain":
            popen = subprocess.Popen(argv, env=_clean_env(), stdout=subprocess.PIPE, stderr=stderr)
        else:
            monitored = obs.run(
                argv,
                service="orders",
                watch=["lumin_nb.demo.system.orders"],
                env={**_clean_env(), "LUMIN_PROFILE": variant},
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
            popen = monitored.popen
        try:
            url = _ready(popen, f"orders ({variant})")
            proc = psutil.Process(popen.pid)
            load = Load(url, rate_per_s=rate_per_s)
            load.run(warmup_s)
            cpu0, threads0, wall0 = _cpu_s(proc), _threads(popen.pid), time.monotonic()
            done = load.run(duration_s)
            cpu1, threads1, wall1 = _cpu_s(proc), _threads(popen.pid), time.monotonic()
            rss = proc.memory_info().rss
            shipped = None
            if monitored is not None and obs.receiver is not None:
                agents = [a for a in obs.receiver.agents() if a["pid"] == popen.pid]
                shipped = agents[0]["events"] if agents else 0
        finally:
            _stop(popen)
    finally:
        stderr.close()
    ms = sorted(ns / 1e6 for _, ns in done)

    def pct(q: float) -> float:
        return ms[min(len(ms) - 1, int(len(ms) * q))]

    cpu = cpu1 - cpu0
    return {
        "variant": variant,
        "requests": len(done),
        "ok": sum(1 for status, _ in done if status in (200, 402)),
        "wall_s": wall1 - wall0,
        "cpu_s": cpu,
        "cpu_ms_per_request": 1000 * cpu / len(done),
        "cpu_share": cpu / (wall1 - wall0),
        "threads_cpu_s": {k: threads1[k] - threads0.get(k, 0.0) for k in threads1},
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "rss_mib": rss / 2**20,
        "events_shipped_total": shipped,
    }


def _summary(runs: list[dict[str, Any]], repeat: int) -> dict[str, dict[str, Any]]:
    by = {v: [r for r in runs if r["variant"] == v] for v in VARIANTS}
    out: dict[str, dict[str, Any]] = {}
    for v, rs in by.items():
        if not rs:
            continue
        row: dict[str, Any] = {
            key: statistics.median(r[key] for r in rs)
            for key in ("cpu_ms_per_request", "cpu_share", "p50_ms", "p95_ms", "p99_ms", "rss_mib")
        }
        row["cpu_ms_per_request_range"] = [
            min(r["cpu_ms_per_request"] for r in rs),
            max(r["cpu_ms_per_request"] for r in rs),
        ]
        # paired with the plain run of the same repetition (interleaved, so same conditions)
        overheads = [
            by[v][i]["cpu_ms_per_request"] / by["plain"][i]["cpu_ms_per_request"] - 1
            for i in range(min(repeat, len(by[v]), len(by["plain"])))
        ]
        p95s = [
            by[v][i]["p95_ms"] / by["plain"][i]["p95_ms"] - 1
            for i in range(min(repeat, len(by[v]), len(by["plain"])))
        ]
        row["cpu_overhead"] = statistics.median(overheads)
        row["cpu_overhead_range"] = [min(overheads), max(overheads)]
        row["cpu_overhead_runs"] = overheads
        row["p95_overhead"] = statistics.median(p95s)
        out[v] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter windows, 3 repetitions")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--duration", type=float, default=None, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=DEMO_RATE_PER_S)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    repeat = args.repeat or (3 if args.quick else 5)
    duration_s = args.duration or (20.0 if args.quick else 40.0)
    variants = [v for v in args.variants.split(",") if v]
    if "plain" not in variants:
        variants.insert(0, "plain")

    import lumin_nb as lm

    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="lumin-overhead-") as folder:
        root = pathlib.Path(folder)
        obs = lm.start(profile="prod_safe", store=root / "store")
        payments: subprocess.Popen[bytes] | None = None
        errfile: IO[bytes] = (root / "payments.stderr").open("ab")
        try:
            payments = subprocess.Popen(
                _argv("payments"), env=_clean_env(), stdout=subprocess.PIPE, stderr=errfile
            )
            payments_url = _ready(payments, "payments")
            for rep in range(repeat):
                order = variants[rep % len(variants) :] + variants[: rep % len(variants)]
                for variant in order:
                    r = run_once(
                        variant,
                        payments_url=payments_url,
                        obs=obs,
                        logs=root,
                        duration_s=duration_s,
                        warmup_s=args.warmup,
                        rate_per_s=args.rate,
                    )
                    r["repetition"] = rep
                    runs.append(r)
                    print(
                        f"  rep {rep} {variant:<9} {r['cpu_ms_per_request']:.3f} ms CPU/request, "
                        f"p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms, "
                        f"{r['requests']} requests",
                        flush=True,
                    )
        finally:
            if payments is not None:
                _stop(payments)
            errfile.close()
            with contextlib.suppress(Exception):
                lm.stop()
    runs.sort(key=lambda r: (r["repetition"], VARIANTS.index(r["variant"])))
    summary = _summary(runs, repeat)
    plain = summary["plain"]
    print(
        f"\norders service at {args.rate:g} requests/s, {duration_s:g} s measured per run, "
        f"{repeat} interleaved repetitions, {os.cpu_count()} cores; median (min..max)\n"
    )
    print(
        "| variant | CPU ms/request | CPU overhead vs plain | CPU % of a core "
        "| p50 ms | p95 ms | p99 ms | RSS MiB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for v, row in summary.items():
        lo, hi = row["cpu_ms_per_request_range"]
        olo, ohi = row["cpu_overhead_range"]
        overhead = (
            "(baseline)" if v == "plain" else f"{row['cpu_overhead']:+.1%} ({olo:+.1%}..{ohi:+.1%})"
        )
        print(
            f"| {v} | {row['cpu_ms_per_request']:.3f} ({lo:.3f}..{hi:.3f}) | {overhead} | "
            f"{row['cpu_share']:.1%} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f} | "
            f"{row['p99_ms']:.1f} | {row['rss_mib']:.0f} |"
        )
    safe = summary.get("prod_safe")
    met = safe is not None and safe["cpu_overhead"] <= TARGET_OVERHEAD
    if safe is not None:
        print(
            f"\ntarget: prod_safe CPU overhead <= {TARGET_OVERHEAD:.0%}: "
            f"{'met' if met else 'MISSED'} ({safe['cpu_overhead']:+.1%}; plain "
            f"{plain['cpu_ms_per_request']:.3f} ms/request)"
        )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "service": "lumin_nb.demo.system.orders",
                "rate_per_s": args.rate,
                "duration_s": duration_s,
                "warmup_s": args.warmup,
                "repeat": repeat,
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "summary": summary,
                "runs": runs,
                "target_overhead": TARGET_OVERHEAD,
                "target_met": met,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
