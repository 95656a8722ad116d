"""Source: threads, asyncio tasks and subprocesses, as start/end events with parent links.

Installs thin wrappers on `threading.Thread`, `asyncio.BaseEventLoop.create_task` and
`subprocess.Popen` and removes them on `uninstall()` (only where nobody wrapped them after
us). Each start event names its parent (thread ident, task name or pid); each end event
carries the lifetime in `duration_ns` and how it ended; with ``thread_events="end"`` (the
prod profiles) a thread gives only its end event, stamped at its start. Lumin's own threads (named
``lumin-*``) and the kernel's machinery are left out. Wrappers never raise into the program.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final

from lumin_nb.event import SEVERITY_ERROR, SEVERITY_INFO, EventBuilder

_START: Final = ', "phase": "start"}'
_END: Final = ', "phase": "end"}'

#: Coroutines from these packages run the kernel itself; their tasks are not the user's.
_INFRA: Final = ("ipykernel", "tornado", "zmq", "jupyter_client", "IPython", "anyio", "lumin_nb")


def _module_of(obj: object) -> str:
    frame = getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None)
    return str(frame.f_globals.get("__name__", "")) if frame is not None else ""


def _qualname(obj: object) -> str:
    code = getattr(obj, "cr_code", None) or getattr(obj, "gi_code", None)
    if code is not None:
        return f"{_module_of(obj)}:{code.co_qualname}"
    return type(obj).__qualname__


class TaskCollector:
    """Records threads, asyncio tasks and subprocesses into an EventBuilder."""

    def __init__(self, builder: EventBuilder, thread_events: str = "start_end") -> None:
        if thread_events not in ("start_end", "end"):
            raise ValueError(
                f"thread_events={thread_events!r}: expected 'start_end' or 'end'.\n"
                "Fix: TaskCollector(builder, thread_events='end')"
            )
        self.builder = builder
        #: "start_end": a start and an end event per thread; "end": only the end event
        self.thread_events = thread_events
        self.failed = 0
        self._originals: dict[str, tuple[object, str, Any, Any]] = {}
        self._excepthook: Callable[[threading.ExceptHookArgs], Any] | None = None
        self._sys_excepthook: Any = None

    # -- installation ------------------------------------------------------------------
    def install(self) -> None:
        """Wrap the thread, task and subprocess entry points (idempotent)."""
        if self._originals:
            return
        self._wrap(threading.Thread, "start", self._thread_start)
        self._wrap(threading.Thread, "_bootstrap_inner", self._thread_bootstrap)
        self._wrap(asyncio.BaseEventLoop, "create_task", self._create_task)
        self._wrap(subprocess.Popen, "_execute_child", self._execute_child)
        if sys.platform != "win32":
            self._wrap(subprocess.Popen, "_handle_exitstatus", self._handle_exitstatus)
        self._excepthook = threading.excepthook
        threading.excepthook = self._thread_excepthook
        self._sys_excepthook = sys.excepthook
        sys.excepthook = self._sys_excepthook_wrapper

    def uninstall(self) -> None:
        """Restore every wrapped entry point that still holds our wrapper."""
        for owner, name, original, wrapper in self._originals.values():
            if getattr(owner, name, None) is wrapper:
                setattr(owner, name, original)
        self._originals.clear()
        if threading.excepthook == self._thread_excepthook and self._excepthook is not None:
            threading.excepthook = self._excepthook
        if sys.excepthook == self._sys_excepthook_wrapper:
            sys.excepthook = self._sys_excepthook
        self._excepthook = None

    def _wrap(self, owner: object, name: str, factory: Callable[[Any], Any]) -> None:
        original = getattr(owner, name)
        wrapper = factory(original)
        setattr(owner, name, wrapper)
        self._originals[f"{owner!r}.{name}"] = (owner, name, original, wrapper)

    def _emit(self, kind: str, phase: str, **fields: Any) -> None:
        attrs = fields.pop("attrs", {})
        attrs["phase"] = phase
        try:
            self.builder.append(kind, attrs=json.dumps(attrs, default=repr), **fields)
        except Exception:
            self.failed += 1

    def _append(self, kind: str, **fields: Any) -> None:
        """Append an event whose attrs are already JSON; never raise."""
        try:
            self.builder.append(kind, **fields)
        except Exception:
            self.failed += 1

    # -- threads -------------------------------------------------------------------------
    def _thread_start(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def start(thread: threading.Thread, *args: Any, **kwargs: Any) -> Any:
            thread._lumin_parent = threading.get_ident()  # type: ignore[attr-defined]
            return original(thread, *args, **kwargs)

        return start

    def _thread_bootstrap(self, original: Callable[..., Any]) -> Callable[..., Any]:
        collector = self

        def _bootstrap_inner(thread: threading.Thread) -> Any:
            name = thread.name
            if name.startswith("lumin-"):
                return original(thread)
            start = time.time_ns()
            # ident is set inside original; threading.get_ident() is already ours here
            tid = threading.get_ident()
            try:
                target = getattr(thread, "_target", None)
                # the attrs never change over the thread's life: encode them once
                attrs = json.dumps(
                    {
                        "thread.name": name,
                        "parent_tid": getattr(thread, "_lumin_parent", None),
                        "daemon": thread.daemon,
                        "target": getattr(target, "__qualname__", None) if target else None,
                    },
                    default=repr,
                )[:-1]
            except Exception:
                collector.failed += 1
                return original(thread)
            only_end = collector.thread_events == "end"
            if not only_end:
                collector._append("thread", ts=start, tid=tid, entity=name, attrs=attrs + _START)
            try:
                return original(thread)
            finally:
                end = time.time_ns()
                collector._append(
                    "thread",
                    ts=start if only_end else end,
                    duration_ns=end - start,
                    tid=tid,
                    entity=name,
                    attrs=attrs + _END,
                )

        return _bootstrap_inner

    def _thread_excepthook(self, args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None and args.exc_type is not SystemExit:
            self.record_exception(
                args.exc_value, "unhandled", tid=args.thread.ident if args.thread else None
            )
        if self._excepthook is not None:
            self._excepthook(args)

    def _sys_excepthook_wrapper(
        self, exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        self.record_exception(exc, "unhandled")
        if self._sys_excepthook is not None:
            self._sys_excepthook(exc_type, exc, tb)

    def record_exception(
        self,
        exc: BaseException,
        phase: str,
        *,
        tid: int | None = None,
        span_id: bytes | None = None,
        trace_id: bytes | None = None,
        entity: str | None = None,
    ) -> None:
        """Record an exception event (phase "unhandled" when nothing caught it)."""
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if entity is None and tb is not None:
            code = tb.tb_frame.f_code
            entity = f"{tb.tb_frame.f_globals.get('__name__', '?')}:{code.co_qualname}"
        self._emit(
            "exception",
            phase,
            severity=SEVERITY_ERROR,
            tid=tid if tid is not None else threading.get_ident(),
            span_id=span_id,
            trace_id=trace_id,
            entity=entity,
            message=f"{type(exc).__qualname__}: {exc}",
            attrs={
                "exception.type": type(exc).__qualname__,
                "exception.message": str(exc),
                "exception.stacktrace": "".join(traceback.format_exception(exc)),
            },
        )

    # -- asyncio tasks -----------------------------------------------------------------
    def _create_task(self, original: Callable[..., Any]) -> Callable[..., Any]:
        collector = self

        def create_task(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
            task = original(loop, coro, **kwargs)
            try:
                if not _module_of(coro).startswith(_INFRA):
                    collector._task_started(task, coro)
            except Exception:
                collector.failed += 1
            return task

        return create_task

    def _task_started(self, task: asyncio.Task[Any], coro: object) -> None:
        try:
            parent = asyncio.current_task()
        except RuntimeError:
            parent = None
        start = time.time_ns()
        name = task.get_name()
        attrs: dict[str, Any] = {
            "coro": _qualname(coro),
            "parent_task": parent.get_name() if parent is not None else None,
        }
        self._emit("task", "start", ts=start, task=name, entity=attrs["coro"], attrs=attrs)

        def done(t: asyncio.Task[Any]) -> None:
            end = time.time_ns()
            fields: dict[str, Any] = {**attrs}
            severity = SEVERITY_INFO
            if t.cancelled():
                fields["status"] = "cancelled"
            elif t.exception() is not None:
                exc = t.exception()
                fields["status"] = "error"
                fields["exception.type"] = type(exc).__qualname__
                fields["exception.message"] = str(exc)
                severity = SEVERITY_ERROR
            else:
                fields["status"] = "ok"
            self._emit(
                "task",
                "end",
                ts=end,
                duration_ns=end - start,
                severity=severity,
                task=name,
                entity=attrs["coro"],
                attrs=fields,
            )

        task.add_done_callback(done)

    # -- subprocesses ------------------------------------------------------------------
    def _execute_child(self, original: Callable[..., Any]) -> Callable[..., Any]:
        collector = self

        def _execute_child(popen: subprocess.Popen[Any], args: Any, *rest: Any) -> Any:
            result = original(popen, args, *rest)
            try:
                argv = [os.fsdecode(a) for a in args] if isinstance(args, list | tuple) else args
                command = argv if isinstance(argv, list) else [os.fsdecode(argv)]
                popen._lumin = (time.time_ns(), command)  # type: ignore[attr-defined]
                collector._emit(
                    "process",
                    "start",
                    entity=os.path.basename(str(command[0])) if command else "?",
                    attrs={
                        "child_pid": popen.pid,
                        "parent_pid": os.getpid(),
                        "process.command_line": " ".join(map(str, command)),
                    },
                )
            except Exception:
                collector.failed += 1
            return result

        return _execute_child

    def _handle_exitstatus(self, original: Callable[..., Any]) -> Callable[..., Any]:
        collector = self

        def _handle_exitstatus(popen: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> Any:
            result = original(popen, *args, **kwargs)
            info = getattr(popen, "_lumin", None)
            if info is not None:
                popen._lumin = None  # type: ignore[attr-defined]
                start, command = info
                end = time.time_ns()
                code = popen.returncode
                collector._emit(
                    "process",
                    "end",
                    ts=end,
                    duration_ns=end - start,
                    severity=SEVERITY_ERROR if code else SEVERITY_INFO,
                    entity=os.path.basename(str(command[0])) if command else "?",
                    value=float(code) if code is not None else None,
                    attrs={"child_pid": popen.pid, "parent_pid": os.getpid(), "returncode": code},
                )
            return result

        return _handle_exitstatus
