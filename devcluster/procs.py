"""Processes the dev tools start: wait while they run, stop them by process group, and tell
whether a recorded PID is still alive."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def wait_while_running(
    predicate: Callable[[], object],
    what: str,
    *,
    procs: dict[str, subprocess.Popen[bytes]],
    log: Callable[[str], Path],
    timeout: float,
) -> None:
    """Poll `predicate` until it is truthy; fail at once, with the tail of its log, when one
    of `procs` exits meanwhile, and after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                tail = log(name).read_text(errors="replace")[-3000:]
                raise RuntimeError(
                    f"{name} exited with {proc.returncode} while waiting for {what}:\n{tail}"
                )
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def terminate(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def kill_pids(pids: dict[str, int], timeout: float = 10.0) -> list[str]:
    """Stop processes recorded by another Python process (the `down` command); returns the
    names of any that were still alive after SIGKILL (should be none)."""
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids.values()):
        time.sleep(0.1)
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    time.sleep(0.2)
    return [n for n, p in pids.items() if pid_alive(p)]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return False
    return True
