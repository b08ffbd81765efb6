"""One cgroup tree (cgroup v1, every mounted hierarchy) holding everything the real node runs:
containerd, the kubelet and the containerd shims under `host/`, the kubelet's pods under
`pods/` (its `cgroupRoot`). Teardown kills what is left in it by PID and removes it, so no
process or cgroup outlives the node even when the kubelet died before it could clean up."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


class NodeUnavailable(RuntimeError):
    """This machine cannot run the real node; the message says what is missing."""


def hierarchies() -> list[Path]:
    """The mount points of the cgroup v1 hierarchies."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] == "cgroup":
            found.append(Path(left.split()[4]))
    return found


def require_cgroup_v1_memory() -> None:
    if not any((h / "memory.limit_in_bytes").exists() for h in hierarchies()):
        raise NodeUnavailable(
            "the real node needs cgroup v1 with the memory controller mounted under "
            "/sys/fs/cgroup (this machine has none), so memory limits could not be enforced"
        )


@dataclass
class CgroupTree:
    name: str = "audiojob-realnode"

    def paths(self) -> list[Path]:
        return [h / self.name for h in hierarchies()]

    def create(self, *children: str) -> None:
        for path in self.paths():
            for sub in ("", *children):
                d = path / sub if sub else path
                d.mkdir(exist_ok=True)
                if (d / "cpuset.cpus").exists():
                    # A new cpuset cgroup starts empty and takes no task until it has CPUs
                    # and memory nodes; inherit the parent's.
                    for f in ("cpuset.cpus", "cpuset.mems"):
                        if not (d / f).read_text().strip():
                            (d / f).write_text((d.parent / f).read_text())

    def add(self, child: str, pid: int) -> None:
        for path in self.paths():
            (path / child / "cgroup.procs").write_text(str(pid))

    def pids(self) -> set[int]:
        found: set[int] = set()
        for path in self.paths():
            for procs in path.rglob("cgroup.procs") if path.is_dir() else ():
                with contextlib.suppress(OSError):
                    found |= {int(p) for p in procs.read_text().split()}
        return found

    def exists(self) -> bool:
        return any(p.is_dir() for p in self.paths())

    def kill_all(self, timeout: float = 20.0) -> list[str]:
        """SIGKILL every process in the tree until it is empty."""
        deadline = time.monotonic() + timeout
        while pids := self.pids():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                return [f"processes {sorted(pids)} in cgroup {self.name} survived SIGKILL"]
            time.sleep(0.1)
        return []

    def remove(self, timeout: float = 10.0) -> list[str]:
        errors = []
        for path in self.paths():
            if not path.is_dir():
                continue
            # Deepest first; a cgroup whose last task just died can stay busy for a moment.
            dirs = sorted(
                (d for d in path.rglob("*") if d.is_dir()),
                key=lambda d: len(d.parts),
                reverse=True,
            )
            for d in [*dirs, path]:
                deadline = time.monotonic() + timeout
                while d.exists():
                    try:
                        d.rmdir()
                    except OSError as e:
                        if time.monotonic() > deadline:
                            errors.append(f"could not remove cgroup {d}: {e}")
                            break
                        time.sleep(0.1)
        return errors
