"""Start one demo service: ``python -m lumin_nb.demo.system orders --payments-url URL``.

The runner starts each service this way with ``lm.run`` (so its agent ships to the
observatory); the service module is imported by its real name, so the call tracer names its
functions ``lumin_nb.demo.system.orders:...``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the arguments and run the named service until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m lumin_nb.demo.system")
    parser.add_argument("service", choices=["gateway", "orders", "payments", "batch"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--orders-url", default="")
    parser.add_argument("--payments-url", default="")
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--interval", type=float, default=1.0, help="batch: seconds per run")
    args = parser.parse_args(argv)
    if args.service == "gateway":
        from lumin_nb.demo.system import gateway

        gateway.main(port=args.port, orders_url=args.orders_url, parent_pid=args.parent_pid)
    elif args.service == "orders":
        from lumin_nb.demo.system import orders

        orders.main(port=args.port, payments_url=args.payments_url, parent_pid=args.parent_pid)
    elif args.service == "payments":
        from lumin_nb.demo.system import payments

        payments.main(port=args.port, parent_pid=args.parent_pid)
    else:
        from lumin_nb.demo.system import batch

        batch.main(orders_url=args.orders_url, parent_pid=args.parent_pid, interval_s=args.interval)


if __name__ == "__main__":
    main()
