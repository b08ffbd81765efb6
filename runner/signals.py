"""SIGTERM: stop the children, give them part of the grace period, then SIGKILL them.

The kubelet sends SIGTERM and, `terminationGracePeriodSeconds` later, SIGKILL to the whole
container. The runner must be gone before that second signal with its termination message
written, so the children get the grace period minus a margin for cleanup.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from runner import procs
from runner.errors import Terminated

log = logging.getLogger(__name__)

DEFAULT_GRACE_SECONDS = 5.0  # the cancel grace (pod terminationGracePeriodSeconds)


def cleanup_margin(grace: float) -> float:
    """Time kept back for removing scratch and writing the termination message."""
    return min(1.5, max(0.3, grace * 0.25))


def install(grace_seconds: float = DEFAULT_GRACE_SECONDS) -> None:
    """Handle SIGTERM (and SIGINT, for people at a terminal) in the main thread."""
    kill_after = max(0.1, grace_seconds - cleanup_margin(grace_seconds))

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if not procs.begin_termination():
            return  # a second signal changes nothing; the first is being handled
        name = signal.Signals(signum).name
        log.warning("%s received: stopping child processes, SIGKILL in %.1f s", name, kill_after)
        procs.signal_all(signal.SIGTERM)
        timer = threading.Timer(kill_after, procs.signal_all, args=(signal.SIGKILL,))
        timer.daemon = True
        timer.start()
        if procs.may_raise_now():
            raise Terminated

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
