"""The ``lumin`` command: a thin layer over the public API.

lumin status [--store PATH]            what a store holds
lumin query "SQL" [--store PATH]       DuckDB SQL over the view `events`
lumin demo [--store PATH]              traced sample workload, then a few queries
lumin version
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from lumin_nb._version import __version__
from lumin_nb.config import DEFAULT_HOME, ENV_HOME
from lumin_nb.demo.system.faults import FAULTS
from lumin_nb.errors import LuminError


def _store_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        default=os.environ.get(ENV_HOME, DEFAULT_HOME),
        help=f"store folder (default ${ENV_HOME} or {DEFAULT_HOME})",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lumin", description="Lumin: a Jupyter-native observatory for running software."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("status", help="what a store holds")
    _store_arg(p)
    p = sub.add_parser("query", help="run DuckDB SQL over the view `events` of a store")
    p.add_argument("sql", help='e.g. "select kind, count(*) from events group by 1"')
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--max-rows", type=int, default=50, help="rows shown with --format table")
    _store_arg(p)
    p = sub.add_parser("run", help="run a command as a monitored process of a running observatory")
    p.add_argument("--service", required=True, help="the service name of its events")
    p.add_argument(
        "--watch", action="append", default=[], help="trace calls of matching modules (repeat)"
    )
    _store_arg(p)
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- python app.py ...")
    p = sub.add_parser("demo", help="trace a sample workload and show what Lumin sees")
    p.add_argument("--store", default=None, help="store folder (default: a temporary one)")
    p.add_argument(
        "--system",
        action="store_true",
        help="run the multi-process shop (gateway, orders, payments, batch); implied by --fault",
    )
    p.add_argument(
        "--fault",
        choices=["none", *FAULTS],
        default=None,
        help="the fault the multi-process shop suffers, from half way through the run",
    )
    p.add_argument(
        "--duration", default="60s", help="how long the load runs with --system (e.g. 30s, 2m)"
    )
    p.add_argument("--rate", type=float, default=20.0, help="checkouts per second with --system")
    sub.add_parser("version", help="print the version")
    return parser


def _check_store(path: str) -> None:
    if not os.path.isdir(path):
        raise LuminError(
            f"--store {path!r} is not a Lumin store folder (it does not exist).\n"
            "Fix: pass the folder your observatory writes to, e.g. --store .lumin"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 Lumin error, 2 usage)."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "version":
            print(f"lumin {__version__}")
        elif args.command == "status":
            _check_store(args.store)
            import lumin_nb as lm

            obs = lm.open(args.store)
            try:
                for key, value in obs.store.stats().items():
                    print(f"{key:<20} {value}")
            finally:
                obs.stop()
        elif args.command == "query":
            _check_store(args.store)
            _query(args.store, args.sql, args.format, args.max_rows)
        elif args.command == "run":
            return _run(args.store, args.service, args.watch, args.cmd)
        elif args.command == "demo":
            if args.system or args.fault is not None:
                fault = None if args.fault == "none" else args.fault
                _system_demo(fault, args.duration, args.rate, args.store)
            else:
                from lumin_nb.demo import run_demo

                run_demo(store=args.store)
    except LuminError as exc:
        print(f"lumin: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _system_demo(fault: str | None, duration: str, rate: float, store: str | None) -> None:
    """Run the multi-process shop with `fault` under observation and say what happened."""
    from lumin_nb._time import parse_duration_ns
    from lumin_nb.demo.system.runner import describe, run_system

    try:
        duration_s = float(duration)  # a bare number is seconds
    except ValueError:
        duration_s = parse_duration_ns(duration, name="--duration") / 1e9
    run = run_system(fault, duration_s, rate, store, progress=print)
    print(describe(run))


def _run(store: str, service: str, watch: list[str], cmd: list[str]) -> int:
    """Run `cmd` monitored by the observatory whose store is `store`; return its exit code."""
    import json

    from lumin_nb._observatory import AGENT_FILE
    from lumin_nb.agent import spawn

    cmd = cmd[1:] if cmd[:1] == ["--"] else cmd
    if not cmd:
        raise LuminError(
            "lumin run needs a command to run.\nFix: lumin run --service orders -- python app.py"
        )
    path = os.path.join(store, AGENT_FILE)
    if not os.path.exists(path):
        raise LuminError(
            f"no running observatory accepts monitored processes at --store {store!r} "
            f"({path} is missing).\n"
            "Fix: start the observatory first (%load_ext lumin, or lm.start() in a script) "
            "and pass its store folder: lumin run --store PATH --service S -- CMD"
        )
    with open(path) as f:
        info = json.load(f)
    process = spawn(
        cmd,
        service=service,
        endpoint=info["endpoint"],
        control_endpoint=info["control_endpoint"],
        token=info["token"],
        watch=tuple(watch),
    )
    code = process.wait()
    return int(code or 0)


def _query(store: str, text: str, fmt: str, max_rows: int) -> None:
    import polars as pl

    import lumin_nb as lm

    obs = lm.open(store)
    try:
        df = obs.sql(text)
        if not isinstance(df, pl.DataFrame):  # options.frame = "pandas" set by a plugin
            df = pl.from_pandas(df)
        if fmt == "csv":
            sys.stdout.write(df.write_csv())
        elif fmt == "json":
            sys.stdout.write(df.write_ndjson())
        else:
            with pl.Config(tbl_rows=max_rows, tbl_cols=-1, fmt_str_lengths=60):
                print(df)
    finally:
        obs.stop()


if __name__ == "__main__":
    sys.exit(main())
