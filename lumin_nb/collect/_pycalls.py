"""Pure-Python backend of the call tracer: the same interface and records as `_ctracer`.

`calls.CallTracer` uses it when the C extension is not built (or with ``native=False``).
It keeps the native design (decide once per code object, DISABLE unrecorded code, per-thread
stacks keyed by frame, generators parked between yields, one fixed-size record per call into
a bounded buffer that drops and counts) but runs Python callbacks, so it costs several times
more per call; ``CallTracer.stats()["mode"]`` says so.
"""

from __future__ import annotations

import functools
import random
import sys
import threading
import time
from array import array
from collections.abc import Callable
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:  # numpy loads at the first drain
    import numpy as np

F_UNWOUND: Final = 1
F_GENERATOR: Final = 2
F_UNSAMPLED: Final = 4
_GEN_FLAGS: Final = 0x20 | 0x80 | 0x200  # CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR
_MASK64: Final = (1 << 64) - 1

RECORD_SIZE: Final = 80
_WORDS: Final = RECORD_SIZE // 8


@functools.cache
def record_dtype() -> np.dtype[Any]:
    """The layout of one call record, shared with the C extension (`_ctracer.Record`)."""
    import numpy as np

    dtype = np.dtype(
        [
            ("ts", "<i8"),
            ("duration", "<i8"),
            ("code", "<u8"),
            ("span", "<u8"),
            ("parent", "<u8"),
            ("trace_hi", "<u8"),
            ("trace_lo", "<u8"),
            ("tid", "<u8"),
            ("active", "<i8"),
            ("suspensions", "<u4"),
            ("flags", "<u4"),
        ]
    )
    assert dtype.itemsize == RECORD_SIZE
    return dtype


#: What `take_columns()` returns (see `_ctracer.take_columns`): n, then column buffers.
Columns = tuple[Any, ...]


def columns_from_records(recs: np.ndarray) -> Columns:
    """Split records into the column buffers `_ctracer.take_columns` returns (numpy)."""
    import numpy as np

    n = len(recs)
    parent = recs["parent"]
    valid = parent != 0
    trace = np.empty((n, 2), dtype=">u8")
    trace[:, 0] = recs["trace_hi"]
    trace[:, 1] = recs["trace_lo"]
    ts = recs["ts"].astype(np.int64)
    t = np.maximum(ts, 0).astype(np.uint64)
    ms = t // np.uint64(1_000_000)
    frac = ((t % np.uint64(1_000_000)) * np.uint64(4096)) // np.uint64(1_000_000)
    eid = np.empty((n, 2), dtype=">u8")
    eid[:, 0] = (ms << np.uint64(16)) | np.uint64(0x7000) | (frac & np.uint64(0x0FFF))
    eid[:, 1] = (recs["span"] & np.uint64(0x3FFFFFFFFFFFFFFF)) | np.uint64(1 << 63)
    return (
        n,
        ts,
        recs["duration"].astype(np.int64),
        recs["code"].astype(np.uint64),
        recs["span"].astype(">u8"),
        parent.astype(">u8"),
        np.packbits(valid, bitorder="little"),
        int(n - np.count_nonzero(valid)),
        trace,
        recs["tid"].astype(np.int64),
        eid,
        recs["flags"].astype(np.uint32),
        recs["active"].astype(np.int64),
        recs["suspensions"].astype(np.uint32),
        int(np.count_nonzero(recs["flags"])),
    )


# An entry is a list (cheaper than an object on this path), indexed by these constants.
_CODE, _START, _SPAN, _PARENT, _HI, _LO, _FLAGS, _ACTIVE, _RESUMED, _SUSP, _FRAME = range(11)


class _ThreadState(threading.local):
    def __init__(self) -> None:
        self.stack: list[list[Any]] = []
        self.session = -1
        self.ignored = False
        self.in_handler = False
        self.filtered = False
        self.tid = threading.get_ident()


def _splitmix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class PyBackend:
    """The call tracer's callbacks and buffer, in Python.

    Returns match their call by code object (calls nest, so the innermost entry of that code
    is the one returning); only generators and coroutines, parked between yields, are keyed
    by their frame.
    """

    RECORD_SIZE: Final = RECORD_SIZE

    def __init__(self) -> None:
        self._tls = _ThreadState()
        self._active = False
        self._session = 0
        self._generation = 1
        self._decisions: dict[CodeType, tuple[int, int]] = {}
        self._decide: Callable[[CodeType], int] | None = None
        self._on_exception: Callable[..., object] | None = None
        self._thread_filter: Callable[[], bool] | None = None
        self._disable: Any = None
        self._records = array("Q")  # record_dtype() rows, 10 words each (flags<<32 | susp)
        self._capacity = 0
        self._suspended: dict[int, tuple[FrameType, list[Any]]] = {}
        self._counts = {
            "starts": 0,
            "recorded": 0,
            "dropped": 0,
            "suspended_dropped": 0,
            "handler_errors": 0,
        }
        self._span_base = 0
        self._span_counter = 0
        self._trace_base = 0
        self._trace_counter = 0
        self._sample_rate = 1.0
        self._rng = random.Random()
        self._epoch_offset = 0
        self._block = (0, 0, 0)
        self._lock = threading.Lock()

    # ---- control (the same as _ctracer's module functions) ----------------------------

    def install(
        self,
        decide: Callable[[CodeType], int],
        on_exception: Callable[..., object],
        thread_filter: Callable[[], bool] | None,
        disable: object,
        capacity: int,
        sample_rate: float,
        seed: int,
        tsc: bool = False,
    ) -> None:
        self._decide = decide
        self._on_exception = on_exception
        self._thread_filter = thread_filter
        self._disable = disable
        self._capacity = capacity
        self._records = array("Q")
        self._suspended = {}
        self._decisions = {}
        self._counts = dict.fromkeys(self._counts, 0)
        self._span_base = _splitmix(seed)
        self._span_counter = 0
        self._trace_base = _splitmix(seed ^ 0xA5A5A5A5A5A5A5A5)
        self._trace_counter = 0
        self._sample_rate = sample_rate
        self._rng = random.Random(seed)
        self._epoch_offset = time.time_ns() - time.monotonic_ns()
        self._block = (0, 0, 0)
        self._session += 1
        self._generation += 1
        self._active = True

    def uninstall(self) -> None:
        self._active = False
        self._session += 1
        self._block = (0, 0, 0)
        self._decide = self._on_exception = self._thread_filter = None
        self._suspended = {}
        self._decisions = {}

    def set_generation(self, generation: int) -> None:
        self._generation = generation

    def set_sample_rate(self, rate: float) -> None:
        self._sample_rate = rate

    def set_block(self, span: int, hi: int, lo: int) -> None:
        self._block = (span, hi, lo)

    def take_columns(self) -> Columns | None:
        records = self._records
        n = len(records)
        if not n:
            return None
        taken = records[:n]
        del records[:n]  # appends made meanwhile land after n and stay
        import numpy as np

        return columns_from_records(np.frombuffer(taken, dtype=record_dtype()))

    def wait_fill(self, fraction: float, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        want = max(1, int(fraction * self._capacity)) * _WORDS
        while self._active:
            if len(self._records) >= want:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, 0.002))
        return False

    def counts(self) -> dict[str, int]:
        return {**self._counts, "suspended": len(self._suspended)}

    def ignore_thread(self) -> None:
        state = self._state()
        state.ignored = True
        state.filtered = True

    def new_span_id(self) -> int:
        self._span_counter += 1
        return (self._span_base + self._span_counter) & _MASK64 or 1

    # ---- helpers -----------------------------------------------------------------------

    def _state(self) -> _ThreadState:
        t = self._tls
        if t.session != self._session:
            t.session = self._session
            t.stack = []
            t.ignored = False
            t.in_handler = False
            t.filtered = False
        return t

    def _filter(self, t: _ThreadState) -> None:
        """Ask thread_filter at the first recorded call, when threading knows the thread."""
        t.filtered = True
        if self._thread_filter is not None:
            t.in_handler = True
            try:
                t.ignored = bool(self._thread_filter())
            except Exception:
                self._counts["handler_errors"] += 1
            finally:
                t.in_handler = False

    def _decide_flags(self, t: _ThreadState, code: CodeType) -> int | None:
        """Classify `code` (slow path, once per code object and generation)."""
        if t.in_handler or self._decide is None:
            return None
        t.in_handler = True
        try:
            flags = int(self._decide(code)) & 3
        except Exception:
            self._counts["handler_errors"] += 1
            flags = 0
        finally:
            t.in_handler = False
        if not self._active:
            return None
        self._decisions[code] = (self._generation, flags)
        return flags

    # ---- the callbacks -----------------------------------------------------------------

    def py_start(self, code: CodeType, offset: int) -> object:
        if not self._active:
            return None
        counts = self._counts
        counts["starts"] += 1
        t = self._tls
        if t.session != self._session:
            self._state()
        if t.ignored:
            return None
        cached = self._decisions.get(code)
        if cached is not None and cached[0] == self._generation:
            flags = cached[1]
        else:
            decided = self._decide_flags(t, code)
            if decided is None:
                return None
            flags = decided
        if not flags:
            return self._disable
        if t.in_handler:
            return None
        if not t.filtered:
            self._filter(t)
            if t.ignored:
                return None
        self._span_counter += 1
        span = (self._span_base + self._span_counter) & _MASK64
        stack = t.stack
        if code.co_flags & _GEN_FLAGS:
            eflags, frame = F_GENERATOR, sys._getframe(1)
        else:
            eflags, frame = 0, None
        if stack:
            parent = stack[-1]
            e = [code, 0, span, parent[_SPAN], parent[_HI], parent[_LO],
                 eflags | (parent[_FLAGS] & F_UNSAMPLED), 0, 0, 0, frame]  # fmt: skip
        else:
            block_span, hi, lo = self._block
            if not block_span:
                self._trace_counter += 1
                hi = self._trace_base
                lo = _splitmix(hi ^ self._trace_counter)
            if self._sample_rate < 1.0 and self._rng.random() >= self._sample_rate:
                eflags |= F_UNSAMPLED
            e = [code, 0, span, block_span, hi, lo, eflags, 0, 0, 0, frame]
        stack.append(e)
        e[_START] = e[_RESUMED] = time.monotonic_ns()
        return None

    def _finish(self, code: CodeType, extra: int) -> None:
        t = self._tls
        stack = t.stack
        if not stack or t.session != self._session:
            return
        e = stack[-1]
        if e[_CODE] is code:
            stack.pop()
        else:
            for i in range(len(stack) - 2, -1, -1):
                if stack[i][_CODE] is code:
                    e = stack[i]
                    del stack[i:]  # entries above it left without an event: stale
                    break
            else:
                return
        now = time.monotonic_ns()
        flags = e[_FLAGS]
        if flags & F_UNSAMPLED:
            return
        if flags & F_GENERATOR:
            e[_ACTIVE] += now - e[_RESUMED]
        records = self._records
        if len(records) >= self._capacity * _WORDS:
            self._counts["dropped"] += 1
            return
        start = e[_START]
        records.extend(
            (start + self._epoch_offset, now - start, id(code), e[_SPAN], e[_PARENT], e[_HI],
             e[_LO], t.tid, e[_ACTIVE], ((flags & F_GENERATOR) | extra) << 32 | e[_SUSP])
        )  # fmt: skip
        self._counts["recorded"] += 1

    def py_return(self, code: CodeType, offset: int, retval: object) -> object:
        if self._active:
            self._finish(code, 0)
        return None

    def py_unwind(self, code: CodeType, offset: int, exc: BaseException) -> object:
        if self._active:
            self._finish(code, F_UNWOUND)
        return None

    def py_yield(self, code: CodeType, offset: int, retval: object) -> object:
        t = self._tls
        stack = t.stack
        if not self._active or not stack or t.session != self._session:
            return None
        frame = sys._getframe(1)
        for i in range(len(stack) - 1, -1, -1):
            e = stack[i]
            if e[_FRAME] is frame:
                break
        else:
            return None
        e[_ACTIVE] += time.monotonic_ns() - e[_RESUMED]
        e[_SUSP] += 1
        if len(self._suspended) < (1 << 20):
            self._suspended[id(frame)] = (frame, e)
        else:
            self._counts["suspended_dropped"] += 1
        del stack[i:]
        return None

    def py_resume(self, code: CodeType, offset: int, *exc: object) -> object:
        if not self._active or not self._suspended:
            return None
        t = self._state()
        if t.ignored:
            return None
        frame = sys._getframe(1)
        parked = self._suspended.pop(id(frame), None)
        if parked is None or parked[0] is not frame:
            return None
        e = parked[1]
        e[_RESUMED] = time.monotonic_ns()
        t.stack.append(e)
        return None

    def _exception(self, code: CodeType, exc: BaseException, phase: int) -> None:
        t = self._tls
        stack = t.stack
        if (
            not self._active
            or not stack
            or t.session != self._session
            or t.in_handler
            or t.ignored
            or self._on_exception is None
        ):
            return
        e = stack[-1]
        if e[_CODE] is not code:
            return
        t.in_handler = True
        try:
            self._on_exception(code, exc, phase, e[_SPAN], e[_HI], e[_LO])
        except Exception:
            self._counts["handler_errors"] += 1
        finally:
            t.in_handler = False

    def raise_(self, code: CodeType, offset: int, exc: BaseException) -> object:
        self._exception(code, exc, 0)
        return None

    def exception_handled(self, code: CodeType, offset: int, exc: BaseException) -> object:
        self._exception(code, exc, 1)
        return None
