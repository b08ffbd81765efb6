"""Job progress as one number: each stage owns a slice of 0-100.

The row's `progress` is what a web app shows as a bar, so it is the whole job's progress,
never a stage's; the stage name says what is happening inside the slice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressState:
    stage: str
    percent: int
    detail: str = ""


class Progress:
    """Thread-safe holder of the latest state; the reporter reads it on its own schedule."""

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._state = ProgressState("starting", 0)
        self._slice = (0.0, 0.0)
        self._on_change = on_change

    @property
    def state(self) -> ProgressState:
        with self._lock:
            return self._state

    def stage(self, name: str, start: float, end: float) -> None:
        """Enter a stage that spans `start`..`end` percent of the job."""
        with self._lock:
            self._slice = (start, end)
            percent = max(self._state.percent, int(start))
            self._state = ProgressState(name, percent)
        self._notify()

    def update(self, fraction: float, detail: str = "") -> None:
        """Report `fraction` (0-1) of the current stage done; the bar never moves backwards."""
        with self._lock:
            start, end = self._slice
            percent = int(start + max(0.0, min(1.0, fraction)) * (end - start))
            percent = max(self._state.percent, min(100, percent))
            self._state = ProgressState(self._state.stage, percent, detail)
        self._notify()

    def finish(self) -> None:
        with self._lock:
            self._state = ProgressState("done", 100)
        self._notify()

    def _notify(self) -> None:
        if self._on_change is not None:
            self._on_change()


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover - the loop always returns
