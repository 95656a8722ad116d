"""The auto-start hook's payload: start this process's agent from the ``LUMIN_*`` environment.

Imported by the generated ``sitecustomize`` (see `lumin_nb.agent.autostart`) only when
``LUMIN_ENDPOINT`` is set. It never raises into the program: a failure is one line on stderr
and the program runs unobserved.
"""

from __future__ import annotations

import os
import sys


def _start() -> None:
    try:
        from lumin_nb.agent.agent import start
        from lumin_nb.agent.autostart import ENV_ENDPOINT

        if os.environ.get(ENV_ENDPOINT):
            start(handle_sigterm=True)
    except Exception as exc:
        print(f"lumin: the agent did not start ({exc!r}); running unobserved", file=sys.stderr)


_start()
