"""Child processes, each in a process group of its own, and the state of termination.

Every ffmpeg, ffprobe and yt-dlp process the runner starts goes through `spawn`, so the
SIGTERM handler (runner.signals) can reach all of them, including anything they start
themselves: signals go to the whole group, not only to the pid we know.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from typing import IO, Any

from runner.errors import Terminated

_lock = threading.RLock()
_live: set[subprocess.Popen[bytes]] = set()
_terminating = threading.Event()
_shield_depth = 0


def terminating() -> bool:
    return _terminating.is_set()


def begin_termination() -> bool:
    """Mark the runner as stopping; True the first time only."""
    with _lock:
        first = not _terminating.is_set()
        _terminating.set()
        return first


def checkpoint() -> None:
    """Raise Terminated between steps once SIGTERM has arrived."""
    if _terminating.is_set():
        raise Terminated


def may_raise_now() -> bool:
    """Whether the signal handler may raise Terminated where the main thread stands.

    Not while a child runs (the wait loop notices its exit and raises then), and not inside
    `shielded()` (spawning, cleanup), where an exception could orphan a process or a file.
    """
    with _lock:
        return not _live and _shield_depth == 0


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    global _shield_depth  # noqa: PLW0603 - one process-wide counter read by the signal handler
    with _lock:
        _shield_depth += 1
    try:
        yield
    finally:
        with _lock:
            _shield_depth -= 1


def spawn(
    argv: Sequence[str],
    *,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    stdin: int | IO[Any] | None = subprocess.DEVNULL,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a child in a new session (its own process group) and track it."""
    checkpoint()
    with shielded():
        proc = subprocess.Popen(
            list(argv), stdin=stdin, stdout=stdout, stderr=stderr, env=env, start_new_session=True
        )
        with _lock:
            _live.add(proc)
        # SIGTERM may have arrived between the checkpoint and the registration.
        if _terminating.is_set():
            _signal_group(proc, signal.SIGTERM)
    return proc


def release(proc: subprocess.Popen[bytes]) -> None:
    """Forget a child that has exited; its group is signalled once more in case it left orphans."""
    if proc.returncode is not None:
        _signal_group(proc, signal.SIGKILL)
    with _lock:
        _live.discard(proc)


def kill_if_running(proc: subprocess.Popen[bytes], timeout: float = 2.0) -> None:
    """Used on every exit path of a wait, so an exception never leaves a child running."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)


def signal_all(sig: signal.Signals) -> None:
    with _lock:
        procs = list(_live)
    for proc in procs:
        _signal_group(proc, sig)


def kill_all_and_wait(timeout: float = 2.0) -> None:
    """SIGKILL every group still tracked and reap the leaders, bounded by `timeout`."""
    with _lock:
        procs = list(_live)
    for proc in procs:
        _signal_group(proc, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        with _lock:
            _live.discard(proc)
    # Orphans in those groups are reaped by init; wait until the kernel shows them gone.
    for proc in procs:
        while time.monotonic() < deadline and _group_exists(proc.pid):
            time.sleep(0.02)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # The child leads its own session, so its pid is the group id; a group that is gone
    # (or only zombies awaiting reaping) is fine to signal or miss.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
