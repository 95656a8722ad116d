"""Monitored subprocesses: what `lm.run([...], service=...)` and `lumin run` start.

`spawn` starts a program with the auto-start hook in its environment (see `autostart`), so
its agent ships to the observatory's receiver; its children inherit the environment and are
monitored too. `MonitoredProcess` is the handle: pid, its events, stop, wait.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lumin_nb.agent.autostart import environment
from lumin_nb.errors import NotRunningError

if TYPE_CHECKING:
    from lumin_nb.agent.receiver import AgentInfo, Receiver

#: what `MonitoredProcess.events` asks: the observatory's ``events(**filters)``
EventsQuery = Callable[..., Any]


class MonitoredProcess:
    """A program running under Lumin's agent (what `lm.run` returns).

    Attributes: ``pid``, ``service``, ``argv``, ``returncode`` (None while it runs) and
    ``popen`` (the `subprocess.Popen`).
    """

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        *,
        service: str,
        argv: Sequence[str],
        query: EventsQuery | None = None,
        receiver: Receiver | None = None,
    ) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.service = service
        self.argv = list(argv)
        self._query = query
        self._receiver = receiver

    @property
    def returncode(self) -> int | None:
        """The exit code (negative: killed by that signal), None while running."""
        return self.popen.poll()

    @property
    def is_running(self) -> bool:
        """Whether the process still runs."""
        return self.popen.poll() is None

    def events(self, **filters: Any) -> Any:
        """Return the events of this process's service (and children) as a frame.

        Filters are those of `lm.events` (``kind="log"``, ``since="-5m"``); add
        ``pid=p.pid`` for this process alone.
        """
        if self._query is None:
            raise NotRunningError(
                f"this MonitoredProcess (pid {self.pid}) has no observatory to query.\n"
                "Fix: start it with lm.run([...]) in a running observatory, or query the "
                f"observatory directly: lm.events(service={self.service!r})"
            )
        filters.setdefault("service", self.service)
        return self._query(**filters)

    def agents(self) -> list[AgentInfo]:
        """Return the agents of this process and its monitored descendants."""
        if self._receiver is None:
            return []
        mine = [a for a in self._receiver.agents() if a["pid"] == self.pid]
        producers = {a["producer"] for a in mine}
        everyone = self._receiver.agents()
        grew = True
        while grew:
            kids = [
                a
                for a in everyone
                if a["parent_producer"] in producers and a["producer"] not in producers
            ]
            grew = bool(kids)
            mine += kids
            producers |= {a["producer"] for a in kids}
        return mine

    def wait(self, timeout_s: float | None = None) -> int:
        """Wait for the process to end and return its exit code (TimeoutExpired after timeout)."""
        return self.popen.wait(timeout_s)

    def stop(self, timeout_s: float = 5.0) -> int:
        """Ask the process to end (SIGTERM: its agent ships what it holds), kill it after
        `timeout_s`; return the exit code."""
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGTERM)
                return self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.popen.wait()

    def __enter__(self) -> MonitoredProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        code = self.returncode
        state = "running" if code is None else f"exited {code}"
        return f"<lumin MonitoredProcess pid={self.pid} service={self.service!r} {state}>"


def spawn(
    argv: Sequence[str],
    *,
    service: str,
    endpoint: str,
    token: str,
    control_endpoint: str | None = None,
    env: Mapping[str, str] | None = None,
    watch: Sequence[str] = (),
    query: EventsQuery | None = None,
    receiver: Receiver | None = None,
    **popen: Any,
) -> MonitoredProcess:
    """Start `argv` with Lumin's agent shipping to `endpoint`; return its MonitoredProcess.

    Parameters
    ----------
    argv
        The command, e.g. ``["python", "app.py"]``.
    service
        The service name of its events.
    endpoint, token, control_endpoint
        The observatory's receiver (``Receiver.endpoint``, ``.token``, ``.control_endpoint``).
    env
        The child's environment (default: this process's), before Lumin's variables.
    watch
        Call-tracer watch patterns (``LUMIN_WATCH``).
    query, receiver
        What `MonitoredProcess.events` and `.agents` read (the observatory's ``events`` and
        its Receiver).
    **popen
        Passed to `subprocess.Popen` (``cwd``, ``stdout``, ``stdin``...).
    """
    if isinstance(argv, str):
        raise TypeError(
            f"argv={argv!r}: expected a list of arguments. Fix: lm.run(['python', 'app.py'])"
        )
    child_env = environment(
        endpoint=endpoint,
        token=token,
        service=service,
        control_endpoint=control_endpoint,
        watch=watch,
        base=env if env is not None else os.environ,
    )
    proc = subprocess.Popen(list(argv), env=child_env, **popen)
    return MonitoredProcess(proc, service=service, argv=argv, query=query, receiver=receiver)
