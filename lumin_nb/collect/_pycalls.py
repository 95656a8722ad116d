"""Pure-Python backend of the call tracer: the same interface and records as `_ctracer`.

`calls.CallTracer` uses it when the C extension is not built (or with ``native=False``).
It keeps the native design (decide once per code object, DISABLE unrecorded code, per-thread
stacks keyed by frame, generators parked between yields, one fixed-size record per call into
a bounded buffer that drops and counts) but runs Python callbacks, so it costs several times
more per call; ``CallTracer.stats()["mode"]`` says so.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any, Final

import numpy as np

F_UNWOUND: Final = 1
F_GENERATOR: Final = 2
F_UNSAMPLED: Final = 4
_GEN_FLAGS: Final = 0x20 | 0x80 | 0x200  # CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR
_MASK64: Final = (1 << 64) - 1

#: The layout of one call record, shared with the C extension (`_ctracer.Record`).
RECORD_DTYPE: Final = np.dtype(
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
RECORD_SIZE: Final = RECORD_DTYPE.itemsize

_Record = tuple[int, int, int, int, int, int, int, int, int, int, int]

#: What `take_columns()` returns (see `_ctracer.take_columns`): n, then column buffers.
Columns = tuple[Any, ...]


def columns_from_records(recs: np.ndarray) -> Columns:
    """Split records into the column buffers `_ctracer.take_columns` returns (numpy)."""
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


class _Entry:
    __slots__ = (
        "active_ns",
        "code",
        "flags",
        "frame",
        "parent",
        "resumed",
        "span",
        "start",
        "suspensions",
        "trace_hi",
        "trace_lo",
    )

    def __init__(self) -> None:
        self.frame: FrameType | None = None
        self.code = 0
        self.start = 0
        self.resumed = 0
        self.active_ns = 0
        self.span = 0
        self.parent = 0
        self.trace_hi = 0
        self.trace_lo = 0
        self.suspensions = 0
        self.flags = 0


class _ThreadState(threading.local):
    def __init__(self) -> None:
        self.stack: list[_Entry] = []
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
    """The call tracer's callbacks and buffer, in Python."""

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
        self._records: list[_Record] = []
        self._capacity = 0
        self._suspended: dict[int, tuple[FrameType, _Entry]] = {}
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
        self._rng = np.random.default_rng()
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
    ) -> None:
        self._decide = decide
        self._on_exception = on_exception
        self._thread_filter = thread_filter
        self._disable = disable
        self._capacity = capacity
        self._records = []
        self._suspended = {}
        self._decisions = {}
        self._counts = dict.fromkeys(self._counts, 0)
        self._span_base = _splitmix(seed)
        self._span_counter = 0
        self._trace_base = _splitmix(seed ^ 0xA5A5A5A5A5A5A5A5)
        self._trace_counter = 0
        self._sample_rate = sample_rate
        self._rng = np.random.default_rng(seed)
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

    def set_block(self, span: int, hi: int, lo: int) -> None:
        self._block = (span, hi, lo)

    def take_columns(self) -> Columns | None:
        with self._lock:
            records, self._records = self._records, []
        if not records:
            return None
        return columns_from_records(np.array(records, dtype=RECORD_DTYPE))

    def counts(self) -> dict[str, int]:
        return {**self._counts, "suspended": len(self._suspended)}

    def ignore_thread(self) -> None:
        state = self._state()
        if state is not None:
            state.ignored = True
            state.filtered = True

    def new_span_id(self) -> int:
        self._span_counter += 1
        return (self._span_base + self._span_counter) & _MASK64 or 1

    # ---- helpers -----------------------------------------------------------------------

    def _state(self) -> _ThreadState | None:
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

    def _emit(self, t: _ThreadState, e: _Entry, now: int, extra: int) -> None:
        if e.flags & F_UNSAMPLED:
            return
        if len(self._records) >= self._capacity:
            self._counts["dropped"] += 1
            return
        with self._lock:
            self._records.append(
                (
                    e.start + self._epoch_offset,
                    now - e.start,
                    e.code,
                    e.span,
                    e.parent,
                    e.trace_hi,
                    e.trace_lo,
                    t.tid,
                    e.active_ns,
                    e.suspensions,
                    (e.flags & F_GENERATOR) | extra,
                )
            )
        self._counts["recorded"] += 1

    @staticmethod
    def _find(stack: list[_Entry], frame: FrameType) -> int:
        for i in range(len(stack) - 1, -1, -1):
            if stack[i].frame is frame:
                return i
        return -1

    # ---- the callbacks -----------------------------------------------------------------

    def py_start(self, code: CodeType, offset: int) -> object:
        if not self._active:
            return None
        self._counts["starts"] += 1
        t = self._state()
        if t is None or t.ignored:
            return None
        cached = self._decisions.get(code)
        if cached is not None and cached[0] == self._generation:
            flags = cached[1]
        else:
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
        if flags == 0:
            return self._disable
        if t.in_handler:
            return None
        if not t.filtered:
            self._filter(t)
            if t.ignored:
                return None
        e = _Entry()
        e.frame = sys._getframe(1)
        e.code = id(code)
        e.flags = F_GENERATOR if code.co_flags & _GEN_FLAGS else 0
        e.span = self.new_span_id()
        stack = t.stack
        if stack:
            parent = stack[-1]
            e.parent = parent.span
            e.trace_hi = parent.trace_hi
            e.trace_lo = parent.trace_lo
            e.flags |= parent.flags & F_UNSAMPLED
        else:
            span, hi, lo = self._block
            if span:
                e.parent, e.trace_hi, e.trace_lo = span, hi, lo
            else:
                self._trace_counter += 1
                e.trace_hi = self._trace_base
                e.trace_lo = _splitmix(self._trace_base ^ self._trace_counter)
            if self._sample_rate < 1.0 and self._rng.random() >= self._sample_rate:
                e.flags |= F_UNSAMPLED
        stack.append(e)
        e.start = e.resumed = time.monotonic_ns()
        return None

    def _finish(self, extra: int) -> None:
        t = self._tls
        if not self._active or t.session != self._session or not t.stack:
            return
        frame = sys._getframe(2)
        stack = t.stack
        i = len(stack) - 1
        if stack[i].frame is not frame:
            i = self._find(stack, frame)
            if i < 0:
                return
        now = time.monotonic_ns()
        e = stack[i]
        if e.flags & F_GENERATOR:
            e.active_ns += now - e.resumed
        self._emit(t, e, now, extra)
        del stack[i:]

    def py_return(self, code: CodeType, offset: int, retval: object) -> object:
        self._finish(0)
        return None

    def py_unwind(self, code: CodeType, offset: int, exc: BaseException) -> object:
        self._finish(F_UNWOUND)
        return None

    def py_yield(self, code: CodeType, offset: int, retval: object) -> object:
        t = self._tls
        if not self._active or t.session != self._session or not t.stack:
            return None
        frame = sys._getframe(1)
        stack = t.stack
        i = len(stack) - 1
        if stack[i].frame is not frame:
            i = self._find(stack, frame)
            if i < 0:
                return None
        e = stack[i]
        e.active_ns += time.monotonic_ns() - e.resumed
        e.suspensions += 1
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
        if t is None or t.ignored:
            return None
        frame = sys._getframe(1)
        parked = self._suspended.pop(id(frame), None)
        if parked is None or parked[0] is not frame:
            return None
        e = parked[1]
        e.resumed = time.monotonic_ns()
        t.stack.append(e)
        return None

    def _exception(self, code: CodeType, exc: BaseException, phase: int) -> None:
        t = self._tls
        if (
            not self._active
            or t.session != self._session
            or not t.stack
            or t.in_handler
            or t.ignored
            or self._on_exception is None
        ):
            return
        e = t.stack[-1]
        if e.frame is not sys._getframe(2):
            return
        t.in_handler = True
        try:
            self._on_exception(code, exc, phase, e.span, e.trace_hi, e.trace_lo)
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
