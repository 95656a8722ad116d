"""IPython integration: ``%load_ext lumin``, the ``%lumin`` line magic, ``%%lumin_trace``.

Loading starts the observatory (profile from ``LUMIN_PROFILE``, default "dev") and records
every cell that ends in an exception as an `exception` event (phase "unhandled"). The magics
are thin layers over the public API.
"""

from __future__ import annotations

import shlex
from typing import Any

import lumin_nb as lm

_USAGE = """\
%lumin status                 collectors, events/s, dropped, store
%lumin sql SELECT ...         DuckDB SQL over the view `events`
%lumin watch PATTERN ...      trace calls of matching modules ("mypkg.*", "app.db:query")
%lumin unwatch [PATTERN ...]  stop tracing
%lumin history                domain events (sessions, config changes)
%lumin start [PROFILE]        start again after %lumin stop
%lumin stop                   stop collecting and close the store
%%lumin_trace [NAME]          (cell magic) trace every call the cell makes"""

_state: dict[str, Any] = {}


def load(ipython: Any) -> None:
    """Start the observatory (unless one runs) and register magics and the error hook."""
    from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

    if lm._current is None or not lm._current.is_running:
        obs = lm.start()
        print(
            f"Lumin {lm.__version__} observing this kernel: profile {obs.config.profile!r}, "
            f"store {obs.store.path}. Try lm.status(), lm.watch('mypkg.*'), %%lumin_trace."
        )

    @magics_class
    class LuminMagics(Magics):
        @line_magic
        def lumin(self, line: str) -> Any:
            """Lumin commands; `%lumin` alone lists them."""
            return _line(line)

        @cell_magic
        def lumin_trace(self, line: str, cell: str) -> Any:
            """Trace every call this cell makes (stdlib excluded); `%%lumin_trace NAME`."""
            count = getattr(self.shell, "execution_count", 0)
            name = line.strip() or f"cell[{count}]"
            obs = lm._running()
            shell = self.shell
            assert shell is not None, "a cell magic always runs in a shell"
            _state["in_traced_cell"] = True
            try:
                with obs.trace(name) as block:
                    result = shell.run_cell(cell, store_history=False)  # type: ignore[no-untyped-call]
                    error = result.error_in_exec
                    if error is not None and obs.tasks is not None:
                        obs.tasks.record_exception(
                            error, "unhandled", span_id=block.span_id, trace_id=block.trace_id
                        )
            finally:
                _state["in_traced_cell"] = False
            return None

    ipython.register_magics(LuminMagics)
    if "post_run_cell" not in _state:
        _state["post_run_cell"] = _post_run_cell
        ipython.events.register("post_run_cell", _post_run_cell)


def unload(ipython: Any) -> None:
    """Stop the observatory and remove the error hook."""
    hook = _state.pop("post_run_cell", None)
    if hook is not None:
        ipython.events.unregister("post_run_cell", hook)
    lm.stop()


def _post_run_cell(result: Any) -> None:
    error = getattr(result, "error_in_exec", None)
    obs = lm._current
    if error is None or obs is None or not obs.is_running or _state.get("in_traced_cell"):
        return
    obs.record_exception(error, "unhandled")


def _line(line: str) -> Any:
    words = line.strip().split(None, 1)
    if not words:
        print(_USAGE)
        return None
    command, rest = words[0], (words[1] if len(words) > 1 else "")
    if command == "status":
        return lm.status()
    if command == "sql":
        return lm.sql(rest)
    if command == "watch":
        return lm.watch(*shlex.split(rest))
    if command == "unwatch":
        return lm.unwatch(*shlex.split(rest))
    if command == "history":
        return lm.history()
    if command == "stop":
        lm.stop()
        return None
    if command == "start":
        return lm.start(rest.strip() or None)
    from lumin_nb.errors import LuminError, closest

    commands = ["status", "sql", "watch", "unwatch", "history", "start", "stop"]
    raise LuminError(
        f"%lumin {command!r} is not a Lumin command.{closest(command, commands)}\n{_USAGE}"
    )
