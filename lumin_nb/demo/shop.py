"""A small shop used by the demo, tutorials and tests: carts, pricing, stock, payments.

Deterministic for a given seed. About one order in eight fails (out of stock or a declined
card) so there are exceptions and error logs to find; payments run in a worker thread and
notifications as asyncio tasks, so threads and tasks show up too.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

log = logging.getLogger("shop")

#: test card numbers; the one ending 0000 is always declined (one order in eight)
_CARDS = ["4111111111111111"] * 4 + ["4012888888881881"] * 3 + ["5500000000000000"]


class OutOfStock(Exception):
    """No stock left for an item."""


class PaymentDeclined(Exception):
    """The card was declined."""


@dataclass
class Cart:
    """Items (name -> quantity) and a coupon."""

    items: dict[str, int] = field(default_factory=dict)
    coupon: str | None = None


class Inventory:
    """Stock per item; reserving more than there is raises OutOfStock."""

    def __init__(self, rng: random.Random) -> None:
        self.stock = {f"item{i}": rng.randint(100, 300) * 3 for i in range(20)}
        self._lock = threading.Lock()

    def reserve(self, item: str, qty: int) -> None:
        with self._lock:
            if self.stock.get(item, 0) < qty:
                raise OutOfStock(f"{item}: wanted {qty}, have {self.stock.get(item, 0)}")
            self.stock[item] -= qty


class PricingEngine:
    """Prices with tiered discounts (a recursive rule walk)."""

    PRICES: ClassVar[dict[str, float]] = {f"item{i}": 5.0 + i * 1.5 for i in range(20)}

    def line_items(self, cart: Cart) -> Iterator[tuple[str, float]]:
        for item, qty in cart.items.items():
            yield item, self.PRICES[item] * qty

    def discount(self, total: float, tier: int = 3) -> float:
        if tier == 0 or total < 50:
            return total
        return self.discount(total * 0.98, tier - 1)

    def quote(self, cart: Cart) -> float:
        total = sum(price for _, price in self.line_items(cart))
        if cart.coupon == "SAVE10":
            total *= 0.9
        return round(self.discount(total), 2)


class PaymentGateway:
    """Charges cards in a worker thread; some cards are declined."""

    def charge(self, amount: float, card: str) -> str:
        result: dict[str, object] = {}

        def work() -> None:
            try:
                if card.endswith("0000"):
                    raise PaymentDeclined(f"card ending {card[-4:]} declined for {amount:.2f}")
                result["id"] = f"pay-{abs(hash((amount, card))) % 10**8:08d}"
            except PaymentDeclined as exc:
                result["error"] = exc

        worker = threading.Thread(target=work, name="payment-worker")
        worker.start()
        worker.join()
        if "error" in result:
            raise result["error"]  # type: ignore[misc]
        return str(result["id"])


async def notify(order_id: int, total: float) -> str:
    """Send an order confirmation (an asyncio task per order)."""
    await asyncio.sleep(0)
    return f"order {order_id}: {total:.2f} confirmed"


def checkout(order_id: int, cart: Cart, inventory: Inventory, card: str) -> float:
    """Reserve stock, price, charge and confirm one order."""
    pricing = PricingEngine()
    for item, qty in cart.items.items():
        inventory.reserve(item, qty)
    total = pricing.quote(cart)
    PaymentGateway().charge(total, card)
    log.info("order %d paid: %.2f", order_id, total)
    return total


async def _confirm(orders: list[tuple[int, float]]) -> list[str]:
    tasks = [asyncio.create_task(notify(oid, total), name=f"notify-{oid}") for oid, total in orders]
    return await asyncio.gather(*tasks)


def _run_async(coro: Coroutine[Any, Any, list[str]]) -> list[str]:
    """Run `coro` to completion, also from a notebook whose own loop is running."""
    if asyncio._get_running_loop() is None:  # public; unlike get_running_loop it never raises
        return asyncio.run(coro)
    result: list[list[str]] = []
    worker = threading.Thread(target=lambda: result.append(asyncio.run(coro)), name="notifier")
    worker.start()
    worker.join()
    return result[0]


def run(orders: int = 200, seed: int = 7) -> dict[str, int]:
    """Run `orders` checkouts; return counts of paid and failed orders."""
    rng = random.Random(seed)
    inventory = Inventory(rng)
    paid: list[tuple[int, float]] = []
    failed = 0
    for order_id in range(orders):
        items = {f"item{rng.randrange(20)}": rng.randint(1, 9) for _ in range(rng.randint(1, 4))}
        cart = Cart(items, coupon=rng.choice([None, None, "SAVE10"]))
        card = rng.choice(_CARDS)
        try:
            paid.append((order_id, checkout(order_id, cart, inventory, card)))
        except (OutOfStock, PaymentDeclined):
            failed += 1
            log.error("order %d failed", order_id, exc_info=True)
    _run_async(_confirm(paid[:20]))
    return {"paid": len(paid), "failed": failed}
