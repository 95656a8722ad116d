"""The call tracer: calls and exceptions of watched code, from `sys.monitoring`, as events.

Source of ``kind="call"``, ``kind="exception"`` and the ``kind="span"`` of `trace()` blocks.
It owns one `sys.monitoring` tool id (named "lumin") from `start()` to `stop()`.

Invariants:

- only recorded code pays: PY_START is global, each code object is classified once by
  `_decide` (cached on the code object with a generation number; a new `watch()` pattern
  bumps the generation), unrecorded code gets ``DISABLE``;
- the hot path is native (`_ctracer`): one fixed-size record per finished call into a
  preallocated ring buffer that drops and counts when full, never blocking; `_pycalls` does
  the same in Python when the extension is not built;
- `drain()` turns the records into one Arrow batch with numpy and Arrow compute, no Python
  object per call; code pointers stay valid because `_decide` keeps every recorded code
  object alive;
- Lumin's own code and threads (named ``lumin*``) are never traced, and nothing here raises
  into the user's code: errors of the slow path are caught and counted in `stats()`.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import json
import os
import re
import sys
import sysconfig
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from types import CodeType, ModuleType
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

from lumin_nb.collect._pycalls import F_GENERATOR, F_UNWOUND, Columns, PyBackend
from lumin_nb.errors import TracerBusyError

if TYPE_CHECKING:  # numpy, pyarrow and lumin_nb.event load at the first drain or exception
    import numpy as np
    import pyarrow as pa

    from lumin_nb.event import EventBuilder

# lumin_nb.event.SEVERITY_* (not imported here: that module loads numpy and pyarrow)
SEVERITY_INFO: Final = 9
SEVERITY_WARN: Final = 13
SEVERITY_ERROR: Final = 17

_native: ModuleType | None
try:
    _native = importlib.import_module("lumin_nb.collect._ctracer")
except ImportError:  # not built: the Python backend takes over
    _native = None

__all__ = ["CallTracer", "TraceBlock", "TracerBusyError"]

TOOL_NAME: Final = "lumin"
#: sys.monitoring tool ids Lumin tries, in order (0-2 belong to debuggers, coverage, profilers)
TOOL_IDS: Final = (4, 3, 5)
MODE_NATIVE: Final = "native"
MODE_PYTHON: Final = "python fallback (slower: C extension not built)"

_EVENTS: Final = tuple(
    getattr(sys.monitoring.events, name)
    for name in (
        "PY_START",
        "PY_RETURN",
        "PY_YIELD",
        "PY_RESUME",
        "PY_THROW",
        "PY_UNWIND",
        "RAISE",
        "EXCEPTION_HANDLED",
    )
)
_WATCHED: Final = 1  # recorded whenever it runs
_TRACED: Final = 2  # recorded because a trace() block is active
_PHASES: Final = (("raised", SEVERITY_WARN), ("handled", SEVERITY_INFO))
#: exceptions that are the normal end of a generator or coroutine: never exception events
_CONTROL_FLOW: Final = (StopIteration, StopAsyncIteration, GeneratorExit)

#: top-level packages a trace() block never records: Lumin itself and the kernel machinery
EXCLUDED_PACKAGES: Final = frozenset(
    {
        "lumin",
        "lumin_nb",
        "IPython",
        "ipykernel",
        "ipywidgets",
        "comm",
        "debugpy",
        "tornado",
        "zmq",
        "jupyter_client",
        "jupyter_core",
        "traitlets",
        "prompt_toolkit",
        "nbclient",
        "pytest",
        "_pytest",
        "pluggy",
        "asyncio",
        "threading",
    }
)
_CELL_FILE: Final = re.compile(r"(ipykernel_\d+[/\\][^/\\]+\.py$)|(^<ipython-input-)")
_MAIN_FILES: Final = frozenset({"<stdin>", "<string>"})
_LUMIN_DIR: Final = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Lumin's sample app is traced like any user code (the demo and tutorials watch it)
_DEMO_DIR: Final = os.path.join(_LUMIN_DIR, "demo") + os.sep


def _is_lumin(module: str, filename: str) -> bool:
    """Lumin's own code, which is never traced; its demo app is not Lumin's own."""
    if module.startswith("lumin_nb.demo") or filename.startswith(_DEMO_DIR):
        return False
    return module.partition(".")[0] in ("lumin", "lumin_nb") or filename.startswith(_LUMIN_DIR)


_generations = itertools.count(2)  # process-wide: cached decisions never outlive a session
_native_owner: CallTracer | None = None  # the native backend's state is per process


class _Backend(Protocol):
    """What `_ctracer` and `_pycalls.PyBackend` both provide."""

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
    ) -> None: ...
    def uninstall(self) -> None: ...
    def set_generation(self, generation: int) -> None: ...
    def set_sample_rate(self, rate: float) -> None: ...
    def set_block(self, span: int, hi: int, lo: int) -> None: ...
    def take_columns(self) -> Columns | None: ...
    def counts(self) -> dict[str, int]: ...
    def wait_fill(self, fraction: float, timeout_s: float) -> bool: ...
    def ignore_thread(self) -> None: ...
    def new_span_id(self) -> int: ...
    def py_start(self, code: CodeType, offset: int) -> object: ...
    def py_return(self, code: CodeType, offset: int, retval: object) -> object: ...
    def py_yield(self, code: CodeType, offset: int, retval: object) -> object: ...
    def py_resume(self, code: CodeType, offset: int, *exc: object) -> object: ...
    def py_unwind(self, code: CodeType, offset: int, exc: BaseException) -> object: ...
    def raise_(self, code: CodeType, offset: int, exc: BaseException) -> object: ...
    def exception_handled(self, code: CodeType, offset: int, exc: BaseException) -> object: ...


@dataclass
class TraceBlock:
    """A `CallTracer.trace()` block: its span is the parent of the block's top-level calls."""

    name: str
    span_id: bytes
    trace_id: bytes
    parent_span_id: bytes | None = None
    include_libraries: bool = False
    start_ns: int = 0


def _is_lumin_thread() -> bool:
    return threading.current_thread().name.startswith("lumin")


class _ModuleMap:
    """Maps a code object's filename to its module name, from sys.modules (refreshed on miss)."""

    def __init__(self) -> None:
        self._by_file: dict[str, str] = {}
        self._seen = -1

    def module_of(self, filename: str) -> str:
        found = self._by_file.get(filename)
        if found is not None:
            return found
        if filename in _MAIN_FILES or _CELL_FILE.search(filename):
            found = "__main__"
        else:
            if len(sys.modules) != self._seen:
                self._refresh()
            found = self._by_file.get(filename)
            if found is None:
                found = self._by_file.get(os.path.realpath(filename))
            if found is None:
                stem = os.path.splitext(os.path.basename(filename))[0]
                found = stem.strip("<>") or "__main__"
        self._by_file[filename] = found
        return found

    def _refresh(self) -> None:
        modules = list(sys.modules.items())
        self._seen = len(modules)
        for name, module in modules:
            path = getattr(module, "__file__", None)
            if not isinstance(path, str) or not path.endswith(".py"):
                continue
            if name == "__main__" or path not in self._by_file:
                self._by_file[path] = name
                self._by_file.setdefault(os.path.realpath(path), name)


def _stdlib_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths["stdlib"], paths["platstdlib"]}
    return tuple(os.path.join(os.path.realpath(d), "") for d in dirs) + tuple(
        os.path.join(d, "") for d in dirs
    )


_STDLIB_DIRS: Final = _stdlib_dirs()


def _is_library(filename: str) -> bool:
    return "site-packages" in filename or "dist-packages" in filename


def _is_stdlib(module: str, filename: str) -> bool:
    if filename.startswith("<frozen ") or module.partition(".")[0] in sys.stdlib_module_names:
        return True
    return filename.startswith(_STDLIB_DIRS) and not _is_library(filename)


def _tsc_is_the_clocksource() -> bool:
    """Whether CLOCK_MONOTONIC comes from an invariant TSC, so rdtsc may extrapolate it."""
    try:
        with open("/sys/devices/system/clocksource/clocksource0/current_clocksource") as f:
            if f.read().strip() != "tsc":
                return False
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return {"constant_tsc", "nonstop_tsc"} <= flags
    except OSError:
        pass
    return False


def _split_trace(trace_id: bytes) -> tuple[int, int]:
    return int.from_bytes(trace_id[:8], "big"), int.from_bytes(trace_id[8:], "big")


def _binary(data: Any, width: int, n: int, valid: Any = None, nulls: int = 0) -> pa.Array:
    """Fixed-size binary over a buffer of n big-endian ids (zero copy)."""
    import pyarrow as pa

    bitmap = pa.py_buffer(valid) if valid is not None and nulls else None
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), n, [bitmap, pa.py_buffer(data)], null_count=nulls if bitmap else 0
    )


def _numbers(data: Any, dtype: type[np.generic]) -> np.ndarray:
    import numpy as np

    return np.frombuffer(data, dtype=dtype)


_zero_buffer: pa.Buffer | None = None


def _zeros(n: int) -> pa.Buffer:
    """A shared all-zero buffer of at least 8 * (n + 1) bytes (never written)."""
    import pyarrow as pa

    global _zero_buffer
    need = 8 * (n + 1)
    if _zero_buffer is None or _zero_buffer.size < need:
        _zero_buffer = pa.py_buffer(bytes(max(need, 1 << 20)))
    return _zero_buffer


def _indices(n: int, zeros: pa.Buffer) -> pa.Array:
    import pyarrow as pa

    return pa.Array.from_buffers(pa.int32(), n, [None, zeros])


def _null_column(type_: pa.DataType, n: int, zeros: pa.Buffer) -> pa.Array:
    """An all-null column of `type_` over the shared zero buffer (no allocation)."""
    import pyarrow as pa

    if pa.types.is_dictionary(type_):
        return pa.DictionaryArray.from_buffers(
            type_, n, [zeros, zeros], dictionary=pa.array([], pa.string()), null_count=n
        )
    if type_ == pa.string():
        return pa.Array.from_buffers(type_, n, [zeros, zeros, zeros], null_count=n)
    return pa.Array.from_buffers(type_, n, [zeros, zeros], null_count=n)


def _attrs(flags: np.ndarray, active_ns: np.ndarray, suspensions: np.ndarray) -> pa.Array:
    """JSON attrs only for rows that need them (unwound calls, generators); null elsewhere."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(flags)
    unwound = (flags & F_UNWOUND) != 0
    gen = (flags & F_GENERATOR) != 0
    if not unwound.any() and not gen.any():
        return pa.nulls(n, pa.string())
    either = pa.array(unwound | gen)
    both = pa.array(unwound & gen)
    prefix = pc.if_else(
        both,
        '{"unwound": true, ',
        pc.if_else(pa.array(unwound), '{"unwound": true', "{"),
    )
    gen_part = pc.if_else(
        pa.array(gen),
        pc.binary_join_element_wise(
            '"active_ns": ',
            pc.cast(pa.array(active_ns), pa.string()),
            ', "suspensions": ',
            pc.cast(pa.array(suspensions), pa.string()),
            "",
        ),
        "",
    )
    body = pc.binary_join_element_wise(prefix, gen_part, "}", "")
    return pc.if_else(either, body, pa.scalar(None, pa.string()))


class CallTracer:
    """Records calls of watched code and of `trace()` blocks as Arrow events.

    Parameters
    ----------
    buffer_records
        Calls the ring buffer holds between two `drain()` calls; beyond it calls are dropped
        and counted in ``stats()["dropped"]``.
    sample_rate
        Fraction of call trees kept, decided at each root call (a tree is kept or dropped
        whole). Exceptions are always recorded.
    native
        Use the C extension (True), the Python backend (False) or the C extension when it is
        built (None).
    """

    def __init__(
        self,
        *,
        buffer_records: int = 1 << 20,
        sample_rate: float = 1.0,
        native: bool | None = None,
    ) -> None:
        if buffer_records <= 0:
            raise ValueError(
                f"buffer_records={buffer_records!r}: expected a positive number of calls. "
                "Fix: CallTracer(buffer_records=1 << 20)"
            )
        if native and _native is None:
            raise ImportError(
                "native=True but the C extension lumin_nb.collect._ctracer is not built. "
                "Fix: make setup (or pip install -e . with a C compiler), or native=None."
            )
        self.is_native: bool = _native is not None and native is not False
        self._backend: _Backend = cast(_Backend, _native) if self.is_native else PyBackend()
        self.buffer_records = buffer_records
        self._tool_id: int | None = None
        self._sample_rate = 1.0
        self.sample_rate = sample_rate
        self._patterns: tuple[str, ...] = ()
        self._lock = threading.RLock()
        self._generation = next(_generations)
        self._entities: dict[int, tuple[CodeType, str]] = {}
        self._has_local: dict[int, CodeType] = {}
        self._watched: set[int] = set()
        self._modules = _ModuleMap()
        self._blocks: list[TraceBlock] = []
        self._events_max = max(1024, min(buffer_records, 200_000))
        self._events_builder: EventBuilder | None = None
        self._pending: list[pa.RecordBatch] = []
        self._last_raised = threading.local()
        self._base_counts: dict[str, int] = {}
        self._n_events = 0  # exception and span events kept
        self._pid = os.getpid()
        self._pids: np.ndarray | None = None

    @property
    def sample_rate(self) -> float:
        """Fraction of call trees kept; setting it applies to the next root call."""
        return self._sample_rate

    @sample_rate.setter
    def sample_rate(self, rate: float) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1:
            raise ValueError(
                f"sample_rate={rate!r}: expected a fraction between 0.0 and 1.0. "
                "Fix: CallTracer(sample_rate=0.1)"
            )
        self._sample_rate = float(rate)
        if self._tool_id is not None:
            self._backend.set_sample_rate(self._sample_rate)

    # ---- lifecycle ---------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """Whether the tracer holds its tool id and records."""
        return self._tool_id is not None

    def start(self) -> None:
        """Take a `sys.monitoring` tool id and begin recording; a second call does nothing."""
        with self._lock:
            if self._tool_id is not None:
                return
            if self.is_native and _native_owner is not None and _native_owner is not self:
                raise TracerBusyError(
                    "another CallTracer is running with the native backend; only one per "
                    "process can. Fix: stop it first, or CallTracer(native=False)."
                )
            mon = sys.monitoring
            tool = next((t for t in TOOL_IDS if mon.get_tool(t) is None), None)
            if tool is None:
                held = {t: mon.get_tool(t) for t in TOOL_IDS}
                raise TracerBusyError(
                    f"no sys.monitoring tool id is free for Lumin's call tracer: {held} are "
                    "taken. Expected one of the ids 4, 3 or 5 to be free. Fix: stop the other "
                    "tool (for example a second profiler), then start Lumin again."
                )
            mon.use_tool_id(tool, TOOL_NAME)
            try:
                self._install(tool)
            except BaseException:
                self._tool_id = tool
                self._release(tool)
                raise

    def _install(self, tool: int) -> None:
        global _native_owner
        mon = sys.monitoring
        self._tool_id = tool
        if self.is_native:
            _native_owner = self
        self._has_local.clear()
        self._watched.clear()
        backend = self._backend
        backend.install(
            self._decide,
            self._on_exception,
            _is_lumin_thread,
            mon.DISABLE,
            self.buffer_records,
            self.sample_rate,
            int.from_bytes(os.urandom(8), "little"),
            tsc=_tsc_is_the_clocksource(),
        )
        self._new_generation()
        ev = mon.events
        callbacks: dict[int, Callable[..., object]] = {
            ev.PY_START: backend.py_start,
            ev.PY_RETURN: backend.py_return,
            ev.PY_YIELD: backend.py_yield,
            ev.PY_RESUME: backend.py_resume,
            ev.PY_THROW: backend.py_resume,
            ev.PY_UNWIND: backend.py_unwind,
            ev.RAISE: backend.raise_,
            ev.EXCEPTION_HANDLED: backend.exception_handled,
        }
        for event, callback in callbacks.items():
            mon.register_callback(tool, event, callback)
        mon.set_events(
            tool, ev.PY_START | ev.PY_UNWIND | ev.PY_THROW | ev.RAISE | ev.EXCEPTION_HANDLED
        )
        mon.restart_events()

    def stop(self) -> None:
        """Stop recording and free the tool id; recorded events stay for `drain()`."""
        global _native_owner
        with self._lock:
            tool = self._tool_id
            if tool is None:
                return
            self._release(tool)
            # convert what is left now: the native buffer is shared by every CallTracer
            leftover = self._backend.take_columns()
            if leftover is not None:
                self._pending.append(self._calls_batch(leftover))

    def _release(self, tool: int) -> None:
        """Turn every event off, free the tool id and end the backend's session."""
        global _native_owner
        mon = sys.monitoring
        mon.set_events(tool, 0)
        for code in self._has_local.values():
            mon.set_local_events(tool, code, 0)
        self._has_local.clear()
        for event in _EVENTS:
            mon.register_callback(tool, event, None)
        mon.free_tool_id(tool)
        self._tool_id = None
        for key, value in self._backend.counts().items():
            self._base_counts[key] = self._base_counts.get(key, 0) + value
        self._backend.uninstall()
        self._last_raised = threading.local()
        if _native_owner is self:
            _native_owner = None

    def ignore_current_thread(self) -> None:
        """Never trace the calling thread in this session (threads named ``lumin*`` never are)."""
        if self._tool_id is not None:
            self._backend.ignore_thread()

    # ---- what is recorded --------------------------------------------------------------

    @property
    def patterns(self) -> tuple[str, ...]:
        """The watch patterns, in the order they were added."""
        return self._patterns

    def watch(self, *patterns: str) -> None:
        """Record every call of code matching `patterns` from now on.

        A pattern is matched (fnmatch) against module names (``"mypkg.*"`` also matches
        ``"mypkg"``), or, when it holds a colon, against ``"module:qualname"``
        (``"pkg.mod:Class.*"``). Code already seen is re-classified.
        """
        for pattern in patterns:
            if not isinstance(pattern, str) or not pattern:
                raise ValueError(
                    f"watch pattern {pattern!r}: expected module text like 'mypkg.*' or "
                    "'pkg.mod:func'. Fix: tracer.watch('mypkg.*')"
                )
        with self._lock:
            self._patterns += tuple(p for p in patterns if p not in self._patterns)
            self._new_generation()
            if self._tool_id is not None:
                sys.monitoring.restart_events()

    def unwatch(self, *patterns: str) -> None:
        """Stop recording code matched only by `patterns` (all patterns when none is given)."""
        with self._lock:
            drop = set(patterns) if patterns else set(self._patterns)
            self._patterns = tuple(p for p in self._patterns if p not in drop)
            self._new_generation()

    def _new_generation(self) -> None:
        self._generation = next(_generations)
        self._watched.clear()
        self._backend.set_generation(self._generation)

    def _matches(self, module: str, qualname: str) -> bool:
        for pattern in self._patterns:
            if ":" in pattern:
                if fnmatchcase(f"{module}:{qualname}", pattern):
                    return True
            elif fnmatchcase(module, pattern) or (
                pattern.endswith(".*") and module == pattern[:-2]
            ):
                return True
        return False

    def _decide(self, code: CodeType) -> int:
        """Classify `code` once per generation: 0 not recorded, else why it is recorded."""
        filename = code.co_filename
        module = self._modules.module_of(filename)
        top = module.partition(".")[0]
        flags = 0
        if _is_lumin(module, filename):
            flags = 0
        elif self._patterns and self._matches(module, code.co_qualname):
            flags = _WATCHED
        elif self._blocks and not (
            top in EXCLUDED_PACKAGES
            or _is_stdlib(module, filename)
            or (_is_library(filename) and not any(b.include_libraries for b in self._blocks))
        ):
            flags = _TRACED
        key = id(code)
        tool = self._tool_id
        if flags:
            if key not in self._entities:
                self._entities[key] = (code, f"{module}:{code.co_qualname}")
            if flags == _WATCHED:
                self._watched.add(key)
            if key not in self._has_local and tool is not None:
                ev = sys.monitoring.events
                sys.monitoring.set_local_events(
                    tool, code, ev.PY_RETURN | ev.PY_YIELD | ev.PY_RESUME
                )
                self._has_local[key] = code
        elif key in self._has_local and tool is not None:
            sys.monitoring.set_local_events(tool, code, 0)
            del self._has_local[key]
        return flags

    # ---- trace blocks ------------------------------------------------------------------

    def trace(
        self, name: str = "trace", *, include_libraries: bool = False
    ) -> contextlib.AbstractContextManager[TraceBlock]:
        """Record every call run inside the block, in all threads, under one span.

        The standard library, Lumin and the kernel machinery (IPython, ipykernel, tornado,
        zmq, asyncio, threading...) are left out; installed libraries too unless
        ``include_libraries=True``. The block is one ``kind="span"`` event named `name`,
        parent of the block's top-level calls, which share its trace id. An exception leaving
        the block is recorded (phase "unhandled") and propagates.
        """
        return self._trace(name, include_libraries)

    @contextlib.contextmanager
    def _trace(self, name: str, include_libraries: bool) -> Iterator[TraceBlock]:
        started_here = self._tool_id is None
        if started_here:
            self.start()
        with self._lock:
            outer = self._blocks[-1] if self._blocks else None
            block = TraceBlock(
                name=name,
                span_id=self._backend.new_span_id().to_bytes(8, "big"),
                trace_id=outer.trace_id if outer else os.urandom(16),
                parent_span_id=outer.span_id if outer else None,
                include_libraries=include_libraries,
                start_ns=time.time_ns(),
            )
            self._blocks.append(block)
            self._activate(block, widen=True)
        t0 = time.perf_counter_ns()
        try:
            yield block
        except BaseException as exc:
            self._unhandled(exc, block)
            raise
        finally:
            duration = time.perf_counter_ns() - t0
            with self._lock:
                self._blocks.remove(block)
                self._activate(self._blocks[-1] if self._blocks else None, widen=False)
            self._n_events += self._events.append(
                "span",
                ts=block.start_ns,
                duration_ns=duration,
                pid=self._pid,
                tid=threading.get_ident(),
                trace_id=block.trace_id,
                span_id=block.span_id,
                parent_span_id=block.parent_span_id,
                entity=name,
            )
            if started_here:
                self.stop()

    def _activate(self, block: TraceBlock | None, *, widen: bool) -> None:
        if block is None:
            self._backend.set_block(0, 0, 0)
        else:
            hi, lo = _split_trace(block.trace_id)
            self._backend.set_block(int.from_bytes(block.span_id, "big"), hi, lo)
        self._new_generation()
        if widen and self._tool_id is not None:
            # code that got DISABLE before the block may be recorded now: let it start again
            sys.monitoring.restart_events()

    # ---- exceptions (slow path: recorded code only) ------------------------------------

    def _on_exception(
        self, code: CodeType, exc: BaseException, phase: int, span: int, hi: int, lo: int
    ) -> None:
        if isinstance(exc, _CONTROL_FLOW):
            return  # how generators and coroutines end, not an error anyone wants to see
        local = self._last_raised
        if phase == 0:
            if getattr(local, "exc", None) is exc:
                return  # the same exception passing through an outer recorded frame
            local.exc = exc
        else:
            local.exc = None
        known = self._entities.get(id(code))
        entity = known[1] if known else self._entity(code)
        phase_name, severity = _PHASES[phase]
        self._append_exception(
            exc, entity, phase_name, severity, span.to_bytes(8, "big"), _join_trace(hi, lo)
        )

    def _unhandled(self, exc: BaseException, block: TraceBlock) -> None:
        try:
            tb = exc.__traceback__
            code = None
            while tb is not None:
                code = tb.tb_frame.f_code
                tb = tb.tb_next
            entity = self._entity(code) if code is not None else block.name
            self._append_exception(
                exc, entity, "unhandled", SEVERITY_ERROR, block.span_id, block.trace_id
            )
        except Exception:
            self._base_counts["handler_errors"] = self._base_counts.get("handler_errors", 0) + 1

    def _entity(self, code: CodeType) -> str:
        return f"{self._modules.module_of(code.co_filename)}:{code.co_qualname}"

    def _append_exception(
        self,
        exc: BaseException,
        entity: str,
        phase: str,
        severity: int,
        span_id: bytes,
        trace_id: bytes,
    ) -> None:
        kind = type(exc).__qualname__
        text = str(exc)
        attrs = {
            "exception.type": kind,
            "exception.message": text,
            "exception.stacktrace": "".join(traceback.format_exception(exc)),
            "phase": phase,
        }
        self._n_events += self._events.append(
            "exception",
            severity=severity,
            pid=self._pid,
            tid=threading.get_ident(),
            trace_id=trace_id,
            span_id=span_id,
            entity=entity,
            message=f"{kind}: {text}" if text else kind,
            attrs=json.dumps(attrs),
        )

    # ---- output ------------------------------------------------------------------------

    def drain(self) -> pa.RecordBatch | None:
        """Return the calls, exceptions and trace() spans recorded since the last drain.

        None when there are none. Call it every ~100 ms from a thread named ``lumin-*`` (never
        traced) so the ring buffer does not overflow; it copies the buffer with the GIL
        released and builds the batch with a few vectorised Arrow operations.
        """
        import pyarrow as pa

        backend = self._backend
        with self._lock:
            batches, self._pending = self._pending, []
            columns = backend.take_columns()
        if columns is not None:
            batches.append(self._calls_batch(columns))
        others = self._events_builder.build() if self._events_builder is not None else None
        if others is not None:
            batches.append(others)
        if not batches:
            return None
        if len(batches) == 1:
            return batches[0]
        table = pa.Table.from_batches(batches).unify_dictionaries().combine_chunks()
        return table.to_batches()[0]

    def wait_for_drain(self, timeout_s: float = 0.1) -> bool:
        """Wait until the buffer is half full or `timeout_s` passed; True when it filled.

        A drain thread loops ``tracer.wait_for_drain(0.1); tracer.drain()`` so it drains
        early when calls come fast. The wait releases the GIL.
        """
        if self._tool_id is None:
            time.sleep(timeout_s)
            return False
        return self._backend.wait_fill(0.5, timeout_s)

    @property
    def _events(self) -> EventBuilder:
        """Exception and span events (rare: built one at a time in an EventBuilder)."""
        if self._events_builder is None:
            from lumin_nb.event import EventBuilder

            self._events_builder = EventBuilder(max_events=self._events_max)
        return self._events_builder

    def _calls_batch(self, columns: Columns) -> pa.RecordBatch:
        """One batch of call events from column buffers: zero copy, a few Arrow operations.

        Every column is handed to `batch_from_columns` already in its schema type (the null
        and constant ones over shared zero buffers), so it has nothing left to convert; on a
        busy program each extra operation would wait for the GIL.
        """
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        from lumin_nb.event import batch_from_columns

        (n, ts, duration, code, span, parent, valid, nulls, trace, tid, eid, flags, active,
         suspensions, flagged) = columns  # fmt: skip
        dict_type = pa.dictionary(pa.int32(), pa.string())
        encoded = pc.dictionary_encode(
            pa.Array.from_buffers(pa.uint64(), n, [None, pa.py_buffer(code)])
        )
        entities = self._entities
        names = [entities[c][1] if c in entities else "?" for c in encoded.dictionary.to_pylist()]
        entity = pa.DictionaryArray.from_arrays(
            encoded.indices.cast(pa.int32()), pa.array(names, pa.string())
        )
        zeros = _zeros(n)
        if flagged:
            attrs = _attrs(
                _numbers(flags, np.uint32),
                _numbers(active, np.int64),
                _numbers(suspensions, np.uint32),
            )
        else:
            attrs = _null_column(pa.string(), n, zeros)
        return batch_from_columns(
            n,
            event_id=_binary(eid, 16, n),
            ts=pa.Array.from_buffers(pa.timestamp("ns", tz="UTC"), n, [None, pa.py_buffer(ts)]),
            duration_ns=pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(duration)]),
            kind=pa.DictionaryArray.from_arrays(_indices(n, zeros), pa.array(["call"])),
            source_type=pa.DictionaryArray.from_arrays(_indices(n, zeros), pa.array(["runtime"])),
            severity=pa.Array.from_buffers(pa.int8(), n, [None, zeros]),
            service=_null_column(dict_type, n, zeros),
            host=_null_column(dict_type, n, zeros),
            pid=pa.Array.from_buffers(pa.int32(), n, [None, self._pid_buffer(n)]),
            tid=pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(tid)]),
            task=_null_column(pa.string(), n, zeros),
            trace_id=_binary(trace, 16, n),
            span_id=_binary(span, 8, n),
            parent_span_id=_binary(parent, 8, n, valid, nulls),
            entity=entity,
            message=_null_column(pa.string(), n, zeros),
            value=_null_column(pa.float64(), n, zeros),
            attrs=attrs,
            producer=_null_column(pa.string(), n, zeros),
            seq=pa.Array.from_buffers(pa.int64(), n, [None, zeros]),
        )

    def _pid_buffer(self, n: int) -> pa.Buffer:
        import numpy as np
        import pyarrow as pa

        cached = self._pids
        if cached is None or len(cached) < n:
            cached = self._pids = np.full(max(n, 1 << 16), self._pid, dtype=np.int32)
        return pa.py_buffer(cached)

    def stats(self) -> dict[str, object]:
        """Return what the tracer did: mode, recorded, dropped (with reasons), patterns."""
        counts = dict(self._base_counts)
        if self._tool_id is not None:
            for key, value in self._backend.counts().items():
                counts[key] = counts.get(key, 0) + value
        reasons = {
            "buffer_full": counts.get("dropped", 0),
            "suspended_table_full": counts.get("suspended_dropped", 0),
            "event_buffer_full": self._events_builder.dropped if self._events_builder else 0,
        }
        return {
            "native": self.is_native,
            "mode": MODE_NATIVE if self.is_native else MODE_PYTHON,
            "running": self._tool_id is not None,
            "clock": "tsc" if counts.get("tsc_clock") else "monotonic",
            "tool_id": self._tool_id,
            "recorded": counts.get("recorded", 0) + self._n_events,
            "dropped": sum(reasons.values()),
            "dropped_reason": reasons,
            "handler_errors": counts.get("handler_errors", 0),
            "starts": counts.get("starts", 0),
            "watched_code_objects": len(self._watched),
            "patterns": list(self._patterns),
        }


def _join_trace(hi: int, lo: int) -> bytes:
    return hi.to_bytes(8, "big") + lo.to_bytes(8, "big")
