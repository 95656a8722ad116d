"""The demo system's faults: what each one breaks, where, and when it is on.

One fault per run. The runner schedules it (`Fault`: a name, a start and maybe an end, epoch
ns) by posting it to every service's ``/_fault`` route; each service asks `FaultSwitch.active`
at the point the fault lives. `CULPRITS` is the ground truth a root-cause analysis should
find: the service and the function (``module:qualname``, as the call tracer names it).
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Final, Literal, TypedDict, get_args

FaultName = Literal[
    "slow_db", "memory_leak", "error_burst", "n_plus_one", "lock_contention", "bad_deploy"
]
FAULTS: Final[tuple[FaultName, ...]] = get_args(FaultName)

_PKG: Final = "lumin_nb.demo.system"


class Culprit(TypedDict):
    """Where a fault lives and what it does."""

    service: str
    function: str
    description: str


CULPRITS: Final[dict[FaultName, Culprit]] = {
    "slow_db": {
        "service": "orders",
        "function": f"{_PKG}.orders:Database.query",
        "description": "every orders db query sleeps 50-200 ms: checkout latency rises",
    },
    "memory_leak": {
        "service": "orders",
        "function": f"{_PKG}.orders:remember_order",
        "description": "orders keeps ~200 KB per order in a module-level list: its RSS climbs",
    },
    "error_burst": {
        "service": "payments",
        "function": f"{_PKG}.payments:charge",
        "description": "payments raises ProcessorError for ~30% of charges during a window",
    },
    "n_plus_one": {
        "service": "orders",
        "function": f"{_PKG}.orders:load_products",
        "description": "orders issues one db query per cart item instead of one per cart",
    },
    "lock_contention": {
        "service": "payments",
        "function": f"{_PKG}.payments:settle",
        "description": "payments holds one ledger lock while settling: request threads queue",
    },
    "bad_deploy": {
        "service": "gateway",
        "function": f"{_PKG}.gateway:enrich_v2",
        "description": "gateway logs 'deploy v2'; v2's enrich step adds latency and ~15% errors",
    },
}

#: the share of charges that fail during an error burst
ERROR_BURST_RATE: Final = 0.3


def check_fault(name: str | None) -> FaultName | None:
    """Return `name` as a fault name (None and "none" mean no fault); raise on others."""
    if name is None or name == "none":
        return None
    if name not in FAULTS:
        import difflib

        from lumin_nb.errors import ConfigError, closest

        near = difflib.get_close_matches(name, FAULTS, n=1, cutoff=0.5)
        raise ConfigError(
            f"fault={name!r} is not a demo fault.{closest(name, FAULTS)}\n"
            f"Expected one of: none, {', '.join(FAULTS)}.\n"
            f"Fix: run_system(fault={(near[0] if near else FAULTS[0])!r})"
        )
    return name


@dataclass(frozen=True)
class Fault:
    """A scheduled fault: on from `start_ns` until `end_ns` (None: to the end of the run)."""

    name: FaultName
    start_ns: int
    end_ns: int | None = None

    def is_on(self, now_ns: int) -> bool:
        """Whether the fault is on at `now_ns` (epoch ns)."""
        return self.start_ns <= now_ns and (self.end_ns is None or now_ns < self.end_ns)

    def to_json(self) -> dict[str, object]:
        """The body of a ``/_fault`` request."""
        return asdict(self)

    @classmethod
    def from_json(cls, body: dict[str, object]) -> Fault:
        """Read a ``/_fault`` request body (raises ValueError when it is not a fault)."""
        name = check_fault(str(body.get("name")))
        start, end = body.get("start_ns"), body.get("end_ns")
        if name is None or not isinstance(start, int) or not isinstance(end, int | None):
            raise ValueError(f"not a fault: {body!r}")
        return cls(name, start, end)


class FaultSwitch:
    """The fault a service process is told about (thread-safe; one per process)."""

    def __init__(self) -> None:
        self._fault: Fault | None = None
        self._lock = threading.Lock()

    def set(self, fault: Fault | None) -> None:
        """Schedule `fault` (None: no fault)."""
        with self._lock:
            self._fault = fault

    @property
    def fault(self) -> Fault | None:
        """The scheduled fault, if any."""
        return self._fault

    def active(self, name: FaultName) -> bool:
        """Whether fault `name` is on now."""
        fault = self._fault
        return fault is not None and fault.name == name and fault.is_on(time.time_ns())


#: the switch of this process (each demo service is its own process)
switch: Final = FaultSwitch()
