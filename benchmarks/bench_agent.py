"""Agent -> observatory over loopback ZeroMQ, against raw pyzmq PUSH/PULL of the same bytes.

A child process (the monitored program) ships ready 64K-row event batches (`gen_events`) to
this process, which runs a `Receiver` into a real `Store`. Variants, interleaved, best of R:

- ``raw pyzmq PUSH/PULL``: the child pushes the same Arrow IPC bytes, this process pulls them
  and does nothing else: the floor for moving these bytes between two processes;
- ``lumin agent (paced)``: the child calls `Agent.ship` and waits while its queue holds 4
  batches (never overloaded): the agent stamps producer/seq, encodes IPC, keeps each batch
  until acked; the receiver checks the token, validates, appends to the store (dedupe,
  writer), acks. Rate = events acknowledged / time; loss must be zero;
- ``lumin agent (overloaded)``: the child ships as fast as it can into small bounds, so the
  agent drops; offered == stored + dropped must hold exactly, with no seq gaps.

    python benchmarks/bench_agent.py [--quick] [--batches N] [--repeat R]

Prints a markdown table and writes benchmarks/results/agent.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results" / "agent.json"
TARGET_EVENTS_PER_S = 1_000_000
ROWS = 65_536


def _batch() -> Any:
    sys.path.insert(0, str(HERE))
    from gen_events import generate

    return next(iter(generate(ROWS, batch_rows=ROWS)))


# -- the child: the monitored program ---------------------------------------------------------
def child(mode: str, endpoint: str, control: str, token: str, batches: int) -> None:
    import zmq

    batch = _batch()
    pause = threading.Event()
    if mode == "raw":
        from lumin_nb.agent.wire import encode_batch

        payload = encode_batch(batch)
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.SNDHWM, 16)
        push.connect(endpoint)
        t0 = time.time()
        for _ in range(batches):
            push.send(payload, copy=False)
        push.close(linger=-1)  # blocks until every message left
        ctx.term()
        print(json.dumps({"t0": t0}), flush=True)
        return
    from lumin_nb.agent import Agent

    overloaded = mode == "overloaded"
    agent = Agent(
        endpoint,
        token=token,
        service="bench",
        control_endpoint=control,
        collect=False,
        max_queued_batches=2 if overloaded else 8,
        max_pending_bytes=(24 << 20) if overloaded else (512 << 20),
    )
    agent.start()
    offered = 0
    t0 = time.time()
    for _ in range(batches):
        if not overloaded:
            while True:  # never overload: at most 4 queued and 64 MiB unacknowledged
                queued, unacked = agent.backlog()
                if queued < 4 and unacked < (64 << 20):
                    break
                pause.wait(0.001)
        agent.ship(batch)
        offered += batch.num_rows
    delivered = agent.flush(120)
    t1 = time.time()
    stats = agent.stats()
    agent.stop()
    print(
        json.dumps(
            {
                "t0": t0,
                "t1": t1,
                "offered": offered,
                "delivered": delivered,
                "producer": stats["producer"],
                "dropped": stats["dropped"],
                "resent": stats["resent_batches"],
            }
        ),
        flush=True,
    )


# -- the observatory side ----------------------------------------------------------------------
def _spawn(mode: str, endpoint: str, control: str, token: str, batches: int) -> Any:
    return subprocess.Popen(
        [sys.executable, __file__, "--child", mode, endpoint, control, token, str(batches)],
        stdout=subprocess.PIPE,
        text=True,
    )


def run_raw(batches: int) -> dict[str, Any]:
    import zmq

    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, 64)
    pull.bind("tcp://127.0.0.1:*")
    endpoint = pull.getsockopt(zmq.LAST_ENDPOINT).decode()  # type: ignore[union-attr]
    proc = _spawn("raw", endpoint, "-", "-", batches)
    for _ in range(batches):
        pull.recv(copy=False)
    t1 = time.time()
    out = json.loads(proc.communicate()[0])
    ctx.destroy(linger=0)
    events = batches * ROWS
    return {"events": events, "seconds": t1 - out["t0"], "lost": 0, "dropped": 0}


def run_agent(mode: str, batches: int) -> dict[str, Any]:
    import pyarrow.compute as pc

    from lumin_nb.agent import Receiver
    from lumin_nb.store import Store

    with tempfile.TemporaryDirectory() as folder:
        store = Store.open(pathlib.Path(folder) / "store")
        rx = Receiver(store, token="bench-token")
        try:
            proc = _spawn(mode, rx.endpoint, rx.control_endpoint, rx.token, batches)
            out = json.loads(proc.communicate()[0])
            info = rx.agent(out["producer"])
            store.flush()
            table = store.scan(columns=["producer", "seq", "entity", "value"])
        finally:
            rx.stop()
            store.close()
    mine = table.filter(pc.equal(table.column("producer"), out["producer"]))
    is_report = pc.fill_null(pc.equal(mine.column("entity"), "lumin.agent.dropped"), False)
    reports = mine.filter(is_report)
    stored = mine.num_rows - reports.num_rows - 1  # the agent's own process-start event
    dropped = sum(out["dropped"].values())
    seqs = mine.column("seq").to_numpy()
    gaps = int(seqs.max() - len(seqs)) if len(seqs) else 0
    return {
        "events": stored,
        "offered": out["offered"],
        "seconds": out["t1"] - out["t0"],
        "dropped": dropped,
        "dropped_reported": int(pc.sum(reports.column("value")).as_py() or 0),
        "lost": info["lost"],
        "seq_gaps": gaps,
        "duplicates_stored": len(seqs) - len(set(seqs.tolist())),
        "resent": out["resent"],
        "exact": stored + dropped == out["offered"] and gaps == 0,
        "all_acked": out["delivered"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer batches, one repeat")
    parser.add_argument("--batches", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, endpoint, control, token, n = args.child
        child(mode, endpoint, control, token, int(n))
        return
    batches = args.batches or (48 if args.quick else 160)
    repeat = args.repeat or (1 if args.quick else 3)
    runs: dict[str, list[dict[str, Any]]] = {"raw": [], "paced": [], "overloaded": []}
    for _ in range(repeat):
        runs["raw"].append(run_raw(batches))
        runs["paced"].append(run_agent("paced", batches))
        runs["overloaded"].append(run_agent("overloaded", batches))
    best = {k: min(v, key=lambda r: r["seconds"]) for k, v in runs.items()}
    rate = {k: r["events"] / r["seconds"] for k, r in best.items()}
    names = {
        "raw": "raw pyzmq PUSH/PULL (peer)",
        "paced": "lumin agent -> receiver -> store (paced)",
        "overloaded": "lumin agent (overloaded)",
    }
    print(f"\n{batches} batches x {ROWS} rows, best of {repeat}, {os.cpu_count()} cores\n")
    print("| variant | events/s stored | x peer | offered | dropped (counted) | lost | exact |")
    print("|---|---|---|---|---|---|---|")
    for key, r in best.items():
        print(
            f"| {names[key]} | {rate[key]:,.0f} | {rate[key] / rate['raw']:.2f} | "
            f"{r.get('offered', r['events']):,} | {r['dropped']:,} | {r['lost']} | "
            f"{r.get('exact', True)} |"
        )
    ok = rate["paced"] >= TARGET_EVENTS_PER_S and best["paced"]["dropped"] == 0
    print(
        f"\ntarget >= {TARGET_EVENTS_PER_S:,} events/s with zero loss: {'met' if ok else 'MISSED'}"
    )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "batches": batches,
                "rows_per_batch": ROWS,
                "repeat": repeat,
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "events_per_s": rate,
                "ratio_to_raw_pyzmq": {k: v / rate["raw"] for k, v in rate.items()},
                "best": best,
                "runs": runs,
                "target_events_per_s": TARGET_EVENTS_PER_S,
                "target_met": ok,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
