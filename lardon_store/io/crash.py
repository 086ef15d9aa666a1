"""Crash points: named places in the writers where the crash tests kill the process.

With ``LARDON_STORE_CRASH_AT=<name>`` in its environment, a process that reaches ``crash_point(<name>)`` sends itself
``SIGKILL``, as a crash or an out-of-memory kill would. Without it, a crash point costs one dictionary look-up.
The names in use: ``before_sync``, ``after_write``, ``before_commit`` (each compile batch), and ``gc_before_sync``,
``gc_after_write``, ``gc_before_commit``, ``gc_after_commit``.
"""

from __future__ import annotations

import os
import signal

__all__ = ["CRASH_ENV", "crash_point"]

CRASH_ENV = "LARDON_STORE_CRASH_AT"


def crash_point(name: str) -> None:
    """Kill this process here if ``LARDON_STORE_CRASH_AT`` names this point."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
