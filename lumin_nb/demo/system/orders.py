"""The orders service: prices a cart from its database, reserves stock, asks payments to charge.

``POST /orders`` ``{"order_id", "items": {product: qty}, "card"}`` -> ``{"order_id", "total",
"payment"}``; ``GET /stats`` -> order counts (the batch job reads them). The database is an
in-memory SQLite behind `Database.query`, which also pays a small round trip per query as a
networked database would. Faults living here: ``slow_db`` (`Database.query`), ``n_plus_one``
(`load_products`), ``memory_leak`` (`remember_order`).
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from typing import Any, Final

from lumin_nb.demo.system import service
from lumin_nb.demo.system.faults import switch

log = logging.getLogger("shop.orders")

PRODUCTS: Final = 40
ROUND_TRIP_S: Final = 0.001
LEAK_BYTES: Final = 200 * 1024

_leaked: list[bytes] = []  # what the memory_leak fault never lets go
_rng = random.Random()


class OrderError(Exception):
    """An order that cannot be placed (unknown product, no stock, payment failed)."""


class Database:
    """The orders database (SQLite in memory; one connection guarded by a lock)."""

    def __init__(self) -> None:
        self._conn = sqlite3.connect(":memory:", check_same_thread=False)
        self._lock = threading.Lock()
        self._conn.execute("create table products (id text primary key, price real, stock int)")
        self._conn.execute("create table orders (id int, total real, status text)")
        seed = random.Random(11)
        self._conn.executemany(
            "insert into products values (?, ?, ?)",
            [(f"p{i}", round(seed.uniform(2, 80), 2), 1_000_000) for i in range(PRODUCTS)],
        )

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement and return its rows."""
        time.sleep(ROUND_TRIP_S)
        if switch.active("slow_db"):
            time.sleep(_rng.uniform(0.05, 0.2))
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
            self._conn.commit()
        return rows


def load_products(db: Database, items: dict[str, int]) -> dict[str, tuple[float, int]]:
    """Return price and stock of the cart's products (one query; N under ``n_plus_one``)."""
    names = sorted(items)
    if switch.active("n_plus_one"):
        rows = [
            r for name in names for r in db.query("select * from products where id = ?", (name,))
        ]
    else:
        marks = ",".join("?" * len(names))
        rows = db.query(f"select * from products where id in ({marks})", tuple(names))
    return {pid: (price, stock) for pid, price, stock in rows}


def price_cart(products: dict[str, tuple[float, int]], items: dict[str, int]) -> float:
    """Return the cart total (5% off above 200)."""
    missing = sorted(set(items) - set(products))
    if missing:
        raise OrderError(f"unknown products: {', '.join(missing)}")
    total = sum(products[p][0] * qty for p, qty in items.items())
    return round(total * 0.95 if total > 200 else total, 2)


def reserve_stock(db: Database, items: dict[str, int]) -> None:
    """Take the cart's quantities from stock (one statement for the whole cart)."""
    pairs = sorted(items.items())
    cases = " ".join("when ? then ?" for _ in pairs)
    marks = ",".join("?" * len(pairs))
    params = tuple(x for pair in pairs for x in pair) + tuple(pid for pid, _ in pairs)
    db.query(
        f"update products set stock = stock - (case id {cases} end) where id in ({marks})", params
    )


def remember_order(order: dict[str, Any]) -> None:
    """Keep what the order confirmation needs (``memory_leak``: and never let it go)."""
    if switch.active("memory_leak"):
        _leaked.append(str(order).encode() * (LEAK_BYTES // 64) + b"\x01" * 64)


class Orders:
    """The orders routes over one database and the payments service."""

    def __init__(self, payments_url: str) -> None:
        self.db = Database()
        self.payments_url = payments_url
        self.counts = {"placed": 0, "declined": 0, "failed": 0}
        self._lock = threading.Lock()

    def create_order(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Place one order: load, price, reserve, charge, record."""
        order_id = int(body.get("order_id", 0))
        items = {str(k): int(v) for k, v in dict(body.get("items") or {}).items()}
        try:
            products = load_products(self.db, items)
            total = price_cart(products, items)
            reserve_stock(self.db, items)
            status, payment = service.call(
                self.payments_url,
                "/charge",
                {"order_id": order_id, "amount": total, "card": body.get("card", "")},
            )
            if status == 402:
                self._count("declined")
                log.warning("order %d declined: %s", order_id, payment.get("error"))
                return 402, {"order_id": order_id, "error": payment.get("error")}
            if status != 200:
                raise OrderError(f"payment failed ({status}): {payment.get('error')}")
        except OrderError as exc:
            self._count("failed")
            log.error("order %d failed: %s", order_id, exc)
            return 502, {"order_id": order_id, "error": str(exc)}
        self.db.query("insert into orders values (?, ?, ?)", (order_id, total, "paid"))
        order = {"order_id": order_id, "total": total, "payment": payment.get("payment_id")}
        remember_order(order)
        self._count("placed")
        log.info("order %d placed: %.2f (%d items)", order_id, total, len(items))
        return 200, order

    def stats(self, _body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Order counts and the revenue so far."""
        ((n, revenue),) = self.db.query("select count(*), coalesce(sum(total), 0) from orders")
        with self._lock:
            counts = dict(self.counts)
        return 200, {**counts, "stored": n, "revenue": round(revenue, 2), "leaked": len(_leaked)}

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1


def main(*, port: int, payments_url: str, parent_pid: int | None) -> None:
    """Serve the orders routes until SIGTERM."""
    orders = Orders(payments_url)
    service.serve(
        "orders",
        {("POST", "/orders"): orders.create_order, ("GET", "/stats"): orders.stats},
        port=port,
        parent_pid=parent_pid,
    )
