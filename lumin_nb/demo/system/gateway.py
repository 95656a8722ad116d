"""The gateway: the shop's front door. Checks and enriches a checkout, forwards it to orders.

``POST /checkout`` ``{"order_id", "items", "card"}`` -> what orders answers. A request without
``traceparent`` starts a new trace here. Fault living here: ``bad_deploy``, which logs
"deploy v2" (attrs ``annotation="deploy"``, ``version="v2"``) when it starts; from then on
`enrich_v2` replaces `enrich`, slower and failing ~15% of requests.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any, Final

from lumin_nb.demo.system import service
from lumin_nb.demo.system.faults import Fault, switch

log = logging.getLogger("shop.gateway")

V2_ERROR_RATE: Final = 0.15
MAX_ITEMS: Final = 50

_rng = random.Random()


class BadRequest(Exception):
    """A checkout the gateway refuses."""


def validate(body: dict[str, Any]) -> dict[str, int]:
    """Return the cart's items, checked."""
    items = body.get("items")
    if not isinstance(items, dict) or not items:
        raise BadRequest("a checkout needs items: {product: quantity}")
    if len(items) > MAX_ITEMS:
        raise BadRequest(f"{len(items)} items in one cart; at most {MAX_ITEMS}")
    return {str(k): int(v) for k, v in items.items()}


def enrich(body: dict[str, Any]) -> dict[str, Any]:
    """Add what orders needs besides the cart (release v1)."""
    return {**body, "currency": "EUR", "channel": body.get("channel", "web")}


def enrich_v2(body: dict[str, Any]) -> dict[str, Any]:
    """Release v2 of `enrich`: calls a recommendations lookup on the request path."""
    time.sleep(_rng.uniform(0.03, 0.09))
    if _rng.random() < V2_ERROR_RATE:
        raise RuntimeError("v2 enrich: recommendations lookup returned no data")
    return {**enrich(body), "recommendations": ["p1", "p2"]}


class Gateway:
    """The gateway routes, forwarding to the orders service."""

    def __init__(self, orders_url: str) -> None:
        self.orders_url = orders_url

    def checkout(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Check, enrich and forward one checkout."""
        order_id = int(body.get("order_id", 0))
        try:
            items = validate(body)
        except BadRequest as exc:
            log.warning("checkout %d refused: %s", order_id, exc)
            return 400, {"error": str(exc)}
        step = enrich_v2 if switch.active("bad_deploy") else enrich
        try:
            order = step({**body, "items": items})
        except RuntimeError as exc:
            log.error("checkout %d failed in %s", order_id, step.__name__, exc_info=True)
            return 500, {"error": str(exc)}
        status, reply = service.call(self.orders_url, "/orders", order)
        if status == 200:
            log.info("checkout %d ok: %.2f", order_id, reply.get("total", 0.0))
        elif status < 500:
            log.warning("checkout %d refused: orders answered %d", order_id, status)
        else:
            log.error("checkout %d failed: orders answered %d", order_id, status)
        return status, reply


def _announce_deploy(fault: Fault | None) -> None:
    """Log "deploy v2" when a ``bad_deploy`` fault starts (a timer until its start)."""
    if fault is None or fault.name != "bad_deploy":
        return

    def deploy() -> None:
        log.warning("deploy v2", extra={"annotation": "deploy", "version": "v2"})

    delay_s = max(0.0, (fault.start_ns - time.time_ns()) / 1e9)
    timer = threading.Timer(delay_s, deploy)
    timer.name = "demo-deploy"
    timer.daemon = True
    timer.start()


def main(*, port: int, orders_url: str, parent_pid: int | None) -> None:
    """Serve the gateway routes until SIGTERM."""
    gateway = Gateway(orders_url)
    service.serve(
        "gateway",
        {("POST", "/checkout"): gateway.checkout},
        port=port,
        parent_pid=parent_pid,
        on_fault=_announce_deploy,
    )
