"""The payments worker: charges cards for orders, settling each charge in a shared ledger.

``POST /charge`` ``{"order_id", "amount", "card"}`` -> ``{"payment_id"}``, or 402 for a
declined card (a warning) and 503 when the processor fails (an error log with the exception).
Faults living here: ``error_burst`` (`charge` raises for ~30% of charges during a window) and
``lock_contention`` (`settle` holds the ledger lock while it works, so request threads queue).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any, Final

from lumin_nb.demo.system import service
from lumin_nb.demo.system.faults import ERROR_BURST_RATE, switch

log = logging.getLogger("shop.payments")

SETTLE_S: Final = 0.003
CONTENDED_SETTLE_S: Final = 0.04

_ledger: dict[str, float] = {}
_ledger_lock = threading.Lock()
_rng = random.Random()


class PaymentDeclined(Exception):
    """The card was declined (a normal business outcome)."""


class ProcessorError(Exception):
    """The card processor failed (what ``error_burst`` injects)."""


def authorize(amount: float, card: str) -> None:
    """Ask the card processor; cards ending 0000 are declined."""
    if card.endswith("0000"):
        raise PaymentDeclined(f"card ending {card[-4:]} declined for {amount:.2f}")


def settle(payment_id: str, amount: float) -> None:
    """Book the payment in the ledger (``lock_contention``: slowly, under the lock)."""
    if switch.active("lock_contention"):
        with _ledger_lock:
            time.sleep(CONTENDED_SETTLE_S)
            _ledger[payment_id] = amount
        return
    time.sleep(SETTLE_S)
    with _ledger_lock:
        _ledger[payment_id] = amount


def charge(order_id: int, amount: float, card: str) -> str:
    """Authorize and settle one charge; return the payment id."""
    if switch.active("error_burst") and _rng.random() < ERROR_BURST_RATE:
        raise ProcessorError(f"card processor timed out charging order {order_id}")
    authorize(amount, card)
    payment_id = f"pay-{order_id:08d}"
    settle(payment_id, amount)
    return payment_id


def handle_charge(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The ``POST /charge`` route."""
    order_id = int(body.get("order_id", 0))
    amount = float(body.get("amount", 0.0))
    try:
        payment_id = charge(order_id, amount, str(body.get("card", "")))
    except PaymentDeclined as exc:
        log.warning("order %d declined: %s", order_id, exc)
        return 402, {"error": str(exc)}
    except ProcessorError as exc:
        log.error("order %d: charge failed", order_id, exc_info=True)
        return 503, {"error": str(exc)}
    log.info("order %d charged %.2f as %s", order_id, amount, payment_id)
    return 200, {"payment_id": payment_id}


def main(*, port: int, parent_pid: int | None) -> None:
    """Serve the payments routes until SIGTERM."""
    service.serve(
        "payments", {("POST", "/charge"): handle_charge}, port=port, parent_pid=parent_pid
    )
