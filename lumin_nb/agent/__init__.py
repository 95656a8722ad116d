"""Agents: monitored processes ship their events to the observatory over ZeroMQ.

Inside a monitored process `start` (or the auto-start hook, ``LUMIN_ENDPOINT``) runs an
`Agent`; in the observatory a `Receiver` stores what agents send; `spawn` starts a program
as a `MonitoredProcess`. Names load on first use, so importing this package stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lumin_nb.agent.agent import Agent, current, start, stop
    from lumin_nb.agent.process import MonitoredProcess, spawn
    from lumin_nb.agent.receiver import AgentInfo, ControlError, Receiver, start_receiver
    from lumin_nb.agent.wire import WireError

__all__ = [
    "Agent",
    "AgentInfo",
    "ControlError",
    "MonitoredProcess",
    "Receiver",
    "WireError",
    "current",
    "spawn",
    "start",
    "start_receiver",
    "stop",
]

_WHERE = {
    "Agent": "agent",
    "current": "agent",
    "start": "agent",
    "stop": "agent",
    "MonitoredProcess": "process",
    "spawn": "process",
    "AgentInfo": "receiver",
    "ControlError": "receiver",
    "Receiver": "receiver",
    "start_receiver": "receiver",
    "WireError": "wire",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'lumin_nb.agent' has no attribute {name!r}")
    return getattr(importlib.import_module(f"lumin_nb.agent.{module}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
