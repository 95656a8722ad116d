"""The demo system: a multi-process shop under observation, with one switchable fault per run.

A load generator sends checkouts to the **gateway** (HTTP), which forwards them to **orders**
(HTTP, an SQLite database), which asks **payments** (HTTP) to charge; a **batch** job
reconciles orders every second and logs. Each is its own process started with `lm.run`, so
their logs, watched calls, threads and metrics land in one store, and every HTTP call
carries W3C ``traceparent``, so one checkout shares a trace id across processes.

Faults (`FAULTS`): ``slow_db``, ``memory_leak``, ``error_burst``, ``n_plus_one``,
``lock_contention``, ``bad_deploy``. `run_system` writes the ground truth of each run
(fault, start, culprit service and function) to ``ground_truth.json`` in the store folder.
``python -m lumin_nb.demo.system SERVICE`` starts one service (what the runner does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lumin_nb.demo.system.faults import CULPRITS, FAULTS, FaultName

if TYPE_CHECKING:
    from lumin_nb.demo.system.runner import GroundTruth, SystemRun, describe, run_system

__all__ = ["CULPRITS", "FAULTS", "FaultName", "GroundTruth", "SystemRun", "describe", "run_system"]


def __getattr__(name: str) -> Any:
    if name in ("GroundTruth", "SystemRun", "describe", "run_system"):
        from lumin_nb.demo.system import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'lumin_nb.demo.system' has no attribute {name!r}")
