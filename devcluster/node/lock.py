"""One real node per machine: an exclusive lock on a file in the cache, held while a node (or
its containerd alone) runs. Re-entrant within a process, so a test can hold it around a node's
whole life (to compare the machine before and after without another process's node in between)
while the node takes it too."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from devcluster.node.cgroups import NodeUnavailable


class MachineLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None
        self._depth = 0

    def acquire(self, timeout: float) -> None:
        if self._depth == 0:
            self._file = self._wait(timeout)
        self._depth += 1

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0 and self._file is not None:
            self._file.truncate(0)
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    @contextlib.contextmanager
    def held(self, timeout: float = 600.0) -> Iterator[None]:
        self.acquire(timeout)
        try:
            yield
        finally:
            self.release()

    def _wait(self, timeout: float) -> IO[str]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = self.path.open("a+")
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    f.close()
                    holder = self.path.read_text().strip() or "another process"
                    raise NodeUnavailable(
                        f"another real node is running on this machine ({holder} holds "
                        f"{self.path}) and only one kubelet can run at a time"
                    ) from None
                time.sleep(1)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        return f
