"""py-spy on the controller for its whole life (`bench_controller.py --profile`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

PROFILE_RATE = 100
"""py-spy samples per second."""


class Profiler:
    """py-spy attached to a process for its whole life (--profile); collapsed stacks."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        self.proc: subprocess.Popen[bytes] | None = None
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(spy).exists():
            print("  --profile: py-spy not found (pip install py-spy)", flush=True)
            return
        self.proc = subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(pid),
                "--nonblocking",
                "--rate",
                str(PROFILE_RATE),
                "--format",
                "raw",
                "-o",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def finish(self) -> None:
        """Call once the profiled process has exited: py-spy then writes its file."""
        if self.proc is not None:
            self.proc.wait(timeout=60)
            print(f"  profile: {self.out} ({summarize_profile(self.out)})", flush=True)


def summarize_profile(path: Path, top: int = 8) -> str:
    """The functions with the most samples on CPU in them (inclusive), as % of all samples."""
    if not path.exists():
        return "no samples"
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        for frame in {f.split(" (")[0] for f in stack.split(";")}:
            incl[frame] = incl.get(frame, 0) + n
    skip = ("_run", "run", "main", "<module>", "_run_code", "_run_module_as_main", "_run_once")
    ranked = [
        (n, f)
        for f, n in sorted(incl.items(), key=lambda kv: -kv[1])
        if f not in skip and not f.startswith(("BaseEventLoop", "Runner", "Handle", "Engine.run"))
    ]
    return ", ".join(f"{f} {100 * n / total:.0f}%" for n, f in ranked[:top])
