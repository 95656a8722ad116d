"""The batch job: every interval it reconciles the day's orders and logs what it found.

It asks orders for ``GET /stats`` in a trace of its own and logs a summary (info), a warning
when failures grow faster than orders. It is not an HTTP server: it announces itself with
port 0 and runs until SIGTERM (or until the runner is gone).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Final

from lumin_nb import context
from lumin_nb.demo.system import service

log = logging.getLogger("shop.batch")

INTERVAL_S: Final = 1.0


def reconcile(orders_url: str, last: dict[str, Any]) -> dict[str, Any]:
    """Read the order counts, log the change since `last`, return the new counts."""
    status, stats = service.call(orders_url, "/stats", method="GET")
    if status != 200:
        log.error("reconcile: orders answered %d", status)
        return last
    placed = stats["placed"] - last.get("placed", 0)
    failed = stats["failed"] - last.get("failed", 0)
    log.info(
        "reconciled %d new orders, %d failed; revenue %.2f",
        placed,
        failed,
        stats["revenue"],
        extra={"orders_placed": placed, "orders_failed": failed},
    )
    if failed > max(2, placed):
        log.warning("reconcile: %d failed orders against %d placed", failed, placed)
    return stats


def main(*, orders_url: str, parent_pid: int | None, interval_s: float = INTERVAL_S) -> None:
    """Reconcile every `interval_s` until SIGTERM."""
    service.install_trace_log_records()
    service.end_on_sigterm()
    if parent_pid is not None:
        service.watch_parent(parent_pid)
    service.announce("batch")
    last: dict[str, Any] = {}
    tick = threading.Event()
    while True:
        tick.wait(interval_s)  # the job's schedule, not synchronisation
        with context.use(context.TraceContext.new()):
            try:
                last = reconcile(orders_url, last)
            except OSError as exc:
                log.error("reconcile: orders unreachable (%s)", exc)
